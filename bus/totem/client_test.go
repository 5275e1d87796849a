package totem_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// recorder keeps what a client's OnDeliver received.
type recorder struct {
	mu  sync.Mutex
	got []totem.Delivery
}

func (r *recorder) on(d totem.Delivery) {
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []totem.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client receives its own service's messages only, with the node's
// configuration changes in their place among them, and its window drains
// for the services it multicasts on without receiving them.
func TestClientReceivesItsServiceOnly(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	var a, b recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a.on})
	cb := newClient(t, c, 2, totem.ClientOptions{Window: 4, Service: "beta", OnDeliver: b.on})
	ctx := context.Background()
	for i := range 20 {
		if _, err := ca.Mcast(ctx, "alpha", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		// Window 4: these only pass if the silent subscription to
		// "gamma" gives the slots back.
		if _, err := cb.Mcast(ctx, "gamma", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := cb.Mcast(ctx, "beta", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(r *recorder, svc string) (n int) {
		for _, d := range r.snapshot() {
			if d.Message != nil {
				if d.Message.Service != svc {
					t.Errorf("a %s client received a %s message", svc, d.Message.Service)
				}
				n++
			}
		}
		return n
	}
	waitFor(t, "every message", func() bool { return count(&a, "alpha") == 20 && count(&b, "beta") == 20 })
	waitFor(t, "an empty window", func() bool { return cb.InFlight() == 0 })

	// A view change comes in order: the old ring's messages, the
	// transitional then the regular configuration, then the new ring's.
	c.Kill(2)
	ring := c.WaitView([]int{1}, 10*time.Second)
	if _, err := ca.Mcast(ctx, "alpha", []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message after the view change", func() bool { return count(&a, "alpha") == 21 })
	var kinds []string
	for _, d := range a.snapshot() {
		switch {
		case d.ConfChg != nil:
			kinds = append(kinds, d.ConfChg.Type.String())
			if d.ConfChg.Type == totem.Regular && d.ConfChg.Ring != ring {
				t.Errorf("regular configuration of ring %s, want %s", d.ConfChg.Ring, ring)
			}
		case string(d.Message.Payload) == "after":
			kinds = append(kinds, "after")
			if d.Message.Ring != ring {
				t.Errorf("the last message was delivered in ring %s, want %s", d.Message.Ring, ring)
			}
		}
	}
	if want := []string{"transitional", "regular", "after"}; !slices.Equal(kinds[len(kinds)-3:], want) {
		t.Errorf("deliveries end with %v, want %v", kinds, want)
	}
}

// A node alone in its ring orders and delivers without publishing data
// frames or order records (nobody reads them); in a ring of two it
// publishes both again.
func TestAloneInItsRingPublishesNoFrames(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	c.Partition([]int{1}, []int{2})
	c.WaitView([]int{1}, 10*time.Second)
	// Frames on the data and order subjects, as node 1's server sees them.
	var mu sync.Mutex
	frames := map[string]int{}
	watch := c.Client(1)
	for _, subj := range []string{c.Subjects.TotemData(), c.Subjects.TotemOrder()} {
		sub, err := watch.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			frames[m.Subject]++
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	count := func() (data, order int) {
		mu.Lock()
		defer mu.Unlock()
		return frames[c.Subjects.TotemData()], frames[c.Subjects.TotemOrder()]
	}
	var a recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a.on})
	delivered := func() (n int) {
		for _, d := range a.snapshot() {
			if d.Message != nil {
				n++
			}
		}
		return n
	}
	ctx := context.Background()
	for i := range 50 {
		if _, err := ca.Mcast(ctx, "alpha", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "50 messages alone", func() bool { return delivered() == 50 })
	// The watcher's connection is ordered after the deliveries it saw:
	// a round trip flushes what the server had for it.
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	if d, o := count(); d != 0 || o != 0 {
		t.Errorf("alone in its ring, node 1 published %d data frames and %d order records", d, o)
	}
	c.Heal()
	c.WaitView([]int{1, 2}, 10*time.Second)
	if _, err := ca.Mcast(ctx, "alpha", []byte("two")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message in the ring of two", func() bool { return delivered() == 51 })
	waitFor(t, "its data frame and order record", func() bool { d, o := count(); return d > 0 && o > 0 })
}

// A KeepOwn client's large multicasts come back to it without their
// payload while it is the only client that named its service to its node
// (the frame says so, KeptHeader), and it delivers them whole from what it
// kept; the other nodes get them whole; small ones and, once a second
// client names the service, large ones too travel whole again.
func TestKeptOwnMessagesComeBackWithoutPayload(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	// Node 1's deliver frames of alpha as its server publishes them (a
	// subscriber that does not name the service to the bus).
	var mu sync.Mutex
	var kept, whole int
	watch := c.Client(1)
	sub, err := watch.Subscribe(c.Subjects.TotemDeliver(1, "alpha"), func(m *nats.Msg) {
		msg, err := totem.ParseDeliver("alpha", m.Data)
		if err != nil || msg.ID.Node == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if m.Header.Get(totem.KeptHeader) != "" {
			kept++
			if len(msg.Payload) != 0 {
				t.Errorf("a kept frame carries %d bytes", len(msg.Payload))
			}
		} else {
			whole++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	frames := func() (int, int) { mu.Lock(); defer mu.Unlock(); return kept, whole }
	var a, b, a2 recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a.on, KeepOwn: true})
	newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b.on})
	payload := func(i int) []byte {
		n := 16 << 10
		if i%5 == 4 {
			n = 100 // below what a client keeps
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i + j)
		}
		return p
	}
	messages := func(r *recorder) (out [][]byte) {
		for _, d := range r.snapshot() {
			if d.Message != nil && d.Message.ID.Origin == ca.Origin() {
				out = append(out, d.Message.Payload)
			}
		}
		return out
	}
	same := func(who string, r *recorder, from, to int) {
		t.Helper()
		got := messages(r)
		if len(got) < to {
			t.Fatalf("%s received %d messages, want %d", who, len(got), to)
		}
		for i := from; i < to; i++ {
			if !slices.Equal(got[i], payload(i)) {
				t.Errorf("%s: message %d has %d bytes, not the %d sent", who, i, len(got[i]), len(payload(i)))
			}
		}
	}
	ctx := context.Background()
	for i := range 20 {
		if _, err := ca.Mcast(ctx, "alpha", payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "20 messages back and on node 2", func() bool { return len(messages(&a)) == 20 && len(messages(&b)) == 20 })
	same("the sender", &a, 0, 20)
	same("node 2", &b, 0, 20)
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	if k, w := frames(); k != 16 || w != 4 {
		t.Errorf("node 1 published %d kept and %d whole frames, want 16 and 4", k, w)
	}
	// A second client of alpha on node 1: it needs the payloads too.
	ca2 := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a2.on})
	for i := 20; i < 30; i++ {
		if _, err := ca.Mcast(ctx, "alpha", payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "30 messages back", func() bool { return len(messages(&a)) == 30 && len(messages(&b)) == 30 })
	same("the sender", &a, 20, 30)
	same("node 2", &b, 20, 30)
	got := messages(&a2)
	if len(got) != 10 {
		t.Fatalf("the second client of node 1 received %d messages, want 10", len(got))
	}
	for i, p := range got {
		if !slices.Equal(p, payload(20+i)) {
			t.Errorf("the second client: message %d has %d bytes, not the %d sent", 20+i, len(p), len(payload(20+i)))
		}
	}
	if k, w := frames(); k != 16 || w != 14 {
		t.Errorf("with two clients node 1 published %d kept and %d whole frames in all, want 16 and 14", k, w)
	}
	// The second client closes: the sender's large messages come back
	// kept again, once the bus has its leave request.
	ca2.Close()
	n := 30
	for deadline := time.Now().Add(20 * time.Second); ; n++ {
		if _, err := ca.Mcast(ctx, "alpha", payload(n)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the message back", func() bool { return len(messages(&a)) == n+1 })
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		if k, _ := frames(); k > 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no kept frame after the second client closed")
		}
	}
	waitFor(t, "every message on node 2", func() bool { return len(messages(&b)) == n+1 })
	same("the sender", &a, 30, n+1)
	same("node 2", &b, 30, n+1)
	waitFor(t, "an empty window", func() bool { return ca.InFlight() == 0 })
}

// A client that skips droppable payloads (SkipPayloads) receives other
// nodes' droppable messages without their payload (Skipped), in their
// place in the order, while every client of its service on its node
// skips; everything else — plain messages, droppable ones too small to
// skip, its own node's, and droppable ones once it asks for payloads
// again or another client there wants them — comes whole.
func TestSkippedPayloads(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	var a, b, b2 recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a.on})
	cb := newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b.on})
	if err := cb.SkipPayloads(true, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	payload := func(i int) []byte {
		n := 8 << 10
		if i%4 == 2 {
			n = 100 // below what a client makes droppable
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i + j)
		}
		return p
	}
	ctx := context.Background()
	send := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			mc := ca.McastParts
			if i%2 == 0 {
				mc = func(ctx context.Context, service string, head, tail []byte) (totem.MsgID, error) {
					return ca.McastPartsDroppable(ctx, service, 7, head, tail)
				}
			}
			if _, err := mc(ctx, "alpha", payload(i)[:1], payload(i)[1:]); err != nil {
				t.Fatal(err)
			}
		}
	}
	messages := func(r *recorder) (out []*totem.Message) {
		for _, d := range r.snapshot() {
			if d.Message != nil {
				out = append(out, d.Message)
			}
		}
		return out
	}
	// check: messages from..to of r, in order, each whole or, when
	// skipped says so, without its payload.
	check := func(who string, r *recorder, from, to int, skipped func(i int) bool) {
		t.Helper()
		waitFor(t, who+"'s messages", func() bool { return len(messages(r)) >= to })
		got := messages(r)
		for i := from; i < to; i++ {
			m := got[i]
			if m.ID.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d is %v, out of order", who, i, m.ID)
			}
			switch {
			case skipped(i) && (!m.Skipped || m.Payload != nil):
				t.Errorf("%s: message %d came with %d bytes (skipped %v), want it without", who, i, len(m.Payload), m.Skipped)
			case !skipped(i) && (m.Skipped || !slices.Equal(m.Payload, payload(i))):
				t.Errorf("%s: message %d came with %d of its %d bytes (skipped %v), want it whole", who, i, len(m.Payload), len(payload(i)), m.Skipped)
			}
		}
	}
	never := func(int) bool { return false }
	send(0, 10)
	check("the sender", &a, 0, 10, never)
	check("node 2", &b, 0, 10, func(i int) bool { return i%4 == 0 })
	// A second client of alpha on node 2 that wants the payloads: whole.
	cb2 := newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b2.on})
	send(10, 20)
	check("node 2", &b, 10, 20, never)
	cb2.Close()
	// Its leave reaches the bus after a while: skipped again then.
	n := 20
	for deadline := time.Now().Add(20 * time.Second); ; n++ {
		send(n, n+1)
		waitFor(t, "the message on node 2", func() bool { return len(messages(&b)) == n+1 })
		if n%4 == 0 && messages(&b)[n].Skipped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no skipped payload after the second client closed")
		}
	}
	n++
	// Asking for payloads again: every message after the answer whole.
	if err := cb.SkipPayloads(false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	send(n, n+10)
	check("node 2", &b, n, n+10, never)
	check("the sender", &a, 0, n+10, never)
	waitFor(t, "an empty window", func() bool { return ca.InFlight() == 0 })
}

