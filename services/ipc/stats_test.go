package ipc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
	"github.com/corobus/corobus/services/ipc/session"
)

// cmapRequester sends libcmap requests and returns the responses: over a
// real libqb connection, or straight to a cmap connection's state.
type cmapRequester func(t *testing.T, msg []byte) []byte

func cmapName(key string) []byte {
	b := make([]byte, cswire.NameSize)
	cswire.PutName(b, 0, key)
	return b
}

func cmapStatus(t *testing.T, resp []byte) cswire.Error {
	t.Helper()
	if len(resp) < qbclient.ResHeaderSize {
		t.Fatalf("response of %d bytes", len(resp))
	}
	return cswire.Error(binary.LittleEndian.Uint32(resp[16:]))
}

// statsMap lists the stats map under prefix as corosync-cmapctl does:
// iterate, then get each key. The values are rendered as cmapctl prints
// them for the types the stats map holds.
func statsMap(t *testing.T, req cmapRequester, prefix string) map[string]string {
	t.Helper()
	if st := cmapStatus(t, req(t, qbclient.NewRequest(cmap.ReqSetCurrentMap, binary.LittleEndian.AppendUint64(nil, cmap.MapStats)))); st != cswire.OK {
		t.Fatalf("set_current_map(STATS): %v", st)
	}
	resp := req(t, qbclient.NewRequest(cmap.ReqIterInit, cmapName(prefix)))
	if st := cmapStatus(t, resp); st != cswire.OK {
		t.Fatalf("iter_init %q: %v", prefix, st)
	}
	h := binary.LittleEndian.Uint64(resp[qbclient.ResHeaderSize:])
	out := map[string]string{}
	for {
		resp := req(t, qbclient.NewRequest(cmap.ReqIterNext, binary.LittleEndian.AppendUint64(nil, h)))
		if st := cmapStatus(t, resp); st == cswire.ErrNoSections {
			break
		} else if st != cswire.OK {
			t.Fatalf("iter_next: %v", st)
		}
		key, err := cswire.GetName(resp, qbclient.ResHeaderSize)
		if err != nil {
			t.Fatal(err)
		}
		body := append(cmapName(key), binary.LittleEndian.AppendUint64(nil, 256)...)
		g := req(t, qbclient.NewRequest(cmap.ReqGet, body))
		if st := cmapStatus(t, g); st == cswire.ErrNotExist {
			continue // its connection closed since the iteration began
		} else if st != cswire.OK {
			t.Fatalf("get %s: %v", key, st)
		}
		n := binary.LittleEndian.Uint64(g[qbclient.ResHeaderSize:])
		typ := g[qbclient.ResHeaderSize+8]
		v := g[qbclient.ResHeaderSize+16 : qbclient.ResHeaderSize+16+int(n)]
		switch typ {
		case 11: // str
			out[key] = "str " + strings.TrimSuffix(string(v), "\x00")
		case 8: // u64
			out[key] = fmt.Sprintf("u64 %d", binary.LittleEndian.Uint64(v))
		case 6: // u32
			out[key] = fmt.Sprintf("u32 %d", binary.LittleEndian.Uint32(v))
		case 5: // i32
			out[key] = fmt.Sprintf("i32 %d", int32(binary.LittleEndian.Uint32(v)))
		default:
			t.Fatalf("key %s of type %d", key, typ)
		}
	}
	if st := cmapStatus(t, req(t, qbclient.NewRequest(cmap.ReqIterFinalize, binary.LittleEndian.AppendUint64(nil, h)))); st != cswire.OK {
		t.Fatalf("iter_finalize: %v", st)
	}
	return out
}

// statsGet gets a u64 key of the stats map (the current map must be it).
func statsGet(t *testing.T, req cmapRequester, key string) uint64 {
	t.Helper()
	g := req(t, qbclient.NewRequest(cmap.ReqGet, append(cmapName(key), binary.LittleEndian.AppendUint64(nil, 8)...)))
	if st := cmapStatus(t, g); st != cswire.OK {
		t.Fatalf("get %s: %v", key, st)
	}
	if typ := g[qbclient.ResHeaderSize+8]; typ != 8 {
		t.Fatalf("%s has type %d, want u64 (8)", key, typ)
	}
	return binary.LittleEndian.Uint64(g[qbclient.ResHeaderSize+16:])
}

// TestStatsMapShowsConnections reads cmap's stats map through a gateway
// whose cmap runs in its own process (in-process stats) and through a cmap
// instance that asks the gateway over the bus: the reading client's own
// connection is listed under its pid, and its requests are counted.
func TestStatsMapShowsConnections(t *testing.T) {
	eachTransport(t, testStatsMapShowsConnections)
}

