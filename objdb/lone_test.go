package objdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// TestLoneSurvivorOpensItsCopy: a two-node cluster (a JetStream meta group
// of two, as two_node's) whose one-replica bucket is put on purpose on the
// node that leaves, then on the one that stays. Node 1 leaves (in
// tests/quorum TestConfigVersionLoneOlderNodeStops it stops on seeing a
// newer totem.config_version); a copy of node 2 opened afterwards — its
// gateway's, its objdb layer's — serves node 2's keys from its keeper,
// which needs no JetStream, as corosync serves a lone node's cmap. The
// cluster keys read as absent meanwhile and the copy says it is behind;
// once node 1 is back they load, tracked, and nothing is lost.
//
// With the bucket on the node that leaves, JetStream does not even find
// the bucket (no meta leader), and the copy opened after ClusterWait
// before this test was written. With the bucket on node 2 it finds it —
// the stream's leader is node 2's own server — but cannot make the
// consumer that loads the cluster keys (that needs the meta leader), and
// OpenStore waited for that load for ever: it failed here when its
// context ended, 30 s, and in a cluster the node's gateway never served
// its clients.
func TestLoneSurvivorOpensItsCopy(t *testing.T) {
	t.Parallel() // a cluster of its own, mostly waiting on it (docs/testing.md)
	if testing.Short() {
		t.Skip("two-node JetStream cluster: skipped in -short")
	}
	for _, tc := range []struct {
		name string
		on   int // the node whose server holds the bucket
	}{
		{"bucket on the node that leaves", 1},
		{"bucket on the node that stays", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case a cluster of its own
			cl := bustest.StartCluster(t, 2)
			ctx := context.Background()
			// The bucket as a keeper makes it (openBucket binds it as it
			// is), placed by the server's tag rather than where
			// JetStream would put it.
			js, err := jetstream.New(cl.Conn(1))
			if err != nil {
				t.Fatal(err)
			}
			kv := createBucket(t, js, jetstream.KeyValueConfig{Bucket: "objdb_test", History: History, Replicas: 1,
				Storage: jetstream.FileStorage, Placement: &jetstream.Placement{Tags: []string{bustest.ServerTag(tc.on)}}})
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ci := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster; ci == nil || ci.Leader != bus.ServerName(uint32(tc.on)) {
				t.Fatalf("the bucket was not placed on node %d: %+v", tc.on, ci)
			}
			startKeeper(t, cl.Conn(1), 1, 1)
			startKeeper(t, cl.Conn(2), 2, 1)
			s1 := openStore(t, cl.Conn(1), 1, 1)
			s2 := openStore(t, cl.Conn(2), 2, 1)
			before(t, s1, s2)

			s1.Close()
			cl.Stop(1)
			s, log := openAlone(t, cl.Conn(2), 2, 1, s2)

			cl.Start(1)
			cl.WaitFormed(30 * time.Second)
			back(t, s, log)
		})
	}
}

// TestLastOfThreeOpensItsCopy: a three-node cluster, its bucket R3; nodes
// 1 and 2 stop. Node 3's server holds a replica of the bucket's stream,
// which has no leader any more, and answers lookups of it from that
// replica once it counts it leaderless (some seconds); the consumer that
// would load the cluster keys needs the meta leader. A copy of node 3
// opened then served nothing before: OpenStore waited for the load for
// ever. Now it opens with node 3's keys after ClusterWait, and loads the
// cluster keys once nodes 1 and 2 are back.
func TestLastOfThreeOpensItsCopy(t *testing.T) {
	t.Parallel() // a cluster of its own, mostly waiting on it (docs/testing.md)
	if testing.Short() {
		t.Skip("three-node JetStream cluster: skipped in -short")
	}
	cl := bustest.StartCluster(t, 3)
	for id := 1; id <= 3; id++ {
		startKeeper(t, cl.Conn(id), uint32(id), 3)
	}
	s1 := openStore(t, cl.Conn(1), 1, 3)
	s3 := openStore(t, cl.Conn(3), 3, 3)
	before(t, s1, s3)

	s1.Close()
	cl.Stop(1)
	cl.Stop(2)
	// The state this test is about: node 3 finds the bucket, whose stream
	// has no leader. Until its server counts the stream leaderless nobody
	// answers, and a copy opens without the bucket (as it did before).
	js, err := jetstream.New(cl.Conn(3))
	if err != nil {
		t.Fatal(err)
	}
	var lookup error
	var leader string
	until(t, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var stream jetstream.Stream
		stream, lookup = js.Stream(ctx, "KV_objdb_test")
		if lookup != nil {
			return false
		}
		leader = "-"
		if ci := stream.CachedInfo().Cluster; ci != nil {
			leader = ci.Leader
		}
		return leader == ""
	}, func() string {
		return fmt.Sprintf("node 3 does not answer a lookup of the leaderless bucket: %v (leader %q)", lookup, leader)
	})
	s, log := openAlone(t, cl.Conn(3), 3, 3, s3)

	cl.Start(1)
	cl.Start(2)
	cl.WaitFormed(30 * time.Second)
	back(t, s, log)
}

