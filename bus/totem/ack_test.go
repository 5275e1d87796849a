package totem_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// A member acks a proposal on the proposal's reply subject (the
// proposer's TotemAck), so that the acks of a round go to the proposer
// alone; a proposal without one (a node of before the ack subject, which
// reads acks on TotemMemb) is acked on TotemMemb, as it always was.
// Node 1's proposals are played by the test on node 1's bus, with
// proposal numbers node 1's own totem does not reach.
func TestAcksGoWhereTheProposalSays(t *testing.T) {
	c := harness.New(t, harness.Options{N: 3})
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	nc := c.Client(1)
	acks := func(subj string) <-chan totem.MembMsg {
		ch := make(chan totem.MembMsg, 64)
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			var msg totem.MembMsg
			if json.Unmarshal(m.Data, &msg) == nil && msg.Type == "ack" && msg.PID.N >= 1<<40 {
				ch <- msg
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		return ch
	}
	onMemb, onAck := acks(c.Subjects.TotemMemb()), acks(c.Subjects.TotemAck(1))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	propose := func(n uint64, reply string) {
		t.Helper()
		b, _ := json.Marshal(totem.MembMsg{Type: "propose", From: 1, PID: totem.PropID{Node: 1, N: n}, Members: []uint32{1, 2, 3}})
		if err := nc.PublishMsg(&nats.Msg{Subject: c.Subjects.TotemMemb(), Reply: reply, Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	// want collects the acks of proposal n from nodes 2 and 3 on ch,
	// and none of it on other.
	want := func(what string, n uint64, ch, other <-chan totem.MembMsg) {
		t.Helper()
		got := map[uint32]bool{}
		deadline := time.After(5 * time.Second)
		for len(got) < 2 {
			select {
			case m := <-ch:
				if m.PID.N == n {
					got[m.From] = true
				}
			case m := <-other:
				if m.PID.N == n {
					t.Fatalf("%s: node %d's ack of proposal %d came on the other subject", what, m.From, n)
				}
			case <-deadline:
				t.Fatalf("%s: acks of proposal %d from %v only", what, n, got)
			}
		}
	}
	propose(1<<40, "")
	want("a proposal without a reply subject", 1<<40, onMemb, onAck)
	propose(1<<40+1, c.Subjects.TotemAck(1))
	want("a proposal with node 1's ack subject", 1<<40+1, onAck, onMemb)
}
