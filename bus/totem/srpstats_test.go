package totem_test

import (
	"context"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// The counters named after corosync's stats.srp.* count what they say: a
// node's multicasts (mcast_tx) are received by the other (mcast_rx), rings
// installed are operational_entered, and a view change passes through
// gather and recovery.
func TestSRPStatsCount(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	var b recorder
	ca := newClient(t, c, 1, totem.ClientOptions{Service: "alpha"})
	newClient(t, c, 2, totem.ClientOptions{Service: "alpha", OnDeliver: b.on})
	status := func(id int) totem.Status {
		t.Helper()
		st, err := totem.FetchStatus(c.Client(id), c.Subjects, uint32(id), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before1, before2 := status(1), status(2)
	const n = 10
	for i := range n {
		if _, err := ca.Mcast(context.Background(), "alpha", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "node 2's deliveries", func() bool {
		got := 0
		for _, d := range b.snapshot() {
			if d.Message != nil {
				got++
			}
		}
		return got == n
	})
	s1, s2 := status(1), status(2)
	if d := s1.SRP.McastTx - before1.SRP.McastTx; d < n {
		t.Errorf("node 1 multicast %d messages, mcast_tx grew by %d", n, d)
	}
	if d := s2.SRP.McastRx - before2.SRP.McastRx; d < n {
		t.Errorf("node 2 received %d messages, mcast_rx grew by %d", n, d)
	}
	for _, st := range []totem.Status{s1, s2} {
		if st.SRP.OperationalEntered != st.Views || st.Views == 0 {
			t.Errorf("node %d: operational_entered %d, %d views", st.Node, st.SRP.OperationalEntered, st.Views)
		}
		if st.SRP.RecoveryEntered == 0 {
			t.Errorf("node %d installed a ring without recovery_entered", st.Node)
		}
	}

	// stats.clear.totem: every counter from zero again.
	if _, err := c.Client(2).Request(c.Subjects.TotemStatsClear(2), nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := status(2); st.SRP != (totem.SRPStats{}) || st.Views == 0 {
		t.Errorf("after a clear: %+v, %d views", st.SRP, st.Views)
	}

	// A view change: node 1 gathers, recovers, installs once more.
	c.Kill(2)
	c.WaitView([]int{1}, 10*time.Second)
	after := status(1)
	if after.SRP.GatherEntered <= s1.SRP.GatherEntered || after.SRP.RecoveryEntered <= s1.SRP.RecoveryEntered ||
		after.SRP.OperationalEntered <= s1.SRP.OperationalEntered {
		t.Errorf("after a view change: %+v, before %+v", after.SRP, s1.SRP)
	}
}
