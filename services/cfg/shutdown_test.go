package cfg_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/loadertest"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/cswire/cswiretest"
	"github.com/corobus/corobus/services/ipc/session"
)

// A node's cfg instances in these tests are what `corobus up` runs: each
// on its own bus connection as the cfg layer's user (its grant, nothing
// more), announced to a real loader, talking to the others over the bus.
// The libcfg connections are opened on an instance directly (OpenConn),
// as its session server does for the gateway.

const node = 1

type shutdownEnv struct {
	t        *testing.T
	cl       *bustest.Cluster
	subjects bus.Subjects
	timeout  time.Duration
	// refused gathers the bus's refusals of the instances' publishes
	// (permission violations), which the bus reports asynchronously.
	mu      sync.Mutex
	refused []error
}

func newShutdownEnv(t *testing.T, timeout time.Duration) *shutdownEnv {
	t.Helper()
	users := bus.NewUsers()
	if err := users.Add(cfg.ComponentName, func(a bus.Access) bus.Grant { return cfg.Layer().Grant(a) }); err != nil {
		t.Fatal(err)
	}
	cl := bustest.StartClusterWith(t, 1, bustest.Options{Users: users})
	subjects, err := bus.NewSubjects(bus.DefaultPrefix(cl.Name))
	if err != nil {
		t.Fatal(err)
	}
	loadertest.Start(t, cl.Conn(node), subjects, node, loader.LocalNamespace(node))
	e := &shutdownEnv{t: t, cl: cl, subjects: subjects, timeout: timeout}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, err := range e.refused {
			t.Errorf("the bus refused a cfg instance's message: %v", err)
		}
	})
	return e
}

type instance struct {
	svc  *cfg.Service
	stop func() // the process dies: its bus connection ends
}

