package ipc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/loadertest"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
	"github.com/corobus/corobus/services/ipc/session"
)

// echoRequestIDs are the ids of echo's requests in the test gateway's
// route: 0 to 6.
const echoRequestIDs = 7

// echo is a test component: it answers a request with CS_OK and the
// request's body, and for message id 3 first sends the body as an event.
type echo struct{ ver uint32 }

type echoSession struct {
	c   *session.Conn
	ver uint32
}

func (e echo) Open(c *session.Conn) (session.Session, error) { return echoSession{c, e.ver}, nil }

func (s echoSession) Request(_ context.Context, msg []byte) []byte {
	id := binary.LittleEndian.Uint32(msg)
	body := msg[qbclient.ReqHeaderSize:]
	switch id {
	case 5:
		// Asynchronous: its body comes back as an event, in order.
		ev := make([]byte, 16+len(body))
		binary.LittleEndian.PutUint32(ev, 5)
		binary.LittleEndian.PutUint32(ev[8:], uint32(len(ev)))
		copy(ev[16:], body)
		_ = s.c.SendEvent(ev)
		return libqb.NoResponse
	case 6:
		_ = s.c.SetFlowControl(int32(body[0]))
	}
	if id == 4 {
		body = fmt.Appendf(nil, "v%d", s.ver)
	}
	if id == 3 {
		ev := make([]byte, 16+len(body))
		binary.LittleEndian.PutUint32(ev, 3)
		binary.LittleEndian.PutUint32(ev[8:], uint32(len(ev)))
		copy(ev[16:], body)
		_ = s.c.SendEvent(ev)
	}
	out := make([]byte, qbclient.ResHeaderSize+len(body))
	binary.LittleEndian.PutUint32(out, id)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[16:], uint32(cswire.OK))
	copy(out[qbclient.ResHeaderSize:], body)
	return out
}

func (echoSession) Close() {}

// serveEcho runs the echo component, version ver, until the returned
// stop. It answers request id 4 with its version.
func serveEcho(t testing.TB, nc *nats.Conn, subjects bus.Subjects, ver uint32, replaces ...uint32) (stop func(), exited <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		comp := loader.Component{Name: "echo", Version: ver, Replaces: replaces, Interval: 100 * time.Millisecond}
		if err := session.ServeComponent(ctx, nc, subjects, 1, comp, echo{ver}, bustest.Logger(t)); err != nil {
			t.Errorf("echo component: %v", err)
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop, done
}

type gatewayFixture struct {
	gw       *Gateway
	service  string
	nc       *nats.Conn
	subjects bus.Subjects
}

// transports are the connection types every gateway test runs on.
var transports = []libqb.Transport{libqb.TransportSHM, libqb.TransportSocket}

// eachTransport runs f as a subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr libqb.Transport)) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) { f(t, tr) })
	}
}

// gatewayEnv is what a test gateway stands on: a one-node bus with a
// loader, and a service name and connection directory of its own (kind
// tells tests' names apart).
type gatewayEnv struct {
	nc       *nats.Conn
	subjects bus.Subjects
	service  string
	shm      string
}

func newGatewayEnv(t testing.TB, kind string) gatewayEnv {
	t.Helper()
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	subjects, err := bus.NewSubjects("t")
	if err != nil {
		t.Fatal(err)
	}
	loadertest.Start(t, nc, subjects, 1, loader.LocalNamespace(1))
	// A short directory: socket names under it must fit a sockaddr_un.
	shm, err := os.MkdirTemp("", "qb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	// Abstract names are shared by every test process of this host.
	service := fmt.Sprintf("%s-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1000000)
	return gatewayEnv{nc: nc, subjects: subjects, service: service, shm: shm}
}

// startGateway starts a gateway with one route, service to echo version
// 1; tune, if any, changes its configuration first.
func startGateway(t testing.TB, tr libqb.Transport, admit func(libqb.Creds) bool, tune ...func(*Config)) gatewayFixture {
	t.Helper()
	e := newGatewayEnv(t, "cbgw")
	nc, subjects, service, shm := e.nc, e.subjects, e.service, e.shm
	cfg := Config{
		Conn: nc, Subjects: subjects, Node: 1, Log: bustest.Logger(t), Admit: admit, ShmDir: shm, Transport: tr,
		Routes: []Route{{Service: service, Component: "echo", Version: 1,
			HeldDuringSync: func(id int32) bool { return id == 2 }, Async: func(id int32) bool { return id == 5 }, RequestIDs: echoRequestIDs}},
	}
	for _, f := range tune {
		f(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return gatewayFixture{gw: gw, service: service, nc: nc, subjects: subjects}
}

// dialServed connects once a component serves the route.
func (f gatewayFixture) dialServed(t testing.TB) *qbclient.Client {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := f.dial(t)
		if err == nil {
			return c
		}
		if !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			t.Fatalf("dial: %v", err)
		}
		// The loader has not seen the component's announcement yet.
	}
}

// dial connects once the gateway listens, returning the gateway's answer.
func (f gatewayFixture) dial(t testing.TB) (*qbclient.Client, error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := qbclient.Dial(f.service, 8192)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			if c != nil {
				t.Cleanup(c.Close)
			}
			return c, err
		}
		time.Sleep(10 * time.Millisecond) // not listening yet
	}
}

