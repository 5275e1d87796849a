package loader_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/loader"
)

// TestQuietAtRest: an instance whose heartbeat is an hour away still
// announces a change of its counters (within StatsEvery), and a client
// whose hold interval is an hour away restates a new reference and a
// release at once — what changes is told when it changes, only the
// liveness heartbeats wait for their period.
func TestQuietAtRest(t *testing.T) {
	_, nc, subjects := loaderNode(t, "node1")

	anns := decoded[loader.Announcement](t, nc, subjects.LcrAnnounce("node1", "quiet"))
	holds := decoded[loader.HoldMsg](t, nc, subjects.LcrHold(1))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		comp := loader.Component{Name: "quiet", Version: 1, Interval: time.Hour, StatsEvery: 20 * time.Millisecond,
			Handler: func(_ context.Context, _ string, m *nats.Msg) ([]byte, error) { return m.Data, nil }}
		served <- comp.Serve(ctx, nc, subjects, 1)
	}()
	defer func() {
		cancel()
		<-served
	}()
	next := func(what string) loader.Announcement {
		t.Helper()
		select {
		case a := <-anns:
			return a
		case <-time.After(30 * time.Second):
			t.Fatalf("no announcement: %s", what)
			return loader.Announcement{}
		}
	}
	if a := next("the first, once serving"); a.State != loader.Serving || a.IntervalMS != time.Hour.Milliseconds() {
		t.Fatalf("first announcement %+v, want serving with interval_ms of an hour", a)
	}

	waitFor(t, "the loader to know the instance", 30*time.Second, func() bool {
		for _, ci := range list(t, nc, subjects).Components {
			if ci.Name == "quiet" && len(ci.Instances) == 1 {
				return true
			}
		}
		return false
	})
	c, err := loader.NewClient(loader.ClientConfig{Conn: nc, Subjects: subjects, Node: 1, HoldInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Reference(context.Background(), "quiet", 1)
	if err != nil {
		t.Fatal(err)
	}
	// The hour's heartbeats fall on the wall clock's hours (bus/beat): one
	// may come during the test, saying what was held then. A change must
	// be restated within the wait, an hour before its period.
	waitHold := func(what string, want func(loader.HoldMsg) bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case m := <-holds:
				if m.IntervalMS != time.Hour.Milliseconds() {
					t.Fatalf("restatement %+v: want interval_ms of an hour", m)
				}
				if want(m) {
					return
				}
			case <-deadline:
				t.Fatalf("no hold restatement: %s", what)
			}
		}
	}
	waitHold("after the reference", func(m loader.HoldMsg) bool {
		return len(m.Refs) == 1 && m.Refs[0].Name == "quiet" && m.Refs[0].Count == 1
	})

	if _, err := c.Request(context.Background(), h, "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for {
		a := next("after a request changed the counters")
		if st := a.Stats["echo"]; st.RX == 1 && st.TX == 1 {
			break
		}
	}
	if err := c.Release(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	waitHold("after the release", func(m loader.HoldMsg) bool { return len(m.Refs) == 0 })
}

// decoded subscribes to subject for the test's life and hands on each
// message decoded from JSON (what does not decode is skipped).
func decoded[T any](t *testing.T, nc *nats.Conn, subject string) <-chan T {
	t.Helper()
	ch := make(chan T, 64)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var v T
		if json.Unmarshal(m.Data, &v) == nil {
			ch <- v
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// TestCountersMovedAtRest: an instance whose own counters (Counters) say
// when they move (CountersMoved) does not look at them on a timer at
// rest, yet announces a change of them once told, and a request's at
// once, however long it rested.
func TestCountersMovedAtRest(t *testing.T) {
	_, nc, subjects := loaderNode(t, "node1")
	anns := decoded[loader.Announcement](t, nc, subjects.LcrAnnounce("node1", "told"))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var own atomic.Uint64
	moved := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		comp := loader.Component{Name: "told", Version: 1, Interval: time.Hour, StatsEvery: 20 * time.Millisecond,
			Handler:       func(_ context.Context, _ string, m *nats.Msg) ([]byte, error) { return m.Data, nil },
			Counters:      func() map[string]loader.FnStats { return map[string]loader.FnStats{"0": {RX: own.Load()}} },
			CountersMoved: moved}
		served <- comp.Serve(ctx, nc, subjects, 1)
	}()
	defer func() {
		cancel()
		<-served
	}()
	waitAnn := func(what string, ok func(loader.Announcement) bool) loader.Announcement {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case a := <-anns:
				if ok(a) {
					return a
				}
			case <-deadline:
				t.Fatalf("no announcement %s", what)
			}
		}
	}
	a := waitAnn("once serving", func(a loader.Announcement) bool { return a.State == loader.Serving })
	// Each change after ten StatsEvery without one: the instance has
	// stopped looking by then (were it still looking, the test would
	// pass without checking what it is for, never fail for it).
	rest := func() { time.Sleep(10 * 20 * time.Millisecond) }
	rest()
	own.Add(1)
	moved <- struct{}{}
	waitAnn("after the component's own counter moved", func(a loader.Announcement) bool { return a.Stats["0"].RX == 1 })
	for i := uint64(1); i <= 2; i++ {
		rest()
		if err := nc.Publish(a.Subject+".echo", nil); err != nil { // counted as rx
			t.Fatal(err)
		}
		waitAnn("after a request", func(a loader.Announcement) bool { return a.Stats["echo"].RX == i })
	}
}