// start runs cfg instance id and waits until the loader lists it serving
// and it listens to its peers.
func (e *shutdownEnv) start(id string) *instance {
	e.t.Helper()
	nc := e.cl.ConnAs(node, cfg.ComponentName, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			e.mu.Lock()
			e.refused = append(e.refused, fmt.Errorf("instance %s: %w", id, err))
			e.mu.Unlock()
		}
	}))
	log := bustest.Logger(e.t).With("instance", id)
	timeout := e.timeout
	svc := cfg.NewService(cfg.Config{Conn: nc, Subjects: e.subjects, Node: node, Log: log, Instance: id,
		ShutdownTimeout: func(context.Context) (time.Duration, error) { return timeout, nil }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() {
		defer wg.Done()
		select {
		case <-svc.Ready():
		case <-ctx.Done():
			return
		}
		_ = session.ServeComponent(ctx, nc, e.subjects, node, loader.Component{Name: cfg.ComponentName, Version: cfg.ComponentVersion,
			Subject: cfg.Subject(e.subjects, node), Instance: id}, svc, log)
	}()
	var once sync.Once
	in := &instance{svc: svc, stop: func() { once.Do(func() { nc.Close(); cancel(); wg.Wait() }) }}
	e.t.Cleanup(in.stop)
	e.waitListed(id)
	return in
}

func (e *shutdownEnv) waitListed(id string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := e.cl.Conn(node).Request(e.subjects.LcrAPI(node, loader.APIList), nil, 2*time.Second)
		if err == nil {
			var l loader.Listing
			if json.Unmarshal(r.Data, &l) == nil && slices.ContainsFunc(l.Components, func(c loader.ComponentInfo) bool {
				return c.Name == cfg.ComponentName && slices.ContainsFunc(c.Instances, func(in loader.InstanceInfo) bool {
					return in.ID == id && in.State == loader.Serving
				})
			}) {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the loader does not list cfg instance %s serving", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sink is a libcfg connection's dispatch side.
type sink chan []byte

func (s sink) SendEvent(msg []byte) error {
	select {
	case s <- msg:
		return nil
	default:
		return errors.New("test client's events full")
	}
}

// answer is how a registered client answers the shutdown callback.
type answer int

const (
	yes answer = iota
	no
	never // it does not answer
)

// register opens a libcfg connection on in, registers it with trackstart
// and answers every shutdown callback with a; asked receives each
// callback it was given.
func register(t *testing.T, in *instance, label string, a answer) (asked <-chan struct{}) {
	t.Helper()
	ev := make(sink, 16)
	c := in.svc.OpenConn(ev, label)
	ctx, cancel := context.WithCancel(context.Background())
	if r := c.Request(ctx, cswiretest.Request(cfg.ReqTrackStart, 24, nil)); code(t, r) != cswire.OK {
		t.Fatalf("%s: trackstart: %v", label, code(t, r))
	}
	ch := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var msg []byte
			select {
			case msg = <-ev:
			case <-ctx.Done():
				return
			}
			id, c0, err := cswire.ParseResponse(msg)
			if err != nil || id != cfg.ResTestShutdown || c0 != cswire.OK {
				continue // the timeout's notice (CS_ERR_TIMEOUT)
			}
			ch <- struct{}{}
			if a == never {
				continue
			}
			resp := uint32(0)
			if a == yes {
				resp = 1
			}
			c.Request(ctx, cswiretest.Request(cfg.ReqReplyToShutdown, 24, func(b []byte) { cswire.PutU32(b, 16, resp) }))
		}
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	return ch
}

func code(t *testing.T, resp []byte) cswire.Error {
	t.Helper()
	_, c, err := cswire.ParseResponse(resp)
	if err != nil {
		t.Fatalf("undecodable answer % x: %v", resp, err)
	}
	return c
}

// decision follows the node's shutdown events until the decision.
type decision struct {
	sub *nats.Subscription
}

func (e *shutdownEnv) follow() *decision {
	e.t.Helper()
	nc := e.cl.Conn(node)
	sub, err := nc.SubscribeSync(e.subjects.CfgEvent(node, "shutdown"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &decision{sub: sub}
}

// next is the next decision event (confirmed or cancelled), and the
// phases published before it.
func (d *decision) next(t *testing.T) (cfg.ShutdownEvent, []string) {
	t.Helper()
	var phases []string
	for {
		m, err := d.sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no shutdown decision published (phases so far %v): %v", phases, err)
		}
		var ev cfg.ShutdownEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Phase == "confirmed" || ev.Phase == "cancelled" {
			return ev, phases
		}
		phases = append(phases, ev.Phase)
	}
}

// tryShutdown is corosync-cfgtool -H on a connection to in, its answer
// awaited for wait (tests keep it far below the configured timeout).
func tryShutdown(in *instance, wait time.Duration) []byte {
	tool := in.svc.OpenConn(make(sink, 16), "cfgtool")
	defer tool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return tool.Request(ctx, cfg.EncodeTryShutdown(cfg.ShutdownRequest))
}

// TestShutdownDecidedOnceEveryClientAnswered: with cfg.shutdown_timeout
// at 60 s, a try_shutdown is decided on the registered clients' answers,
// whichever of the node's three cfg instances holds each client's
// connection and whichever took the tool's: corosync answers as soon as
// every client has. The tool waits 20 s; an instance that waited for its
// timeout answers CS_ERR_TIMEOUT (the tool's deadline) instead of the
// decision. Before the fix, an instance with clients answered the asker
// once ("asked 1") and its second answer, the clients' verdict, was
// refused by the bus (a bus user may answer a request once): every case
// below but "on the tool's instance" waited for the asker's deadline
// (timeout + 2 s), and with 60 s got CS_ERR_TIMEOUT.
func TestShutdownDecidedOnceEveryClientAnswered(t *testing.T) {
	e := newShutdownEnv(t, 60*time.Second)
	ins := map[string]*instance{}
	for _, id := range []string{"a", "b", "c"} {
		ins[id] = e.start(id)
	}
	d := e.follow()
	type client struct {
		on string
		a  answer
	}
	for _, tc := range []struct {
		name    string
		clients []client
		tool    string
		want    cswire.Error
		yes, no int
	}{
		{"a refusal on another instance", []client{{"a", no}}, "b", cswire.ErrBusy, 0, 1},
		{"on the tool's instance", []client{{"b", no}}, "b", cswire.ErrBusy, 0, 1},
		{"consent on two others", []client{{"a", yes}, {"c", yes}}, "b", cswire.OK, 2, 0},
		{"a refusal among consents", []client{{"a", yes}, {"b", yes}, {"c", no}}, "b", cswire.ErrBusy, 2, 1},
		{"two on one instance", []client{{"c", yes}, {"c", no}}, "a", cswire.ErrBusy, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.clients {
				register(t, ins[c.on], fmt.Sprintf("client%d@%s", i, c.on), c.a)
			}
			got := code(t, tryShutdown(ins[tc.tool], 20*time.Second))
			if got != tc.want {
				t.Fatalf("try_shutdown answered %v, want %v", got, tc.want)
			}
			ev, phases := d.next(t)
			if ev.Yes != tc.yes || ev.No != tc.no || ev.Expected != len(tc.clients) {
				t.Errorf("decided on yes %d no %d of %d, want yes %d no %d of %d", ev.Yes, ev.No, ev.Expected, tc.yes, tc.no, len(tc.clients))
			}
			if slices.Contains(phases, "timeout") {
				t.Errorf("an instance timed out (phases %v): the decision was not on the answers", phases)
			}
		})
	}
}

// TestShutdownTimeoutCountsSilentClientsAsNo keeps the timeout: a
// registered client on another instance that never answers is a no once
// cfg.shutdown_timeout passes, beside one that said yes.
func TestShutdownTimeoutCountsSilentClientsAsNo(t *testing.T) {
	e := newShutdownEnv(t, 300*time.Millisecond)
	a, b := e.start("a"), e.start("b")
	d := e.follow()
	register(t, a, "silent@a", never)
	register(t, b, "willing@b", yes)
	if got := code(t, tryShutdown(b, 20*time.Second)); got != cswire.ErrBusy {
		t.Fatalf("try_shutdown answered %v, want CS_ERR_BUSY", got)
	}
	ev, phases := d.next(t)
	if ev.Yes != 1 || ev.No != 1 || ev.Expected != 2 {
		t.Errorf("decided on yes %d no %d of %d, want yes 1 no 1 of 2", ev.Yes, ev.No, ev.Expected)
	}
	if !slices.Contains(phases, "timeout") {
		t.Errorf("no instance reported the timeout (phases %v)", phases)
	}
}

// TestShutdownPeerDiesMidNegotiation: the instance holding the only
// registered client dies after it was asked and before the client
// answered. The client's connection goes with it, and corosync counts a
// client that went away as a yes: the shutdown is confirmed, once the
// asker finds the instance gone, not at the timeout (60 s; the tool waits
// 20 s). Before the fix the asker waited for the timeout plus 2 s and
// counted the dead instance's clients as no (with the timeout at 1 s:
// CS_ERR_BUSY; at 60 s: the tool's CS_ERR_TIMEOUT).
func TestShutdownPeerDiesMidNegotiation(t *testing.T) {
	e := newShutdownEnv(t, 60*time.Second)
	a, b := e.start("a"), e.start("b")
	d := e.follow()
	asked := register(t, a, "silent@a", never)
	res := make(chan []byte, 1)
	go func() { res <- tryShutdown(b, 20*time.Second) }()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the client on the other instance was not asked")
	}
	a.stop()
	if got := code(t, <-res); got != cswire.OK {
		t.Fatalf("try_shutdown answered %v, want CS_OK", got)
	}
	ev, phases := d.next(t)
	if ev.Yes != 1 || ev.No != 0 || ev.Expected != 1 {
		t.Errorf("decided on yes %d no %d of %d, want yes 1 no 0 of 1", ev.Yes, ev.No, ev.Expected)
	}
	if slices.Contains(phases, "timeout") {
		t.Errorf("an instance timed out (phases %v)", phases)
	}
}

// client is a registered libcfg connection whose answers the test gives.
type client struct {
	t     *testing.T
	c     *cfg.Conn
	asked chan struct{}
	once  sync.Once
}

func registerManual(t *testing.T, in *instance, label string) *client {
	t.Helper()
	ev := make(sink, 16)
	cl := &client{t: t, c: in.svc.OpenConn(ev, label), asked: make(chan struct{}, 16)}
	if r := cl.c.Request(context.Background(), cswiretest.Request(cfg.ReqTrackStart, 24, nil)); code(t, r) != cswire.OK {
		t.Fatalf("%s: trackstart: %v", label, code(t, r))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case msg := <-ev:
				if id, c0, err := cswire.ParseResponse(msg); err == nil && id == cfg.ResTestShutdown && c0 == cswire.OK {
					cl.asked <- struct{}{}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.close() })
	return cl
}

// waitAsked waits for the shutdown callback.
func (cl *client) waitAsked() {
	cl.t.Helper()
	select {
	case <-cl.asked:
	case <-time.After(10 * time.Second):
		cl.t.Fatal("the client was not asked")
	}
}

// answer is corosync_cfg_replyto_shutdown.
func (cl *client) answer(yes bool) {
	cl.t.Helper()
	resp := uint32(0)
	if yes {
		resp = 1
	}
	r := cl.c.Request(context.Background(), cswiretest.Request(cfg.ReqReplyToShutdown, 24, func(b []byte) { cswire.PutU32(b, 16, resp) }))
	if got := code(cl.t, r); got != cswire.OK {
		cl.t.Fatalf("replyto_shutdown answered %v", got)
	}
}

// close is the client's connection ending.
func (cl *client) close() { cl.once.Do(cl.c.Close) }

// TestShutdownClientGoneAfterNoCountsYes: a registered client on another
// instance answers no, then its connection ends before the decision
// (another client has not answered yet). corosync takes its no back and
// counts it a yes (remove_ci_from_shutdown), so when the last client says
// yes the shutdown is confirmed. Before the fix the other instance had
// reported its clients' verdict (no) and forgot the negotiation: the
// client's going counted for nothing and the request was refused
// (CS_ERR_BUSY, yes 1 no 1).
func TestShutdownClientGoneAfterNoCountsYes(t *testing.T) {
	e := newShutdownEnv(t, 60*time.Second)
	a, b := e.start("a"), e.start("b")
	d := e.follow()
	refuser := registerManual(t, a, "refuser@a")
	last := registerManual(t, b, "last@b")
	res := make(chan []byte, 1)
	go func() { res <- tryShutdown(b, 20*time.Second) }()
	refuser.waitAsked()
	last.waitAsked()
	refuser.answer(false)
	refuser.close()
	last.answer(true)
	if got := code(t, <-res); got != cswire.OK {
		t.Fatalf("try_shutdown answered %v, want CS_OK", got)
	}
	if ev, _ := d.next(t); ev.Yes != 2 || ev.No != 0 || ev.Expected != 2 {
		t.Errorf("decided on yes %d no %d of %d, want yes 2 no 0 of 2", ev.Yes, ev.No, ev.Expected)
	}
}

// TestShutdownRequestsAtOnceRefuseOnlyOne: two try_shutdowns reach two
// instances at the same moment. corosync's one cfg service takes the
// first and answers the second CS_ERR_EXIST; here exactly one must go on
// (and be decided on the clients' answers: both refuse, CS_ERR_BUSY) and
// the other be refused with CS_ERR_EXIST. Before the fix each instance
// answered the other's ask busy while running its own, and both
// requesters got CS_ERR_EXIST. Several rounds, as the two may or may not
// overlap on a given one.
func TestShutdownRequestsAtOnceRefuseOnlyOne(t *testing.T) {
	e := newShutdownEnv(t, 60*time.Second)
	a, b := e.start("a"), e.start("b")
	d := e.follow()
	register(t, a, "refuser@a", no)
	register(t, b, "refuser@b", no)
	sequential := 0
	for round := range 8 {
		start := make(chan struct{})
		res := make(chan cswire.Error, 2)
		for _, in := range []*instance{a, b} {
			go func() {
				<-start
				res <- code(t, tryShutdown(in, 20*time.Second))
			}()
		}
		close(start)
		got := []cswire.Error{<-res, <-res}
		decided := 0
		for _, c := range got {
			switch c {
			case cswire.ErrBusy:
				decided++
			case cswire.ErrExist:
			default:
				t.Fatalf("round %d: the two requests answered %v, want CS_ERR_BUSY or CS_ERR_EXIST each", round, got)
			}
		}
		if decided == 0 {
			t.Fatalf("round %d: both requests were refused (%v): one must go on", round, got)
		}
		// Both are decided when one ended before the other began.
		for range decided {
			if ev, _ := d.next(t); ev.Phase != "cancelled" || ev.No != 2 {
				t.Fatalf("round %d: decided %s on yes %d no %d of %d, want cancelled on no 2", round, ev.Phase, ev.Yes, ev.No, ev.Expected)
			}
		}
		if decided == 2 {
			sequential++
		}
	}
	t.Logf("%d of 8 rounds had the two requests one after the other", sequential)
}

// TestMalformedPeerRequestsAreAnswered: a request on the node's cfgpeers
// subjects that is not one of theirs is answered at once with the error
// headers of docs/subjects.md's conventions (code 400 and why), by the
// instances that serve them; until 3 Dec an ask that was not JSON was
// dropped and its requester waited for its timeout. A ping is answered
// without them.
func TestMalformedPeerRequestsAreAnswered(t *testing.T) {
	e := newShutdownEnv(t, time.Second)
	e.start("a")
	nc := e.cl.Conn(node)
	for _, tc := range []struct {
		name, subject string
		req           []byte
		refused       bool
	}{
		{"garbage ask", e.subjects.CfgPeers(node), []byte("garbage"), true},
		{"empty ask", e.subjects.CfgPeers(node), nil, true},
		{"a verdict as a request", e.subjects.CfgPeers(node), []byte(`{"op":"verdict","id":"x","instance":"z"}`), true},
		{"an ask without id", e.subjects.CfgPeers(node), []byte(`{"op":"ask","instance":"z"}`), true},
		{"garbage to an instance", e.subjects.CfgPeer(node, "a"), []byte("garbage"), true},
		{"an unknown op to an instance", e.subjects.CfgPeer(node, "a"), []byte(`{"op":"dance","id":"x"}`), true},
		{"ping", e.subjects.CfgPeer(node, "a"), nil, false},
		{"state of nothing", e.subjects.CfgPeer(node, "a"), []byte(`{"op":"state","id":"x"}`), false},
	} {
		msg, err := nc.Request(tc.subject, tc.req, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		errText, code := msg.Header.Get(micro.ErrorHeader), msg.Header.Get(micro.ErrorCodeHeader)
		if (errText != "") != tc.refused || tc.refused && code != "400" {
			t.Errorf("%s: answered with error %q, code %q; want refused %v (code 400)", tc.name, errText, code, tc.refused)
		}
	}
}