func TestGatewayRoutesThroughTheLoader(t *testing.T) {
	eachTransport(t, testGatewayRoutesThroughTheLoader)
}

func testGatewayRoutesThroughTheLoader(t *testing.T, tr libqb.Transport) {
	f := startGateway(t, tr, func(libqb.Creds) bool { return true })
	checkTransport := func(c *qbclient.Client) {
		t.Helper()
		if c.SHM() != (tr == libqb.TransportSHM) {
			t.Fatalf("the gateway offered SHM=%t on %s", c.SHM(), tr)
		}
	}

	// Nothing serves the route yet: the client is told to try again, as
	// corosync tells clients it is not ready.
	if _, err := f.dial(t); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("dial with no component: %v, want EAGAIN", err)
	}

	stop, _ := serveEcho(t, f.nc, f.subjects, 1)
	c := f.dialServed(t)
	checkTransport(c)

	resp, err := c.Request(qbclient.NewRequest(1, []byte("hello")), 5*time.Second)
	if err != nil || qbclient.ResponseError(resp) != int32(cswire.OK) || string(resp[qbclient.ResHeaderSize:]) != "hello" {
		t.Fatalf("request: %q, %v", resp, err)
	}
	if _, err := c.Request(qbclient.NewRequest(3, []byte("event please")), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ev, err := c.Event(5 * time.Second)
	if err != nil || string(ev[16:]) != "event please" {
		t.Fatalf("event: %q, %v", ev, err)
	}

	// While the sync engine says a sync runs, held requests get
	// CS_ERR_TRY_AGAIN (id 0, as corosync answers) and others pass.
	setSync := func(on bool) {
		t.Helper()
		if err := f.nc.Publish(f.subjects.SyncState(1), fmt.Appendf(nil, `{"node":1,"in_progress":%t}`, on)); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); f.gw.Syncing() != on; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the gateway did not see in_progress=%t", on)
			}
		}
	}
	setSync(true)
	resp, err = c.Request(qbclient.NewRequest(2, nil), 5*time.Second)
	if err != nil || qbclient.ResponseError(resp) != int32(cswire.ErrTryAgain) || binary.LittleEndian.Uint32(resp) != 0 {
		t.Errorf("held request during sync: %v, %v; want CS_ERR_TRY_AGAIN", resp, err)
	}
	if resp, err = c.Request(qbclient.NewRequest(1, nil), 5*time.Second); err != nil || qbclient.ResponseError(resp) != int32(cswire.OK) {
		t.Errorf("request not held during sync: %v, %v", resp, err)
	}
	setSync(false)
	if resp, err = c.Request(qbclient.NewRequest(2, nil), 5*time.Second); err != nil || qbclient.ResponseError(resp) != int32(cswire.OK) {
		t.Errorf("held request after sync: %v, %v", resp, err)
	}
	// The held request is the connection's overload (stats.ipcs.*.overload).
	if st := onlyConn(t, f.gw, func(st libqb.ConnStats) bool { return st.Overload == 1 }); st.Overload != 1 {
		t.Errorf("overload %d after one held request, want 1", st.Overload)
	}

	// The instance holding the session goes: the client's connection
	// ends, as corosync's clients see when corosync restarts.
	stop()
	// No response comes (the server closes instead); the wait is bounded.
	if _, err := c.Request(qbclient.NewRequest(1, nil), time.Second); err == nil {
		t.Error("a request answered after the component stopped")
	}
	if !c.Closed(5 * time.Second) {
		t.Error("the connection stayed open after its component stopped")
	}
}

