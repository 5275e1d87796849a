package cpg_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/totem/harness"
	"github.com/corobus/corobus/cpg"
	cpgsvc "github.com/corobus/corobus/services/cpg"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// startNodes runs n totem nodes in this process, each with its sync
// engine and its cpg service.
func startNodes(t *testing.T, n int) *harness.Cluster {
	t.Helper()
	h := harness.New(t, harness.Options{N: n, Token: time.Second, Join: 30 * time.Millisecond, Consensus: 1200 * time.Millisecond})
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	h.WaitView(ids, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2*n)
	t.Cleanup(func() {
		cancel()
		for range 2 * n {
			<-done
		}
	})
	for id := 1; id <= n; id++ {
		e := syncsvc.New(h.Client(id), syncsvc.Options{Node: uint32(id), Subjects: h.Subjects})
		go func() { _ = e.Run(ctx); done <- struct{}{} }()
		svc := cpgsvc.New(cpgsvc.Options{Node: uint32(id), Subjects: h.Subjects})
		nc := h.Client(id)
		go func() { _ = cpgsvc.ServeWith(ctx, nc, h.Subjects, uint32(id), svc, nil); done <- struct{}{} }()
	}
	return h
}

func connect(t *testing.T, h *harness.Cluster, node int, pid uint32) *cpg.Handle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cpg.Connect(ctx, h.Client(node), cpg.Options{Subjects: h.Subjects, Node: uint32(node), PID: pid})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next waits for the next event of a kind.
func next(t *testing.T, h *cpg.Handle, kind cpg.EventKind) cpg.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-h.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event of kind %d", kind)
		}
	}
}

// Go members on two nodes: joins, messages in one order for both,
// membership, iteration, a message larger than one request (sent in
// fragments), and a member that closes leaving with PROCDOWN.
func TestGoMembers(t *testing.T) {
	h := startNodes(t, 2)
	ctx := context.Background()
	a, b := connect(t, h, 1, 100), connect(t, h, 2, 200)
	if err := a.Mcast(ctx, []byte("early")); !errors.Is(err, cpg.ErrNotExist) {
		t.Errorf("multicast before a join: %v, want ErrNotExist", err)
	}
	if err := a.Join(ctx, "go"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, a, cpg.ConfChg); len(ev.Joined) != 1 || ev.Joined[0].PID != 100 {
		t.Fatalf("a's join: %+v", ev)
	}
	if err := a.Join(ctx, "go"); !errors.Is(err, cpg.ErrExist) {
		t.Errorf("join twice: %v, want ErrExist", err)
	}
	if err := b.Join(ctx, "go"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*cpg.Handle{a, b} {
		for {
			ev := next(t, c, cpg.ConfChg)
			if len(ev.Members) == 2 {
				break
			}
		}
	}
	big := bytes.Repeat([]byte("x"), cpg.MaxAtomicMsgSize*2+17)
	got := map[*cpg.Handle][]string{}
	deliver := func(c *cpg.Handle) {
		ev := next(t, c, cpg.Deliver)
		got[c] = append(got[c], fmt.Sprintf("%d/%d %d", ev.From.NodeID, ev.From.PID, len(ev.Data)))
	}
	var want []string
	for i := range 20 {
		from := a
		if i%2 == 1 {
			from = b
		}
		data := []byte(fmt.Sprintf("m%d", i))
		if i == 7 {
			data = big
		}
		// Once the big message is back, more than 1 MiB of callbacks wait
		// unread and Mcast answers TRY_AGAIN: a libcpg program dispatches
		// and tries again, and so does this one.
		for {
			err := from.Mcast(ctx, data)
			if err == nil {
				break
			}
			if !errors.Is(err, cpg.ErrTryAgain) {
				t.Fatal(err)
			}
			deliver(from)
		}
		want = append(want, fmt.Sprintf("%d/%d %d", from.Node(), from.PID(), len(data)))
	}
	for _, c := range []*cpg.Handle{a, b} {
		for len(got[c]) < len(want) {
			deliver(c)
		}
	}
	if !slices.Equal(got[a], got[b]) {
		t.Errorf("different orders:\n%v\n%v", got[a], got[b])
	}
	// Each sender's messages in its own order.
	for _, c := range []*cpg.Handle{a, b} {
		var mine, sent []string
		for i, w := range want {
			if (i%2 == 0) == (c == a) {
				sent = append(sent, w)
			}
		}
		for _, g := range got[a] {
			if slices.Contains(sent, g) {
				mine = append(mine, g)
			}
		}
		if !slices.Equal(mine, sent) {
			t.Errorf("%d/%d's messages delivered as %v, sent as %v", c.Node(), c.PID(), mine, sent)
		}
	}
	m, err := a.Members(ctx, "go")
	if err != nil || len(m) != 2 || m[0] != (cpg.Address{NodeID: 1, PID: 100}) || m[1] != (cpg.Address{NodeID: 2, PID: 200}) {
		t.Errorf("members %v %v", m, err)
	}
	if n, err := b.LocalNode(ctx); err != nil || n != 2 {
		t.Errorf("local node %d %v", n, err)
	}
	if p, err := a.Processes(ctx); err != nil || len(p) != 2 {
		t.Errorf("processes %v %v", p, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ev := next(t, a, cpg.ConfChg)
	if len(ev.Left) != 1 || ev.Left[0].PID != 200 || ev.Left[0].Reason != cpg.ReasonProcDown {
		t.Errorf("b's close: %+v", ev)
	}
}