func testStatsMapShowsConnections(t *testing.T, tr libqb.Transport) {
	e := newGatewayEnv(t, "cbst")
	nc, subjects, service, shm := e.nc, e.subjects, e.service, e.shm

	// The stats map never reaches the store: none is given, so that a
	// request that did would fail the test.
	svc := cmap.NewService(nil, bustest.Logger(t))
	subject := cmap.Subject(subjects, 1)
	gw, err := New(Config{
		Conn: nc, Subjects: subjects, Node: 1, Log: bustest.Logger(t), Admit: func(libqb.Creds) bool { return true },
		ShmDir: shm, Transport: tr,
		Routes: []Route{{Service: service, Component: cmap.ComponentName, Version: cmap.ComponentVersion, ServiceID: cswire.ServiceCmap,
			RequestIDs: cswire.RequestIDs(cswire.ServiceCmap)}},
		Colocated: map[string]Colocated{cmap.ComponentName: {Subject: subject, Open: func(c *libqb.Conn) (libqb.Session, error) {
			return svc.OpenConn(c, "test"), nil
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetStats(gw.StatsEntries)
	svc.SetStatsClear(cmap.StatsClear{IPC: gw.ClearStats})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gw.Run(ctx) }()
	go func() {
		done <- session.ServeComponent(ctx, nc, subjects, 1,
			loader.Component{Name: cmap.ComponentName, Version: cmap.ComponentVersion, Subject: subject}, svc, bustest.Logger(t))
	}()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("gateway or cmap: %v", err)
			}
		}
	})
	f := gatewayFixture{gw: gw, service: service, nc: nc, subjects: subjects}
	c := f.dialServed(t)
	overLibqb := func(t *testing.T, msg []byte) []byte {
		t.Helper()
		resp, err := c.Request(msg, 10*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		return resp
	}

	// The client's own connection: its pid, its command name (this test
	// binary's, as the kernel keeps it) and its requests so far.
	pid := os.Getpid()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	got := statsMap(t, overLibqb, "stats.ipcs")
	own := ""
	for k := range got {
		if p := fmt.Sprintf("stats.ipcs.service0.%d.", pid); strings.HasPrefix(k, p) && strings.HasSuffix(k, ".procname") {
			if own != "" {
				t.Fatalf("two connections of this process listed: %v", got)
			}
			own = strings.TrimSuffix(k, "procname")
		}
	}
	if own == "" {
		t.Fatalf("this process's connection is not listed:\n%v", got)
	}
	if want := "str " + strings.TrimSpace(string(comm)); got[own+"procname"] != want {
		t.Errorf("procname %q, want %q", got[own+"procname"], want)
	}
	if got["stats.ipcs.global.active"] != "u64 1" || got["stats.ipcs.global.closed"] != "u64 0" {
		t.Errorf("global counters: active %q closed %q, want u64 1 and u64 0", got["stats.ipcs.global.active"], got["stats.ipcs.global.closed"])
	}
	for _, k := range []string{"responses", "dispatched", "send_retries", "flow_control", "flow_control_count", "overload", "invalid_request", "queueing", "queued", "sent"} {
		if _, ok := got[own+k]; !ok {
			t.Errorf("no %s%s", own, k)
		}
	}
	// requests counts this connection's requests: a get of the counter
	// is counted before it is served, its response after.
	n := statsGet(t, overLibqb, own+"requests")
	if m := statsGet(t, overLibqb, own+"requests"); m != n+1 {
		t.Errorf("requests %d, then %d: want one more", n, m)
	}
	if r := statsGet(t, overLibqb, own+"responses"); r != n+1 {
		t.Errorf("responses %d after %d requests, want %d", r, n+2, n+1)
	}
	again := statsMap(t, overLibqb, own)
	if len(again) != 12 {
		t.Errorf("a connection's prefix lists %d keys, want 12: %v", len(again), again)
	}

	// A request of an id cmap does not have (corosync's cmap has ten) is
	// refused before the colocated cmap sees it, and counted.
	if st := cmapStatus(t, overLibqb(t, qbclient.NewRequest(10, nil))); st != cswire.ErrInvalidParam {
		t.Errorf("request id 10: %v, want CS_ERR_INVALID_PARAM", st)
	}
	if n := statsGet(t, overLibqb, own+"invalid_request"); n != 1 {
		t.Errorf("invalid_request %d after one request of an unknown id, want 1", n)
	}

	// The stats map is read-only; tracking it is not offered.
	if st := cmapStatus(t, overLibqb(t, qbclient.NewRequest(cmap.ReqSet, append(append(cmapName("stats.ipcs.global.active"),
		binary.LittleEndian.AppendUint64(nil, 8)...), append(binary.LittleEndian.AppendUint64(nil, 8), make([]byte, 8)...)...)))); st != cswire.ErrAccess {
		t.Errorf("set in the stats map: %v, want CS_ERR_ACCESS", st)
	}
	track := append(cmapName("stats.ipcs.global.active"), binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, uint64(cmap.TrackModify)), 1)...)
	if st := cmapStatus(t, overLibqb(t, qbclient.NewRequest(cmap.ReqTrackAdd, track))); st != cswire.ErrNotSupported {
		t.Errorf("track in the stats map: %v, want CS_ERR_NOT_SUPPORTED", st)
	}

	// stats.clear.ipc resets the counters, as corosync's does: the set
	// is counted before it clears, its response after; the next get is
	// the one request since.
	set := func(key string) cswire.Error {
		return cmapStatus(t, overLibqb(t, qbclient.NewRequest(cmap.ReqSet, append(append(cmapName(key),
			binary.LittleEndian.AppendUint64(nil, 1)...), append(binary.LittleEndian.AppendUint64(nil, 2), 1, 0, 0, 0, 0, 0, 0, 0)...))))
	}
	if st := set("stats.clear.ipc"); st != cswire.OK {
		t.Errorf("set stats.clear.ipc: %v", st)
	}
	if n, r := statsGet(t, overLibqb, own+"requests"), statsGet(t, overLibqb, own+"responses"); n != 1 || r != 2 {
		t.Errorf("after stats.clear.ipc: requests %d, responses %d; want 1 and 2", n, r)
	}
	if n := statsGet(t, overLibqb, own+"invalid_request"); n != 0 {
		t.Errorf("after stats.clear.ipc: invalid_request %d, want 0", n)
	}
	if st := set("stats.clear.nothing"); st != cswire.ErrNotSupported {
		t.Errorf("set stats.clear.nothing: %v, want CS_ERR_NOT_SUPPORTED", st)
	}

	// A cmap instance in another process asks the gateway over the bus.
	remote := cmap.NewService(nil, bustest.Logger(t))
	remote.SetStats(cmap.BusStats(nc, subjects, 1))
	rc := remote.OpenConn(nil, "remote")
	defer rc.Close()
	direct := func(t *testing.T, msg []byte) []byte { return rc.Request(context.Background(), msg) }
	viaBus := statsMap(t, direct, "stats.ipcs.service0.")
	if viaBus[own+"procname"] != got[own+"procname"] || viaBus[own+"requests"] == "" {
		t.Errorf("over the bus: %v", viaBus)
	}

	// Gone once closed.
	c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		after := statsMap(t, direct, "stats.ipcs")
		if _, ok := after[own+"procname"]; !ok && after["stats.ipcs.global.closed"] == "u64 1" && after["stats.ipcs.global.active"] == "u64 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the closed connection is still listed: %v", after)
		}
	}
}

