package objdb

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus/bustest"
)

// waitValue polls a store's copy until key has want.
func waitValue(t *testing.T, s *Store, key, want string) {
	t.Helper()
	var v Value
	var err error
	until(t, 20*time.Second, func() bool {
		v, err = s.Get(key)
		return err == nil && v.String() == want
	}, func() string { return fmt.Sprintf("node %d: %s = %v (%v), want %s", s.Node(), key, v, err, want) })
}

// setEventually writes key through s, retrying what the cluster refuses
// for want of a quorum (ErrTryAgain: its stream electing a leader after a
// node stopped) for up to a minute — a full test run on the loaded 2-CPU
// machine once took more than 30 s to elect; any other error fails at
// once.
func setEventually(t *testing.T, s *Store, key string, v Value, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.Set(context.Background(), key, v)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrTryAgain) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func TestThreeNodes(t *testing.T) {
	t.Parallel() // a cluster of its own, mostly waiting on it (docs/testing.md)
	if testing.Short() {
		t.Skip("three-node JetStream cluster: skipped in -short")
	}
	cl := bustest.StartCluster(t, 3)
	ctx := context.Background()
	startKeeper(t, cl.Conn(1), 1, 3)
	startKeeper(t, cl.Conn(3), 3, 3)
	s1 := openStore(t, cl.Conn(1), 1, 3)
	s3 := openStore(t, cl.Conn(3), 3, 3)

	// A write acknowledged on node 1 is read on node 3.
	if err := s1.Set(ctx, "cluster.greeting", mustValue(t, String, "hello")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, s3, "cluster.greeting", "hello")

	// Node-local keys stay with their node.
	if err := s1.Set(ctx, "runtime.mine", mustValue(t, Uint8, "1")); err != nil {
		t.Fatal(err)
	}
	if err := s3.Set(ctx, "runtime.mine", mustValue(t, Uint8, "3")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, s1, "runtime.mine", "1")
	waitValue(t, s3, "runtime.mine", "3")

	// Acknowledged writes survive the loss of any one node.
	var acked []string
	for i := range 50 {
		k := fmt.Sprintf("cluster.acked.%d", i)
		if err := s1.Set(ctx, k, mustValue(t, Uint32, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, k)
	}
	s1.Close()
	cl.Stop(1)
	for i, k := range acked {
		waitValue(t, s3, k, fmt.Sprint(i))
	}
	// The two survivors still have a quorum: writes go on, once the
	// bucket's stream has a leader among them (a stopped server steps its
	// leaders down; the survivors elect within seconds, more on a loaded
	// machine: one write with a 3 s timeout right after the stop failed
	// now and then).
	setEventually(t, s3, "cluster.after", mustValue(t, Uint8, "7"), "write with two of three nodes")
	// The copy follows the stream through the leader change that losing
	// node 1 caused; let it catch up before node 3 loses its quorum too.
	waitValue(t, s3, "cluster.after", "7")

	// Node 3 alone: reads are served (perhaps stale), writes fail
	// clearly and change nothing.
	cl.Stop(2)
	err := s3.Set(ctx, "cluster.lonely", mustValue(t, Uint8, "1"))
	if !errors.Is(err, ErrTryAgain) {
		t.Fatalf("write on an isolated node: %v, want ErrTryAgain", err)
	}
	t.Logf("isolated write refused: %v", err)
	waitValue(t, s3, "cluster.after", "7")

	// The others come back; node 3 catches up and writes again.
	cl.Start(1)
	cl.Start(2)
	cl.WaitFormed(30 * time.Second)
	startKeeper(t, cl.Conn(2), 2, 3)
	s2 := openStore(t, cl.Conn(2), 2, 3)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = s2.Set(ctx, "cluster.healed", mustValue(t, Uint8, "1"))
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("write after heal: %v", err)
	}
	waitValue(t, s3, "cluster.healed", "1")
	if err := s3.Set(ctx, "cluster.lonely", mustValue(t, Uint8, "2")); err != nil {
		t.Fatalf("write on node 3 after heal: %v", err)
	}
	waitValue(t, s2, "cluster.lonely", "2")
	if _, err := s2.Get("cluster.acked.49"); err != nil {
		t.Errorf("an acknowledged write was lost: %v", err)
	}
}

// TestMajorityColdStart: a fresh three-node cluster of which only two
// nodes ever start creates its R3 bucket and serves cluster keys, as
// corosync starts and is quorate with two of three; the third, started
// later, reads what they wrote.
func TestMajorityColdStart(t *testing.T) {
	t.Parallel() // a cluster of its own, mostly waiting on it (docs/testing.md)
	if testing.Short() {
		t.Skip("three-node JetStream cluster: skipped in -short")
	}
	cl := bustest.StartClusterWith(t, 3, bustest.Options{Absent: []int{3}})
	ctx := context.Background()
	startKeeper(t, cl.Conn(1), 1, 3)
	startKeeper(t, cl.Conn(2), 2, 3)
	s1 := openStore(t, cl.Conn(1), 1, 3)
	s2 := openStore(t, cl.Conn(2), 2, 3)
	if err := s1.Set(ctx, "cluster.cold", mustValue(t, String, "two of three")); err != nil {
		t.Fatalf("a cluster write with two of three nodes started: %v", err)
	}
	waitValue(t, s2, "cluster.cold", "two of three")
	if err := s2.Set(ctx, "runtime.mine", mustValue(t, Uint8, "2")); err != nil {
		t.Fatal(err)
	}

	cl.Start(3)
	startKeeper(t, cl.Conn(3), 3, 3)
	s3 := openStore(t, cl.Conn(3), 3, 3)
	waitValue(t, s3, "cluster.cold", "two of three")
	if _, err := s3.Get("runtime.mine"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("node 3 reads node 2's own key: %v", err)
	}

	// The bucket, created with the two servers there were, is raised to
	// the three configured once the third has joined; then it survives
	// the loss of either first node as any R3 bucket does.
	js, err := jetstream.New(cl.Conn(3))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Raised, and caught up: a replica just added has an empty log,
		// and JetStream counts no empty log's vote towards a leader.
		si, err := js.Stream(ctx, "KV_objdb_test")
		if err == nil && si.CachedInfo().Config.Replicas == 3 && raisedAndCurrent(si.CachedInfo().Cluster) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket was not raised to R3 with three nodes running: %v %+v", err, si)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s1.Close()
	cl.Stop(1)
	// The stream may have lost its leader: writes resume once nodes 2
	// and 3 have elected one (never, were the bucket still R2).
	setEventually(t, s3, "cluster.after", mustValue(t, Uint8, "3"), "a cluster write on nodes 2 and 3 once node 1 stopped")
	waitValue(t, s2, "cluster.after", "3")
	waitValue(t, s3, "cluster.cold", "two of three")
}

// raisedAndCurrent reports whether a stream has a leader and two
// followers, both current.
func raisedAndCurrent(ci *jetstream.ClusterInfo) bool {
	if ci == nil || ci.Leader == "" || len(ci.Replicas) != 2 {
		return false
	}
	for _, r := range ci.Replicas {
		if !r.Current || r.Lag != 0 {
			return false
		}
	}
	return true
}