// A client that only waits for events (Pacemaker's controld tracking
// quorum, pacemakerd waiting for cfg's shutdown requests) sends nothing
// that would find out its component instance died. The gateway's probe
// does, and ends the connection as corosync's dying ends its clients':
// without it the connection stayed open, and no event ever reached it.
// TestGatewayWaitsForALoadedService connects to a route the node loads
// (Route.Loaded) before any instance serves it, as a client that starts
// with the node does (corosync-quorumtool right after `corobus up`: cmap
// answered, cfg did not yet). The connection waits; the component starts
// once the gateway has asked the loader twice (so the client's
// connection is certainly waiting, not yet made), and the connection is
// made. Before, it was refused at once (EAGAIN: "Cannot initialise CFG
// service"). With nothing ever serving, it is refused after StartWait.
func TestGatewayWaitsForALoadedService(t *testing.T) {
	loaded := func(wait time.Duration) func(*Config) {
		return func(c *Config) {
			c.Routes[0].Loaded = true
			c.StartWait = wait
		}
	}
	f := startGateway(t, libqb.TransportSocket, func(libqb.Creds) bool { return true }, loaded(time.Minute))
	asks, err := f.nc.SubscribeSync(f.subjects.LcrAPI(1, loader.APIReference))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	type dialed struct {
		c   *qbclient.Client
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := f.dial(t)
		done <- dialed{c, err}
	}()
	for n := 0; n < 2; n++ {
		if _, err := asks.NextMsg(30 * time.Second); err != nil {
			select {
			case d := <-done:
				t.Fatalf("the connection did not wait for the service: %v", d.err)
			default:
			}
			t.Fatalf("the gateway did not ask the loader again: %v", err)
		}
		select {
		case d := <-done:
			t.Fatalf("the connection did not wait for the service: %v", d.err)
		default:
		}
	}
	serveEcho(t, f.nc, f.subjects, 1)
	d := <-done
	if d.err != nil {
		t.Fatalf("the connection made before the service started: %v", d.err)
	}
	resp, err := d.c.Request(qbclient.NewRequest(1, []byte("hello")), 5*time.Second)
	if err != nil || qbclient.ResponseError(resp) != int32(cswire.OK) || string(resp[qbclient.ResHeaderSize:]) != "hello" {
		t.Fatalf("request: %q, %v", resp, err)
	}

	// Nothing ever serves it: refused, after the wait, as before it.
	g := startGateway(t, libqb.TransportSocket, func(libqb.Creds) bool { return true }, loaded(500*time.Millisecond))
	if _, err := g.dial(t); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("dial with no component: %v, want EAGAIN", err)
	}
}

func TestGatewayEndsIdleConnectionsOfAGoneInstance(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr libqb.Transport) {
		f := startGateway(t, tr, func(libqb.Creds) bool { return true })
		stop, _ := serveEcho(t, f.nc, f.subjects, 1)
		c := f.dialServed(t)
		if v := servedBy(t, c); v != "v1" {
			t.Fatalf("served by %s", v)
		}
		stop()
		// No request from the client from here on. Two probes without
		// an answer, DefaultProbeInterval apart, end it.
		if !c.Closed(3*DefaultProbeInterval + 5*time.Second) {
			t.Fatal("the idle connection stayed open after its component instance went")
		}
	})
}

func TestGatewayRefusesUnlistedClients(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr libqb.Transport) {
		f := startGateway(t, tr, func(libqb.Creds) bool { return false })
		serveEcho(t, f.nc, f.subjects, 1)
		if _, err := f.dial(t); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("dial of an unlisted client: %v, want EACCES", err)
		}
	})
}

