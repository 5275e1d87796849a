package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
)

// echo answers each request with "<conn>:<n>:<msg>" and counts sessions.
type echo struct {
	mu     sync.Mutex
	open   int
	closed int
	refuse bool
}

type echoSession struct {
	e *echo
	c *Conn
	n int
}

func (e *echo) Open(c *Conn) (Session, error) {
	if e.refuse {
		return nil, cswire.ErrAccess
	}
	e.mu.Lock()
	e.open++
	e.mu.Unlock()
	return &echoSession{e: e, c: c}, nil
}

func (s *echoSession) Request(_ context.Context, msg []byte) []byte {
	s.n++
	if string(msg) == "event" {
		_ = s.c.SendEvent([]byte("ev:" + s.c.ID))
	}
	return fmt.Appendf(nil, "%s:%d:%s:%d", s.c.ID, s.n, msg, s.c.UID)
}

func (s *echoSession) Close() {
	s.e.mu.Lock()
	s.e.closed++
	s.e.mu.Unlock()
}

func (e *echo) counts() (int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.open, e.closed
}

func TestSessionLifecycle(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	h := &echo{}
	srv := NewServer(nc, "t.comp", h, bustest.Logger(t))
	srv.GatewayTimeout = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Run(ctx) }()
	// The component's open function, served here without a loader.
	if _, err := nc.Subscribe("t.comp.open", func(m *nats.Msg) { _ = m.Respond(srv.Open(m)) }); err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
		m.Subject = "t.comp.open"
		return cl.Conn(1).RequestMsgWithContext(ctx, m)
	}

	gw := cl.Conn(1)
	events, err := gw.SubscribeSync("t.gw.events.c1")
	if err != nil {
		t.Fatal(err)
	}
	var c *Client
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err = Open(ctx, gw, open, "c1", "t.gw.alive", "t.gw.events.c1", Creds{PID: 1, UID: 42, GID: 7})
		if err == nil || time.Now().After(deadline) || !errors.Is(err, cswire.ErrTryAgain) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the server's subscription is not up yet
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, msg := range []string{"a", "b", "event"} {
		got, err := c.Request(ctx, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("c1:%d:%s:42", i+1, msg); string(got) != want {
			t.Errorf("reply %q, want %q", got, want)
		}
	}
	ev, err := events.NextMsg(2 * time.Second)
	if err != nil || string(ev.Data) != "ev:c1" {
		t.Fatalf("event %v, %v", ev, err)
	}

	c.Close()
	waitFor(t, "close", func() bool { _, closed := h.counts(); return closed == 1 })
	if _, err := c.Request(ctx, []byte("x")); !errors.Is(err, ErrSessionGone) {
		t.Errorf("request after close: %v, want ErrSessionGone", err)
	}

	// A gateway that goes silent loses its sessions.
	c2, err := Open(ctx, gw, open, "c2", "t.gw.alive", "t.gw.events.c2", Creds{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "expiry of a silent gateway's session", func() bool { _, closed := h.counts(); return closed == 2 })
	if _, err := c2.Request(ctx, []byte("x")); !errors.Is(err, ErrSessionGone) {
		t.Errorf("request after expiry: %v, want ErrSessionGone", err)
	}
	// and is forgotten: an instance without sessions follows no gateway
	// (nothing wakes it to look for silent ones).
	waitFor(t, "the silent gateway forgotten", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.alive) == 0 && len(srv.aliveSub) == 0
	})

	h.refuse = true
	if _, err := Open(ctx, gw, open, "c3", "t.gw.alive", "t.gw.events.c3", Creds{}); !errors.Is(err, cswire.ErrAccess) {
		t.Errorf("refused open: %v, want CS_ERR_ACCESS", err)
	}
}

// Probe tells the ids an instance no longer knows, and ErrNoInstance when
// no instance serves the session subject any more.
func TestProbe(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	srv := NewServer(nc, "t.comp", &echo{}, bustest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	if _, err := nc.Subscribe("t.comp.open", func(m *nats.Msg) { _ = m.Respond(srv.Open(m)) }); err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
		m.Subject = "t.comp.open"
		return nc.RequestMsgWithContext(ctx, m)
	}
	c, err := Open(ctx, nc, open, "c1", "t.gw.alive", "t.gw.events.c1", Creds{})
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	waitFor(t, "a probe answered", func() bool {
		gone, err = Probe(ctx, nc, c.Session(), []string{"c1", "c9"})
		return err == nil
	})
	if len(gone) != 1 || gone[0] != "c9" {
		t.Errorf("probe of a live instance: gone %v, want [c9]", gone)
	}
	cancel()
	<-done
	if _, err = Probe(context.Background(), nc, c.Session(), []string{"c1", "c9"}); !errors.Is(err, ErrNoInstance) {
		t.Errorf("probe of a gone instance: %v, want ErrNoInstance", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A Settler's answers carry the position its Settle returns, and none
// when it returns the zero position; a plain Handler's carry none.
func TestSettlerAnswersCarryThePosition(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	var next objdb.Position
	var mu sync.Mutex
	settle := func(context.Context) (objdb.Position, error) {
		mu.Lock()
		defer mu.Unlock()
		p := next
		next = objdb.Position{}
		return p, nil
	}
	for _, tc := range []struct {
		name    string
		h       Handler
		set     objdb.Position
		settled string
	}{
		{"plain handler", &echo{}, objdb.Position{}, ""},
		{"settler, no writes", Settling(&echo{}, settle), objdb.Position{}, ""},
		{"settler after writes", Settling(&echo{}, settle), objdb.Position{Epoch: 0xab, Seq: 7, Rev: 3}, "ab.7.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject := "t.settle." + fmt.Sprint(len(tc.name))
			srv := NewServer(nc, subject, tc.h, bustest.Logger(t))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = srv.Run(ctx) }()
			sub, err := nc.Subscribe(subject+".open", func(m *nats.Msg) { _ = m.Respond(srv.Open(m)) })
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			open := func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
				m.Subject = subject + ".open"
				return nc.RequestMsgWithContext(ctx, m)
			}
			c, err := Open(ctx, nc, open, "c1", "t.gw.alive", "t.gw.events.c1", Creds{PID: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			mu.Lock()
			next = tc.set
			mu.Unlock()
			resp, settled, err := c.RequestSettled(ctx, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if string(resp) != "c1:1:x:0" || settled != tc.settled {
				t.Errorf("answered %q settled at %q, want %q at %q", resp, settled, "c1:1:x:0", tc.settled)
			}
		})
	}
}
