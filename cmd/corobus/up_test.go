package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/services/cfg"
)

// The bus's GODEBUG sets a schedtrace the runtime takes (an int32 number
// of milliseconds: a larger one is ignored, and the monitor thread would
// sleep deeply again), and leaves the user's own settings after it, where
// they win.
func TestBusGodebug(t *testing.T) {
	for _, tc := range []struct{ user, want string }{
		{"", "GODEBUG=schedtrace=2147483647"},
		{"gctrace=1", "GODEBUG=schedtrace=2147483647,gctrace=1"},
		{"schedtrace=1000,scheddetail=1", "GODEBUG=schedtrace=2147483647,schedtrace=1000,scheddetail=1"},
	} {
		got := busGodebug(tc.user)
		if got != tc.want {
			t.Errorf("busGodebug(%q) = %q, want %q", tc.user, got, tc.want)
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(got, "GODEBUG="), ",")
		v, ok := strings.CutPrefix(first, "schedtrace=")
		if !ok {
			t.Fatalf("busGodebug(%q) = %q: no schedtrace first", tc.user, got)
		}
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n <= 0 {
			t.Errorf("schedtrace=%s: the runtime takes a positive int32 (%v)", v, err)
		}
	}
}

// A request on the node's shutdown subject that is not a stop request is
// refused at once (micro's error headers, code 400, and a StopReply with
// the reason) and the node keeps running; a stop request still stops it
// with its exit status. Until 3 Dec anything at all there (garbage, an
// empty message) was acknowledged and stopped the node.
func TestMalformedNodeShutdownIsRefused(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	subjects, err := bus.NewSubjects(bus.DefaultPrefix(cl.Name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan int, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveShutdown(ctx, cl.AdminURL(1, ""), subjects, 1, bustest.Logger(t), nil, func(exit int) { stopped <- exit })
	}()
	defer func() { cancel(); <-done }()
	nc := cl.Conn(1)
	request := func(data []byte) *nats.Msg {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			m, err := nc.Request(subjects.NodeShutdown(1), data, 10*time.Second)
			if err == nil {
				return m
			}
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				t.Fatalf("%q: %v", data, err)
			}
		}
	}
	for _, bad := range [][]byte{[]byte("garbage"), nil, []byte(`{"exit":"soon"}`)} {
		m := request(bad)
		var rep cfg.StopReply
		_ = json.Unmarshal(m.Data, &rep)
		if m.Header.Get(micro.ErrorCodeHeader) != "400" || m.Header.Get(micro.ErrorHeader) == "" || rep.OK || rep.Error == "" {
			t.Errorf("%q: answered %q with error %q, code %q; want refused (code 400)", bad, m.Data, m.Header.Get(micro.ErrorHeader),
				m.Header.Get(micro.ErrorCodeHeader))
		}
		select {
		case exit := <-stopped:
			t.Fatalf("%q stopped the node (exit %d)", bad, exit)
		default:
		}
	}
	good, _ := json.Marshal(cfg.StopRequest{Reason: "test", Exit: 3})
	m := request(good)
	var rep cfg.StopReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || !rep.OK || m.Header.Get(micro.ErrorHeader) != "" {
		t.Fatalf("a stop request: answered %q (error %q)", m.Data, m.Header.Get(micro.ErrorHeader))
	}
	if exit := <-stopped; exit != 3 {
		t.Errorf("stopped with exit %d, want 3", exit)
	}
}