// TestGatewayRefusesUnknownRequestIDs: a request whose id the route's
// service does not have — past its last, or negative — is answered as
// corosync's dispatcher answers it (a bare header, id 0,
// CS_ERR_INVALID_PARAM) without reaching the component, and counted in
// the connection's invalid_request; the connection goes on.
func TestGatewayRefusesUnknownRequestIDs(t *testing.T) {
	eachTransport(t, testGatewayRefusesUnknownRequestIDs)
}

func testGatewayRefusesUnknownRequestIDs(t *testing.T, tr libqb.Transport) {
	f := startGateway(t, tr, func(libqb.Creds) bool { return true })
	serveEcho(t, f.nc, f.subjects, 1)
	c := f.dialServed(t)
	for _, id := range []int32{echoRequestIDs, 1 << 20, -2} {
		resp, err := c.Request(qbclient.NewRequest(id, []byte("x")), 5*time.Second)
		if err != nil {
			t.Fatalf("request id %d: %v", id, err)
		}
		if len(resp) != qbclient.ResHeaderSize || binary.LittleEndian.Uint32(resp) != 0 ||
			qbclient.ResponseError(resp) != int32(cswire.ErrInvalidParam) {
			t.Errorf("request id %d answered % x; want a bare header, id 0, CS_ERR_INVALID_PARAM (7)", id, resp)
		}
	}
	// The last id the service has reaches it (echo answers CS_OK and the
	// body).
	resp, err := c.Request(qbclient.NewRequest(echoRequestIDs-1, []byte("y")), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if qbclient.ResponseError(resp) != int32(cswire.OK) || string(resp[qbclient.ResHeaderSize:]) != "y" {
		t.Errorf("request id %d answered % x, want echo's CS_OK and y", echoRequestIDs-1, resp)
	}
	want := func(st libqb.ConnStats) bool { return st.Requests == 4 && st.Responses == 4 && st.InvalidRequest == 3 }
	if st := onlyConn(t, f.gw, want); !want(st) {
		t.Errorf("counters %+v; want 4 requests and responses, 3 invalid", st)
	}
	if n := statsValue(t, f.gw, fmt.Sprintf("stats.ipcs.service0.%d.", os.Getpid()), "invalid_request"); n != 3 {
		t.Errorf("stats map's invalid_request %d, want 3", n)
	}
}

// A stats request over the bus whose prefix matches nothing is answered
// with an empty JSON array, as docs/subjects.md says the reply is, not
// JSON null (which it was until 3 Dec: `jq '.[]'` fails on it).
func TestBusStatsNothingIsAnEmptyArray(t *testing.T) {
	f := startGateway(t, libqb.TransportSocket, func(libqb.Creds) bool { return true })
	for prefix, want := range map[string]string{"nosuch.": "[]", "stats.ipcs.global.a": `[{"Key":"stats.ipcs.global.active"`} {
		var m *nats.Msg
		var err error
		// Until the gateway has subscribed.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			m, err = f.nc.Request(f.subjects.IPCStats(1), []byte(prefix), 10*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(m.Data), want) {
			t.Errorf("stats under %q: %s; want %s…", prefix, m.Data, want)
		}
	}
}
