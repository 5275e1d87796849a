package objdb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// TestLoneBusRestartKeepsNodeKeys: node 2 of a two-node cluster is left
// alone (node 1, which holds the one-replica bucket, stops), writes node
// keys alone, and then its bus restarts (LCR's live replacement of the
// bus layer, or the supervisor restarting a crashed bus): a new keeper,
// which cannot read the node's stored keys — JetStream has no meta leader
// and the bucket's server is gone. corosync's cmap is the node's own: a
// lone node reads and writes its keys whatever the others do.
//
// The copies that ran across the restart (the objdb layer's, the
// gateway's) follow the new keeper and hand it the node's keys they hold,
// so that a write after the restart is read by every copy and confirmed,
// a copy opened after it (a restarted gateway) reads every key the node
// had, and all of it is stored once JetStream takes writes again — over
// the older value the bucket held, which must not come back.
//
// Before, the copies refused a new keeper that had not loaded: writes
// after the restart were never confirmed (Settle failed with
// ErrTryAgain, and a copy's 8193rd unconfirmed write would have), the
// other copy never read them, and a copy opened after the restart read
// only them (the keys written before were absent).
func TestLoneBusRestartKeepsNodeKeys(t *testing.T) {
	t.Parallel() // a cluster of its own, mostly waiting on it (docs/testing.md)
	if testing.Short() {
		t.Skip("two-node JetStream cluster: skipped in -short")
	}
	cl := bustest.StartCluster(t, 2)
	ctx := context.Background()
	// The bucket on node 1, the node that leaves: node 2 alone cannot
	// read it at all.
	js, err := jetstream.New(cl.Conn(2))
	if err != nil {
		t.Fatal(err)
	}
	kv := createBucket(t, js, jetstream.KeyValueConfig{Bucket: "objdb_test", History: History, Replicas: 1,
		Storage: jetstream.FileStorage, Placement: &jetstream.Placement{Tags: []string{bustest.ServerTag(1)}}})
	startKeeper(t, cl.Conn(1), 1, 1)
	stopKeeper := startKeeper(t, cl.Conn(2), 2, 1)
	a := openStore(t, cl.Conn(2), 2, 1)
	b := openStore(t, cl.Conn(2), 2, 1)

	// runtime.lone = 1 stored in JetStream while both nodes run.
	set := func(s *Store, key, v string) {
		t.Helper()
		if err := s.Set(ctx, key, mustValue(t, String, v)); err != nil {
			t.Fatalf("set %s = %s: %v", key, v, err)
		}
	}
	set(a, "runtime.lone", "1")
	stored := func(key string) string {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		e, err := kv.Get(gctx, kvKey(nodeScope(2), key))
		if err != nil {
			return fmt.Sprintf("(%v)", err)
		}
		v, err := decodeValue(e.Value())
		if err != nil {
			return fmt.Sprintf("(%v)", err)
		}
		return v.String()
	}
	until(t, 20*time.Second, func() bool { return stored("runtime.lone") == "1" },
		func() string { return "runtime.lone = 1 is not stored: " + stored("runtime.lone") })

	// Node 1 leaves; node 2 writes alone: in its keeper and copies only.
	cl.Stop(1)
	set(a, "runtime.lone", "2")
	set(a, "runtime.alone", "1")
	waitValue(t, b, "runtime.alone", "1")
	waitValue(t, b, "runtime.lone", "2")

	// The bus restarts: a new keeper, JetStream unreadable.
	stopKeeper()
	startKeeperWith(t, cl.Conn(2), KeeperConfig{Node: 2, Replicas: 1})
	set(a, "runtime.after", "1")
	waitValue(t, b, "runtime.after", "1")
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.Settle(sctx); err != nil {
		t.Errorf("a node-key write after the lone node's bus restarted is not confirmed: %v (copy %+v)", err, a.State())
	}

	// A copy opened now (a gateway restarted after the bus) reads every
	// key the node had.
	subjects, _ := bus.NewSubjects("corobus.test")
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	defer ocancel()
	c, err := OpenStore(octx, cl.Conn(2), StoreConfig{Bucket: "objdb_test", Replicas: 1, Node: 2, Subjects: subjects,
		Log: bustest.Logger(t).With("copy", "after"), WriteTimeout: 3 * time.Second, FeedTimeout: 400 * time.Millisecond,
		ClusterWait: 2 * time.Second, Bind: true})
	if err != nil {
		t.Fatalf("a copy opened after the bus restarted: %v", err)
	}
	t.Cleanup(c.Close)
	want := map[string]string{"runtime.lone": "2", "runtime.alone": "1", "runtime.after": "1"}
	for _, s := range []*Store{a, b, c} {
		for k, v := range want {
			waitValue(t, s, k, v)
		}
	}
	for _, s := range []*Store{a, b, c} {
		until(t, 10*time.Second, func() bool { st := s.State(); return st.NodeFeed.Current && st.Pending == 0 },
			func() string { return fmt.Sprintf("a copy's node feed is not current: %+v", s.State()) })
	}

	// Node 1 back: what node 2 wrote alone is stored, over the value the
	// bucket held; no copy reads the older value again.
	cl.Start(1)
	cl.WaitFormed(30 * time.Second)
	for k, v := range want {
		until(t, time.Minute, func() bool { return stored(k) == v },
			func() string { return fmt.Sprintf("%s stored as %s, want %s", k, stored(k), v) })
	}
	// The keeper loads the stored keys: runtime.lone = 1 stays under the
	// value handed over.
	var probe syncReply
	until(t, time.Minute, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		probe, err = c.askKeeper(pctx, syncRequest{Writer: c.writer, Snapshot: true, After: "\xff"})
		return err == nil && probe.Loaded
	}, func() string {
		return fmt.Sprintf("the new keeper has not loaded the stored keys: %+v, %v", probe, err)
	})
	for _, s := range []*Store{a, b, c} {
		if _, err := s.Settle(ctx); err != nil {
			t.Errorf("a copy does not settle once node 1 is back: %v", err)
		}
		for k, v := range want {
			if got, err := s.Get(k); err != nil || got.String() != v {
				t.Errorf("%s once node 1 is back: %v (%v), want %s", k, got, err, v)
			}
		}
	}
}
