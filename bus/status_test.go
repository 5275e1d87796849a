package bus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// Only the meta leader says what state each JetStream peer is in; every
// other server's own view says "unknown" (nats-server reports a follower's
// fellow followers "not current" for ever). A stopped peer is offline in
// the leader's view.
func TestPeerStatesComeFromTheMetaLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster: skipped in -short")
	}
	cl := bustest.StartCluster(t, 3)
	leaderOf := func() (bus.Status, []bus.Status) {
		var leader bus.Status
		var all []bus.Status
		for _, nd := range cl.Nodes {
			if nd == nil {
				continue
			}
			st, err := nd.Server.Status()
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, st)
			if st.PeersFrom != "" {
				leader = st
			}
		}
		return leader, all
	}
	eventually(t, "every peer current in the leader's view", func() error {
		leader, all := leaderOf()
		if leader.PeersFrom == "" {
			return fmt.Errorf("no server reports itself the meta leader")
		}
		if len(leader.Peers) != 3 {
			return fmt.Errorf("leader %s lists %d peers", leader.Server, len(leader.Peers))
		}
		for _, p := range leader.Peers {
			if p.State != bus.PeerCurrent || !p.Current || p.Offline {
				return fmt.Errorf("leader %s: %+v", leader.Server, p)
			}
		}
		for _, st := range all {
			if st.Server == leader.Server {
				continue
			}
			for _, p := range st.Peers {
				if p.State != bus.PeerUnknown || p.Current || p.Offline {
					return fmt.Errorf("follower %s claims to know %+v", st.Server, p)
				}
			}
		}
		return nil
	})
	leader, _ := leaderOf()
	victim := uint32(1)
	if id, _ := bus.NodeOfServer(leader.Server); id == 1 {
		victim = 2
	}
	cl.Stop(int(victim))
	eventually(t, "the stopped peer offline in the leader's view", func() error {
		leader, _ := leaderOf()
		for _, p := range leader.Peers {
			if p.Server == bus.ServerName(victim) {
				if p.State != bus.PeerOffline || !p.Offline {
					return fmt.Errorf("%+v", p)
				}
				return nil
			}
		}
		return fmt.Errorf("leader %q does not list %s", leader.Server, bus.ServerName(victim))
	})
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