// newClient attaches a Client to node's totem in c; it closes when the
// test ends (Close may come earlier: it is idempotent).
func newClient(t *testing.T, c *harness.Cluster, node int, opts totem.ClientOptions) *totem.Client {
	t.Helper()
	cl, err := totem.NewClient(c.Client(node), c.Subjects, uint32(node), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// A client that names its keys (WantKeys) receives, of other nodes'
// droppable messages, only those with one of its keys, and nothing at
// all of the others — while every client of its service on its node
// filters. Plain messages, its own node's, and every message of a key it
// asked for before the message was submitted come, in their order.
func TestWantKeys(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	var a, b, b2 recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha", OnDeliver: a.on})
	cb := newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b.on})
	// The sender filters too: its own messages come all the same.
	if err := ca.WantKeys(nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cb.WantKeys([]uint32{1}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Message i: plain when i%3 == 0, else droppable with key i%3 (1 or
	// 2); its payload is i.
	send := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			p := []byte{byte(i)}
			var err error
			if k := uint32(i % 3); k == 0 {
				_, err = ca.McastParts(ctx, "alpha", p, nil)
			} else {
				_, err = ca.McastPartsDroppable(ctx, "alpha", k, p, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	payloads := func(r *recorder) (out []int) {
		for _, d := range r.snapshot() {
			if d.Message != nil {
				out = append(out, int(d.Message.Payload[0]))
			}
		}
		return out
	}
	// expect: the messages of from..to a client of keys receives.
	expect := func(from, to int, keys ...int) (out []int) {
		for i := from; i < to; i++ {
			if k := i % 3; k == 0 || slices.Contains(keys, k) {
				out = append(out, i)
			}
		}
		return out
	}
	all := func(from, to int) []int { return expect(from, to, 1, 2) }
	// wait sends a plain marker (a multiple of 3, which every client
	// receives) and waits until r has it: everything before it is in.
	wait := func(who string, r *recorder, marker int) {
		t.Helper()
		send(marker, marker+1)
		waitFor(t, who+"'s marker", func() bool { return slices.Contains(payloads(r), marker) })
	}
	send(0, 30)
	wait("node 2", &b, 30)
	wait("the sender", &a, 33)
	if got, want := payloads(&a), append(all(0, 31), 33); !slices.Equal(got, want) {
		t.Fatalf("the sender got %v, want every one of its messages %v", got, want)
	}
	if got, want := payloads(&b), append(expect(0, 30, 1), 30, 33); !slices.Equal(got, want) {
		t.Fatalf("node 2 (key 1) got %v, want %v", got, want)
	}
	// A second client of alpha on node 2 that filters nothing: every
	// message goes to node 2's subject, both clients get them.
	cb2 := newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b2.on})
	before := len(payloads(&b))
	send(36, 45)
	wait("node 2's second client", &b2, 45)
	if got, want := payloads(&b)[before:], append(all(36, 45), 45); !slices.Equal(got, want) {
		t.Fatalf("node 2 with an unfiltered client beside it got %v, want %v", got, want)
	}
	cb2.Close()
	// Its leave reaches the bus a little later: key 2 is filtered again
	// then.
	for n := 48; ; n += 3 {
		if n > 240 {
			t.Fatal("key 2 still delivered to node 2 after its unfiltered client closed")
		}
		send(n-1, n) // key 2
		wait("node 2", &b, n)
		if !slices.Contains(payloads(&b), n-1) {
			break
		}
	}
	// Asking for key 2 as well: every message submitted after the answer
	// comes, however soon.
	if err := cb.WantKeys([]uint32{1, 2}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before = len(payloads(&b))
	send(241, 252)
	wait("node 2", &b, 252)
	if got, want := payloads(&b)[before:], append(all(241, 252), 252); !slices.Equal(got, want) {
		t.Fatalf("node 2 (keys 1 and 2) got %v, want %v", got, want)
	}
	waitFor(t, "an empty window", func() bool { return ca.InFlight() == 0 })
}