// BenchmarkGatewayRoundTrip is one synchronous client's request through
// the gateway, over the bus (TCP to an embedded server) to a component
// session and back: the cost a cmap call pays when cmap runs in its own
// process.
func BenchmarkGatewayRoundTrip(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			f := startGateway(b, tr, func(libqb.Creds) bool { return true })
			serveEcho(b, f.nc, f.subjects, 1)
			c := f.dialServed(b)
			msg := qbclient.NewRequest(1, []byte("0123456789abcdef"))
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Request(msg, 5*time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func servedBy(t *testing.T, c *qbclient.Client) string {
	t.Helper()
	resp, err := c.Request(qbclient.NewRequest(4, nil), 5*time.Second)
	if err != nil {
		t.Fatalf("version request: %v", err)
	}
	return string(resp[qbclient.ResHeaderSize:])
}

// A newer version replaces a session component under a connected client:
// new connections go to the new version, the connection made before keeps
// the instance that holds its state, and the old instance leaves once its
// last connection has gone.
func TestGatewayReplacementKeepsConnections(t *testing.T) {
	eachTransport(t, testGatewayReplacementKeepsConnections)
}

func testGatewayReplacementKeepsConnections(t *testing.T, tr libqb.Transport) {
	f := startGateway(t, tr, func(libqb.Creds) bool { return true })
	_, v1exited := serveEcho(t, f.nc, f.subjects, 1)
	old := f.dialServed(t)
	if v := servedBy(t, old); v != "v1" {
		t.Fatalf("first connection served by %s", v)
	}
	serveEcho(t, f.nc, f.subjects, 2, 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c := f.dialServed(t)
		v := servedBy(t, c)
		c.Close()
		if v == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new connections are not served by the replacement")
		}
	}
	for range 5 {
		if v := servedBy(t, old); v != "v1" {
			t.Fatalf("the connection made before the replacement moved to %s", v)
		}
	}
	select {
	case <-v1exited:
		t.Fatal("the old instance left while a connection still held it")
	default:
	}
	old.Close()
	select {
	case <-v1exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the old instance stayed after its last connection went")
	}
}

// Asynchronous calls get no response and keep their order with the
// others; a component flow-controls a connection through its gateway.
func TestGatewayAsyncCallsAndFlowControl(t *testing.T) {
	eachTransport(t, testGatewayAsyncCallsAndFlowControl)
}

func testGatewayAsyncCallsAndFlowControl(t *testing.T, tr libqb.Transport) {
	f := startGateway(t, tr, func(libqb.Creds) bool { return true })
	serveEcho(t, f.nc, f.subjects, 1)
	c := f.dialServed(t)
	for _, b := range []string{"a", "b"} {
		if err := c.Send(qbclient.NewRequest(5, []byte(b))); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Request(qbclient.NewRequest(3, []byte("c")), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp[qbclient.ResHeaderSize:]); got != "c" {
		t.Fatalf("the synchronous call got %q: an asynchronous call was answered", got)
	}
	for _, want := range []string{"a", "b", "c"} {
		ev, err := c.Event(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(ev[16:]); got != want {
			t.Fatalf("event %q, want %q (order lost)", got, want)
		}
	}
	for _, level := range []int32{libqb.FlowAsync, libqb.FlowOff} {
		if err := c.Send(qbclient.NewRequest(6, []byte{byte(level)})); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Response(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if ev, err := c.Event(10 * time.Millisecond); err == nil {
			t.Fatalf("a flow-control signal reached the client as an event: %q", ev)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			fc, err := c.FlowControl()
			if err != nil {
				t.Fatal(err)
			}
			if fc == level {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flow control %d, want %d", fc, level)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The connection's counters (stats.ipcs.*): five requests, the two
	// asynchronous ones unanswered; three events; two changes of flow
	// control, back to none.
	want := func(st libqb.ConnStats) bool {
		return st.Requests == 5 && st.Responses == 3 && st.Dispatched == 3 && st.FlowControl == 0 && st.FlowControlCount == 2
	}
	if st := onlyConn(t, f.gw, want); !want(st) {
		t.Errorf("counters %+v; want 5 requests, 3 responses, 3 dispatched, flow control 0 changed twice", st)
	}
}

// onlyConn is the counters of the one connection gw serves, once they
// satisfy want or 5 s have passed: a counter is added to right after what
// it counts, which the client may see first.
func onlyConn(t *testing.T, gw *Gateway, want func(libqb.ConnStats) bool) libqb.ConnStats {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := gw.srv.Stats()
		if len(st.Conns) != 1 || st.Active != 1 {
			t.Fatalf("the gateway serves %d connections (active %d), want 1", len(st.Conns), st.Active)
		}
		if want(st.Conns[0]) || time.Now().After(deadline) {
			return st.Conns[0]
		}
	}
}