// before writes a cluster key through a (cluster.before = both) and a node
// key of b's node through b (runtime.survivor), and waits until b has
// both and its keeper has confirmed its write.
func before(t *testing.T, a, b *Store) {
	t.Helper()
	ctx := context.Background()
	if err := a.Set(ctx, "cluster.before", mustValue(t, String, "both")); err != nil {
		t.Fatal(err)
	}
	if err := b.Set(ctx, "runtime.survivor", mustValue(t, Uint8, "1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	waitValue(t, b, "cluster.before", "both")
}

// openAlone opens a copy of node, alone in its cluster, as a layer started
// after its peers left does (binding the bucket, a short ClusterWait), and
// checks that it serves the node's keys — runtime.survivor, and a write
// that other, an older copy of the node, reads — with the cluster keys
// absent and the copy behind. It returns the copy and a tracker of its
// cluster. keys.
func openAlone(t *testing.T, nc *nats.Conn, node uint32, replicas int, other *Store) (*Store, *trackLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subjects, _ := bus.NewSubjects("corobus.test")
	started := time.Now()
	s, err := OpenStore(ctx, nc, StoreConfig{Bucket: "objdb_test", Replicas: replicas, Node: node, Subjects: subjects,
		Log: bustest.Logger(t).With("copy", "alone"), WriteTimeout: 3 * time.Second, FeedTimeout: 400 * time.Millisecond,
		ClusterWait: 2 * time.Second, Bind: true})
	if err != nil {
		t.Fatalf("a copy of node %d, alone, did not open in %s: %v", node, time.Since(started).Round(time.Millisecond), err)
	}
	t.Cleanup(s.Close)
	t.Logf("a copy of node %d, alone, opened in %s: %s", node, time.Since(started).Round(time.Millisecond), s.State().Reason)

	if v, err := s.Get("runtime.survivor"); err != nil || v.String() != "1" {
		t.Errorf("node %d's own key, alone: %v, %v; want 1", node, v, err)
	}
	if err := s.Set(context.Background(), "runtime.alone", mustValue(t, Uint8, "1")); err != nil {
		t.Fatalf("a node key written alone: %v", err)
	}
	waitValue(t, other, "runtime.alone", "1")
	if _, err := s.Get("cluster.before"); !errors.Is(err, ErrNotExist) {
		t.Errorf("cluster.before on a copy opened alone: %v, want absent until the bucket's stream can be read", err)
	}
	if cs := s.State(); cs.State != "behind" || cs.Cluster.Current {
		t.Errorf("a copy opened alone says %s (cluster feed current %v, %q), want behind", cs.State, cs.Cluster.Current, cs.Cluster.Reason)
	}
	log := &trackLog{}
	stop := s.Track("cluster.", true, log.add)
	t.Cleanup(stop)
	return s, log
}

// back checks a copy opened alone once its peers are back: the cluster
// keys load and its tracker hears of them, the node's keys are kept, and
// the copy is current.
func back(t *testing.T, s *Store, log *trackLog) {
	t.Helper()
	waitValue(t, s, "cluster.before", "both")
	until(t, 10*time.Second, func() bool { return len(log.snapshot()) > 0 },
		func() string { return "the tracker of cluster. heard nothing of the keys that loaded" })
	if got, want := strings.Join(log.snapshot(), "\n"), "create cluster.before <nil> -> both"; got != want {
		t.Errorf("tracked when the cluster keys loaded:\n%s\nwant %s", got, want)
	}
	for k, want := range map[string]string{"runtime.survivor": "1", "runtime.alone": "1"} {
		if v, err := s.Get(k); err != nil || v.String() != want {
			t.Errorf("%s once the peers are back: %v, %v; want %s", k, v, err, want)
		}
	}
	until(t, 30*time.Second, func() bool { return s.State().State == "current" },
		func() string { return fmt.Sprintf("the copy is still behind: %+v", s.State()) })
}

// createBucket creates a bucket as a test places it, asking again while
// JetStream's API times out: a cluster just formed can take longer than
// one API request's timeout (5 s) to create a stream on a loaded machine
// (seen once in TestLoneSurvivorOpensItsCopy: "context deadline
// exceeded"). Creating it again with the same config is answered with
// the bucket.
func createBucket(t *testing.T, js jetstream.JetStream, cfg jetstream.KeyValueConfig) jetstream.KeyValue {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		kv, err := js.CreateKeyValue(context.Background(), cfg)
		if err == nil {
			return kv
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) || time.Now().After(deadline) {
			t.Fatalf("creating bucket %s: %v", cfg.Bucket, err)
		}
		t.Logf("creating bucket %s: %v; asking again", cfg.Bucket, err)
	}
}
