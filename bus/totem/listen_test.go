package totem_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem"
)

// busNode is one node as the bus process runs it: bus.StartServer's
// server and a totem Node on its own connection (totem.Hook's).
type busNode struct {
	srv  *bus.Server
	subj bus.Subjects

	mu sync.Mutex
	// asks counts the node's listen.ask messages; answered are the
	// origins of the listen requests seen after its fourth (its last).
	asks     int
	answered map[uint32]bool
	heard    map[uint32]bool // every listen request's origin
}

// heardAll tells whether every one of origins sent a listen request.
func (b *busNode) heardAll(origins []uint32) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, o := range origins {
		if !b.heard[o] {
			return false
		}
	}
	return true
}

// lastAskAnswered tells whether the node has sent its last ask and origin
// has answered it.
func (b *busNode) lastAskAnswered(origin uint32) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.answered[origin]
}

func startBusNode(t *testing.T) *busNode {
	t.Helper()
	srv := bustest.StartNode(t).Server
	subj := srv.Config().Subjects
	nc, err := srv.Connect("totem", nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := totem.DefaultConfig(1, subj)
	cfg.Expected = []uint32{1}
	cfg.Addr = "127.0.0.1"
	cfg.StateDir = t.TempDir()
	cfg.Token, cfg.Join, cfg.Consensus = 300*time.Millisecond, 30*time.Millisecond, 400*time.Millisecond
	tn, err := totem.New(nc, cfg, totem.Callbacks{})
	if err != nil {
		t.Fatal(err)
	}
	b := &busNode{srv: srv, subj: subj}
	// Not on the node's own connection: without echo, it does not hear
	// its own requests.
	ask, err := srv.Connect("status")
	if err != nil {
		t.Fatal(err)
	}
	// Asks and listen requests in the order the server sent them (one
	// channel): a client's answer to an ask comes after it.
	seen := make(chan *nats.Msg, 64)
	for _, s := range []string{subj.TotemListenAsk(1), subj.TotemListen(1)} {
		if _, err := ask.ChanSubscribe(s, seen); err != nil {
			t.Fatal(err)
		}
	}
	if err := ask.Flush(); err != nil {
		t.Fatal(err)
	}
	b.answered, b.heard = map[uint32]bool{}, map[uint32]bool{}
	go func() {
		for m := range seen {
			b.mu.Lock()
			var r struct {
				Origin uint32 `json:"origin"`
			}
			switch {
			case m.Subject == subj.TotemListenAsk(1):
				b.asks++
			case json.Unmarshal(m.Data, &r) == nil:
				b.heard[r.Origin] = true
				if b.asks >= 4 {
					b.answered[r.Origin] = true
				}
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ask.Close(); close(seen) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tn.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "node 1 operational", func() bool {
		st, err := totem.FetchStatus(ask, subj, 1, time.Second)
		return err == nil && st.State == "operational"
	})
	return b
}

// keptWatch records, by message id, whether node 1's deliver frame of
// service came kept (KeptHeader), from a connection that does not name
// the service to the bus.
type keptWatch struct {
	mu   sync.Mutex
	kept map[totem.MsgID]bool
}

func watchKept(t *testing.T, b *busNode, service string) *keptWatch {
	t.Helper()
	nc, err := b.srv.Connect("watch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w := &keptWatch{kept: map[totem.MsgID]bool{}}
	_, err = nc.Subscribe(b.subj.TotemDeliver(1, service), func(m *nats.Msg) {
		msg, err := totem.ParseDeliver(service, m.Data)
		if err != nil || msg.ID.Node == 0 {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.kept[msg.ID] = m.Header.Get(totem.KeptHeader) != ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// frame tells whether node 1 delivered id, and whether kept.
func (w *keptWatch) frame(id totem.MsgID) (kept, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kept, ok = w.kept[id]
	return kept, ok
}

// sendOne multicasts one large message of cl on service and tells, once
// cl has it back and the watch its frame, whether node 1 delivered it
// kept.
func sendOne(t *testing.T, w *keptWatch, cl *totem.Client, r *recorder, service string) bool {
	t.Helper()
	id, err := cl.Mcast(context.Background(), service, make([]byte, 16<<10))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message back", func() bool {
		for _, d := range r.snapshot() {
			if d.Message != nil && d.Message.ID == id {
				return len(d.Message.Payload) == 16<<10
			}
		}
		return false
	})
	var kept bool
	waitFor(t, "the message's frame", func() (ok bool) { kept, ok = w.frame(id); return ok })
	return kept
}

// keptAgain multicasts large messages of cl until one comes back kept,
// for at most 20 s.
func keptAgain(t *testing.T, w *keptWatch, cl *totem.Client, r *recorder, service, after string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !sendOne(t, w, cl, r, service); {
		if time.Now().After(deadline) {
			t.Fatalf("no kept frame %s", after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keepOwnClient is a KeepOwn client of service on b's server, closed with
// the test, with the recorder of its deliveries.
func keepOwnClient(t *testing.T, b *busNode, service string) (*totem.Client, *recorder) {
	t.Helper()
	var r recorder
	nc, err := b.srv.Connect("client a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := totem.NewClient(nc, b.subj, 1, totem.ClientOptions{Service: service, OnDeliver: r.on, KeepOwn: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, &r
}

// A second client of a KeepOwn client's service that dies without its
// leave request (its connection closes, Close never runs: a killed or
// crashed process) stops counting once its server says its connection
// closed: the first client's large multicasts come back kept again.
func TestDeadListenerStopsCounting(t *testing.T) {
	b := startBusNode(t)
	w := watchKept(t, b, "alpha")
	var rb recorder
	ca, ra := keepOwnClient(t, b, "alpha")
	if !sendOne(t, w, ca, ra, "alpha") {
		t.Fatal("the only client's large message came back whole")
	}
	// The second client, over a socket as a layer process's.
	ncb, err := nats.Connect(b.srv.AdminURL(), nats.Name("client b"))
	if err != nil {
		t.Fatal(err)
	}
	defer ncb.Close()
	if _, err := totem.NewClient(ncb, b.subj, 1, totem.ClientOptions{Service: "alpha", OnDeliver: rb.on}); err != nil {
		t.Fatal(err)
	}
	// NewClient returned once the bus had its listen request.
	if sendOne(t, w, ca, ra, "alpha") {
		t.Fatal("a large message came back kept with two clients of its service")
	}
	// It dies: its connection closes, no leave request.
	ncb.Close()
	keptAgain(t, w, ca, ra, "alpha", "after the second client's connection closed")
}

// A client whose connection the bus closed (here kicked; a stale
// connection, a network cut) reconnects and names its service again with
// its new connection: its large multicasts come back kept again, and the
// end of the old connection does not take the new registration out.
func TestReconnectedListenerCountsAgain(t *testing.T) {
	b := startBusNode(t)
	w := watchKept(t, b, "alpha")
	var ra recorder
	nca, err := nats.Connect(b.srv.AdminURL(), nats.Name("client a"), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nca.Close()
	ca, err := totem.NewClient(nca, b.subj, 1, totem.ClientOptions{Service: "alpha", OnDeliver: ra.on, KeepOwn: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if !sendOne(t, w, ca, &ra, "alpha") {
		t.Fatal("the only client's large message came back whole")
	}
	// The node asks its clients to name their services again when it
	// starts and three times after, the last 10 s later: past those (and
	// the client's answer), only the client's own reconnection can
	// register it again.
	waitFor(t, "the node's last ask answered", func() bool { return b.lastAskAnswered(ca.Origin()) })
	cid, err := nca.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.srv.NATS().DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new connection", func() bool {
		id, err := nca.GetClientID()
		return err == nil && id != cid && nca.IsConnected()
	})
	keptAgain(t, w, ca, &ra, "alpha", "after the client reconnected")
}

// A client that names its service and dies at once, before the bus has
// answered (a process killed as it starts): its listen request and the
// end of its connection reach the node in the order its server saw them,
// so it does not stay registered. Twenty such clients, then the KeepOwn
// client's large multicasts come back kept.
func TestListenerDyingAtOnceStopsCounting(t *testing.T) {
	b := startBusNode(t)
	w := watchKept(t, b, "alpha")
	ca, ra := keepOwnClient(t, b, "alpha")
	var short []uint32
	for i := range 20 {
		short = append(short, uint32(1000+2*i+1))
		nc, err := nats.Connect(b.srv.AdminURL(), nats.Name("short-lived"))
		if err != nil {
			t.Fatal(err)
		}
		cid, err := nc.GetClientID()
		if err != nil {
			t.Fatal(err)
		}
		// What totem.Client sends, from a client that does not wait.
		req, _ := json.Marshal(map[string]any{"service": "alpha", "origin": short[i], "server": nc.ConnectedServerId(), "cid": cid})
		if err := nc.Publish(b.subj.TotemListen(1), req); err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	// The bus had them all (its server sent each to the node too).
	waitFor(t, "the short-lived clients' listen requests", func() bool { return b.heardAll(short) })
	keptAgain(t, w, ca, ra, "alpha", "after the short-lived clients' connections closed")
}
