package totem_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// refusalLog keeps the error records of nodes refusing a node of another
// protocol version, each as "<node> refuses <peer> at <peer_protocol>".
type refusalLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *refusalLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(slices.Values(l.lines))
}

// refusalHandler is the slog.Handler feeding a refusalLog (the node id
// comes from the harness's Logger.With("node", id)).
type refusalHandler struct {
	log   *refusalLog
	attrs []slog.Attr
}

func (h refusalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h refusalHandler) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level != slog.LevelError || !strings.HasPrefix(rec.Message, "refusing a node of another totem protocol version") {
		return nil
	}
	v := map[string]string{}
	for _, a := range h.attrs {
		v[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		v[a.Key] = a.Value.String()
		return true
	})
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	h.log.lines = append(h.log.lines, fmt.Sprintf("%s refuses %s at %s", v["node"], v["peer"], v["peer_protocol"]))
	return nil
}

func (h refusalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return refusalHandler{log: h.log, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h refusalHandler) WithGroup(string) slog.Handler { return h }

// TestOtherProtocolVersionRefused: a node whose heartbeats say another
// totem protocol version (first none at all, as every build before the
// version was carried; then a newer one) never enters the others' view,
// even as the lowest node id (the coordinator) and even when it proposes
// them a view; the others keep their ring, list it in their status, and
// log the refusal once per node and version. Started again with this
// build's version, it joins them.
//
// Without the check in onHeartbeat node 1 joins 2 and 3 in one ring
// (WaitView([2 3]) fails, 1 is a member); without the one in onMemb the
// forged proposal makes 2 and 3 leave their ring.
func TestOtherProtocolVersionRefused(t *testing.T) {
	var mu sync.Mutex
	announce := map[int]uint32{1: 0} // node 1: a build before the version was carried
	rl := &refusalLog{}
	c := harness.New(t, harness.Options{N: 3, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond,
		Logger: slog.New(refusalHandler{log: rl}),
		Adjust: func(id int, cfg *totem.Config) {
			mu.Lock()
			defer mu.Unlock()
			if v, ok := announce[id]; ok {
				totem.Announce(cfg, v)
			}
		}})
	ring := c.WaitView([]int{2, 3}, 10*time.Second)
	c.WaitView([]int{1}, 10*time.Second) // alone: 2 and 3 do not hear it

	// holds checks, for a while, that 2 and 3 stay in ring with nobody
	// else reachable, and that their status lists node 1 at version v.
	holds := func(v uint32) {
		t.Helper()
		want := []totem.RefusedPeer{{Node: 1, Protocol: v}}
		listed := false
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			got, err := c.ViewOf([]int{2, 3})
			if err != nil || got != ring {
				t.Fatalf("nodes 2 and 3 left ring %s (node 1 at protocol %d): now %s, %v", ring, v, got, err)
			}
			for _, id := range []int{2, 3} {
				st := c.Node(id).Totem.Status()
				if slices.Contains(st.Reachable, 1) {
					t.Fatalf("node %d counts node 1 (protocol %d) reachable: %v", id, v, st.Reachable)
				}
				listed = listed || (id == 3 && slices.Equal(st.Refused, want))
			}
		}
		if !listed {
			t.Fatalf("node 3's status never listed node 1 refused at protocol %d", v)
		}
	}

	// A build that hears them proposes them a view, as its lowest node.
	obs := c.Client(2)
	if err := obs.Publish(c.Subjects.TotemMemb(), []byte(`{"type":"propose","from":1,"pid":{"node":1,"n":1000},"members":[1,2,3]}`)); err != nil {
		t.Fatal(err)
	}
	holds(0)

	// A newer build.
	c.Kill(1)
	mu.Lock()
	announce[1] = totem.ProtocolVersion + 1
	mu.Unlock()
	c.Start(1)
	holds(totem.ProtocolVersion + 1)

	want := []string{
		fmt.Sprintf("2 refuses 1 at %d", 0), fmt.Sprintf("2 refuses 1 at %d", totem.ProtocolVersion+1),
		fmt.Sprintf("3 refuses 1 at %d", 0), fmt.Sprintf("3 refuses 1 at %d", totem.ProtocolVersion+1),
	}
	if got := rl.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("refusals logged %q, want each once: %q", got, want)
	}

	// Upgraded: node 1 joins, and is refused no more.
	c.Kill(1)
	mu.Lock()
	delete(announce, 1)
	mu.Unlock()
	c.Start(1)
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	for _, id := range []int{2, 3} {
		if st := c.Node(id).Totem.Status(); len(st.Refused) != 0 {
			t.Fatalf("node %d still refuses %v after node 1's upgrade", id, st.Refused)
		}
	}
}
