package totem

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/bustest"
)

// The sequencer sends its order record when the handler of the last
// queued payload runs (queueDrained): a lone message is ordered for every
// member at once, a burst shares one record. nats.go counts the message
// being handled as still pending, so the test is what queueDrained says
// inside real handlers: false while more wait behind, true for the last.
func TestQueueDrainedInsideTheHandler(t *testing.T) {
	c := bustest.StartCluster(t, 1)
	nc := c.Conn(1)

	release := make(chan struct{})
	type seen struct {
		n       string
		drained bool
	}
	got := make(chan seen, 3)
	sub, err := nc.Subscribe("queue.test", func(m *nats.Msg) {
		if string(m.Data) == "1" {
			<-release // hold the first until the others are queued behind it
		}
		got <- seen{string(m.Data), queueDrained(m.Sub)}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1", "2", "3"} {
		if err := nc.Publish("queue.test", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// All three are in the client once the subscription counts them: the
	// first in its handler, two behind it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if p, _, _ := sub.Pending(); p == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("three published messages never reached the subscription")
		}
	}
	close(release)
	want := []seen{{"1", false}, {"2", false}, {"3", true}}
	for _, w := range want {
		select {
		case s := <-got:
			if s != w {
				t.Errorf("message %s: queueDrained = %v, want %v", s.n, s.drained, w.drained)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %s not handled", w.n)
		}
	}

	// A lone message: nothing behind it, the record goes at once.
	if err := nc.Publish("queue.test", []byte("4")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if !s.drained {
			t.Error("a lone message: queueDrained = false; the sequencer would hold its order record until its next tick")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message 4 not handled")
	}
}
