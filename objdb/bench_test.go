package objdb_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// BenchmarkClient measures one synchronous client of a node's objdb
// process: a get served from the watched copy, a set of a cluster key
// (test.*) replicated through JetStream (R1 here), a set of a node key
// (runtime.*) applied by the copy and the keeper behind it.
func BenchmarkClient(b *testing.B) {
	cl := bustest.StartCluster(b, 1)
	env := testEnv(b, cl.Conn(1))
	runKeeper(b, env)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = objdb.Run(ctx, env) }()
	c := client.New(cl.Conn(1), env.Subjects, 1)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := c.Get(ctx, "totem.token"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	v, _ := objdb.ParseValue(objdb.Uint32, "7")
	for _, key := range []string{"test.bench.k", "runtime.bench.k"} {
		b.Run("set/"+key, func(b *testing.B) {
			for b.Loop() {
				if err := c.Set(ctx, key, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Get(ctx, "test.bench.k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStore is the path a co-located user of a copy (the cmap
// service) pays, one writer and eight: a node key's set and get, a
// cluster key's set (a JetStream quorum's acknowledgement; R1 on one
// node), and the bare KV put under it.
func BenchmarkStore(b *testing.B) {
	cl := bustest.StartCluster(b, 1)
	env := testEnv(b, cl.Conn(1))
	runKeeper(b, env)
	ctx := context.Background()
	st, err := objdb.OpenFor(ctx, env)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	v, _ := objdb.ParseValue(objdb.Uint32, "7")
	for _, key := range []string{"runtime.bench.k", "test.bench.k"} {
		if err := st.Set(ctx, key, v); err != nil {
			b.Fatal(err)
		}
	}
	scope := map[string]string{"runtime.bench.k": "node", "test.bench.k": "cluster"}
	for _, key := range []string{"runtime.bench.k", "test.bench.k"} {
		b.Run(scope[key]+"-set", func(b *testing.B) {
			for b.Loop() {
				if err := st.Set(ctx, key, v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(scope[key]+"-set-8", func(b *testing.B) {
			b.SetParallelism(4) // 2 CPUs × 4 = 8 writers
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				k := fmt.Sprintf("%s.%d", key, n.Add(1))
				for pb.Next() {
					if err := st.Set(ctx, k, v); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	b.Run("node-get", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.Get("runtime.bench.k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	js, err := jetstream.New(cl.Conn(1))
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, objdb.BucketName(env.Config.ClusterName()))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("kv-put", func(b *testing.B) {
		for b.Loop() {
			if _, err := kv.Put(ctx, "c.test.bench.raw", []byte{1, 2, 3, 4}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkThreeNodes: cluster-key sets, replicated R3 and acknowledged
// by a quorum, from eight writers spread over three nodes' copies.
func BenchmarkThreeNodes(b *testing.B) {
	cl := bustest.StartCluster(b, 3)
	ctx := context.Background()
	var stores []*objdb.Store
	for id := 1; id <= 3; id++ {
		env := clusterEnv(b, cl, id)
		runKeeper(b, env)
		st, err := objdb.OpenFor(ctx, env)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		stores = append(stores, st)
	}
	v, _ := objdb.ParseValue(objdb.Uint32, "7")
	// A node runs two copies (its objdb process's and its cmap
	// instance's): the second one of each node only follows.
	if os.Getenv("OBJDB_BENCH_FOLLOWERS") != "" {
		for id := 1; id <= 3; id++ {
			st, err := objdb.OpenFor(ctx, clusterEnv(b, cl, id))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
		}
	}
	b.Run("set-1/test.bench3.k", func(b *testing.B) {
		for b.Loop() {
			if err := stores[1].Set(ctx, "test.bench3.one", v); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, key := range []string{"test.bench3.k", "runtime.bench3.k"} {
		b.Run("set-8/"+key, func(b *testing.B) {
			eightWriters(b, func(i int, pb *testing.PB) {
				st := stores[i%3]
				k := fmt.Sprintf("%s.%d", key, i)
				for pb.Next() {
					if err := st.Set(ctx, k, v); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	// The floor under cluster-key sets: bare KV puts, R3, from eight
	// writers spread over the three nodes' connections.
	jss := []jetstream.JetStream{jsFor(b, cl.Conn(1)), jsFor(b, cl.Conn(2)), jsFor(b, cl.Conn(3))}
	var kvs []jetstream.KeyValue
	for _, js := range jss {
		kv, err := js.KeyValue(ctx, objdb.BucketName("svc"))
		if err != nil {
			b.Fatal(err)
		}
		kvs = append(kvs, kv)
	}
	b.Run("kv-put-8", func(b *testing.B) { kvPuts8(b, kvs) })
	// The same puts into an R3 bucket held in memory (JetStream's memory
	// store, its raft log in memory too): what the file store's writes
	// cost a replicated put.
	memKV(b, jss)
	// The design that would order cluster writes by totem, its core
	// alone, beside kv-put-8 (docs/objdb.md, "What that design's core
	// costs").
	totemWrites(b, cl)
	// What batching replicated writes would save the servers: the same
	// puts, R3, from eight writers, as JetStream atomic batches of four
	// (an op is one put). objdb does not batch its cluster writes: a
	// node's writers are too few to fill batches (docs/objdb.md).
	batchKV(b, jss)
}

// eightWriters runs write on eight goroutines (2 CPUs × 4: the eight
// cmap clients of tests/benchcompare), each given its own index from 1
// and its share of b.N, and reports the process's CPU per operation.
func eightWriters(b *testing.B, write func(i int, pb *testing.PB)) {
	b.SetParallelism(4)
	defer reportCPU(b)()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) { write(int(n.Add(1)), pb) })
}

func jsFor(b *testing.B, nc *nats.Conn) jetstream.JetStream {
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}

// kvPuts8 is eight writers spread over the three nodes' buckets, each
// putting a key of its own; it reports the process's CPU per put.
func kvPuts8(b *testing.B, kvs []jetstream.KeyValue) {
	ctx := context.Background()
	eightWriters(b, func(i int, pb *testing.PB) {
		kv := kvs[i%3]
		k := fmt.Sprintf("c.test.bench3.raw.%d", i)
		for pb.Next() {
			if _, err := kv.Put(ctx, k, []byte{1, 2, 3, 4}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// memKV is BenchmarkThreeNodes' kv-mem-put-8: kv-put-8 on a bucket
// held in memory.
func memKV(b *testing.B, jss []jetstream.JetStream) {
	ctx := context.Background()
	if _, err := jss[0].CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: "benchmem", History: objdb.History, Replicas: 3, Storage: jetstream.MemoryStorage,
	}); err != nil {
		b.Fatal(err)
	}
	var kvs []jetstream.KeyValue
	for _, js := range jss {
		kv, err := js.KeyValue(ctx, "benchmem")
		if err != nil {
			b.Fatal(err)
		}
		kvs = append(kvs, kv)
	}
	b.Run("kv-mem-put-8", func(b *testing.B) { kvPuts8(b, kvs) })
}

// batchKV is BenchmarkThreeNodes' kv-batch4-8, on a bucket of its own
// that allows atomic batch publishes.
func batchKV(b *testing.B, jss []jetstream.JetStream) {
	ctx := context.Background()
	js := jss[0]
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "benchbatch", History: objdb.History, Replicas: 3}); err != nil {
		b.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_benchbatch")
	if err != nil {
		b.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowAtomicPublish = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	leaderBatch(b, jss)
	const size = 4
	b.Run("kv-batch4-8", func(b *testing.B) {
		eightWriters(b, func(i int, pb *testing.PB) {
			js := jss[i%3]
			subj := fmt.Sprintf("$KV.benchbatch.c.raw.%d.", i)
			for {
				k := 0
				for k < size && pb.Next() {
					k++
				}
				if k == 0 {
					return
				}
				id := nuid.Next()
				for j := 1; j <= k; j++ {
					m := nats.NewMsg(subj + strconv.Itoa(j))
					m.Data = []byte{1, 2, 3, 4}
					m.Header.Set("Nats-Batch-Id", id)
					m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j))
					if j < k {
						if err := js.Conn().PublishMsg(m); err != nil {
							b.Fatal(err)
						}
						continue
					}
					m.Header.Set("Nats-Batch-Commit", "1")
					if _, err := js.PublishMsg(ctx, m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	})
}

// reportCPU reports the process's CPU time (user and system, all three
// servers and every writer) per operation, as cpu-µs/op: on a shared
// machine it moves far less than the wall time per operation does.
// Call as defer reportCPU(b)().
func reportCPU(b *testing.B) func() {
	before := processCPU()
	return func() {
		b.ReportMetric(float64((processCPU()-before).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNodeSets is the node-key write path of eight libcmap clients
// on one node, all in this process: eight writers on one copy (the cmap
// gateway's), each setting a key of its own to a counting value (as
// tests/benchcompare's clients do: every set changes its key), the
// node's keeper behind it with an embedded server's interest test (the
// bus process's), and a second copy that only follows (the objdb
// process's). cpu-µs/op is the whole process's CPU per set.
func BenchmarkNodeSets(b *testing.B) {
	cl := bustest.StartCluster(b, 1)
	env := testEnv(b, cl.Conn(1))
	cfg, err := objdb.KeeperConfigFor(env)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Interest = func(string) bool { return false }
	kctx, kcancel := context.WithCancel(context.Background())
	kdone := make(chan struct{})
	go func() { defer close(kdone); _ = objdb.RunKeeper(kctx, env.Conn, cfg) }()
	b.Cleanup(func() { kcancel(); <-kdone })
	ctx := context.Background()
	st, err := objdb.OpenFor(ctx, env)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	follower, err := objdb.OpenFor(ctx, testEnv(b, cl.Conn(1)))
	if err != nil {
		b.Fatal(err)
	}
	defer follower.Close()
	eightWriters(b, func(w int, pb *testing.PB) {
		k := fmt.Sprintf("runtime.benchnode.%d", w)
		var i uint32
		for pb.Next() {
			i++
			if err := st.Set(ctx, k, objdb.Value{Type: objdb.Uint32, Data: binary.LittleEndian.AppendUint32(nil, i)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// leaderBatch is BenchmarkThreeNodes' leader-batch-8: what gathering the
// whole cluster's writes where the stream's leader is would cost. Eight
// writers spread over the three nodes send each put as a core request to
// one writer on the leader's server, which publishes what has queued
// meanwhile as one atomic batch (one in flight) and answers each request
// with its sequence. writes/batch is the batches' mean size.
func leaderBatch(b *testing.B, jss []jetstream.JetStream) {
	ctx := context.Background()
	st, err := jss[0].Stream(ctx, "KV_benchbatch")
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var w jetstream.JetStream
	for _, js := range jss {
		if info.Cluster != nil && js.Conn().ConnectedServerName() == info.Cluster.Leader {
			w = js
		}
	}
	if w == nil {
		b.Fatalf("no connection to the stream's leader %v", info.Cluster)
	}
	reqs := make(chan *nats.Msg, 1024)
	sub, err := w.Conn().ChanSubscribe("bench.leaderbatch", reqs)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	var batches, writes atomic.Int64
	done := make(chan struct{})
	defer func() { close(reqs); <-done }()
	go func() {
		defer close(done)
		var q []*nats.Msg
		for m := range reqs {
			q = append(q[:0], m)
		gather:
			for {
				select {
				case m, ok := <-reqs:
					if !ok {
						break gather
					}
					q = append(q, m)
				default:
					break gather
				}
			}
			id := nuid.Next()
			var ack *jetstream.PubAck
			for j, r := range q {
				m := nats.NewMsg("$KV.benchbatch." + r.Header.Get("Key"))
				m.Data = r.Data
				if len(q) > 1 {
					m.Header.Set("Nats-Batch-Id", id)
					m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j+1))
				}
				if j < len(q)-1 {
					if err := w.Conn().PublishMsg(m); err != nil {
						b.Error(err)
					}
					continue
				}
				if len(q) > 1 {
					m.Header.Set("Nats-Batch-Commit", "1")
				}
				if ack, err = w.PublishMsg(ctx, m); err != nil {
					b.Error(err)
				}
			}
			batches.Add(1)
			writes.Add(int64(len(q)))
			for j, r := range q {
				var seq []byte
				if ack != nil {
					seq = strconv.AppendUint(nil, ack.Sequence-uint64(len(q)-1-j), 10)
				}
				_ = r.Respond(seq)
			}
		}
	}()
	b.Run("leader-batch-8", func(b *testing.B) {
		batches.Store(0)
		writes.Store(0)
		eightWriters(b, func(i int, pb *testing.PB) {
			nc := jss[i%3].Conn()
			m := nats.NewMsg("bench.leaderbatch")
			m.Header.Set("Key", fmt.Sprintf("c.leader.%d", i))
			m.Data = []byte{1, 2, 3, 4}
			for pb.Next() {
				if r, err := nc.RequestMsg(m, 5*time.Second); err != nil || len(r.Data) == 0 {
					b.Fatalf("put through the leader's writer: %v", err)
				}
			}
		})
		if n := batches.Load(); n > 0 {
			b.ReportMetric(float64(writes.Load())/float64(n), "writes/batch")
		}
	})
}

// writeService is the totem service totemWrites' cluster writes go out on.
const writeService = "cwrite"

// writeQuorum is how many nodes must have applied a write before its
// writer's call returns: a majority of the three-node nodelist, not of
// the current ring (a partition can leave a ring of one).
const writeQuorum = 2

// totemWrites is BenchmarkThreeNodes' totem-8, totem-gw-8, totem-vs-gw-8
// and totem-noack-gw-8: the core of ordering cluster writes by totem
// (docs/objdb.md, "The design's core beside JetStream"), measured beside
// kv-put-8 on the same three servers. A real totem node runs on each
// server (as in a bus process), and each node an applier (the keeper's
// part: a totem client of writeService that applies every delivered
// write to an in-memory map in delivery order and publishes, per
// delivery burst, "node N applied through position P of ring R" on a
// core subject). Eight writers over the three nodes multicast key and
// value; a write returns once it has been delivered back on its own
// node and writeQuorum nodes, its own among them, have applied through
// its position. totem-8 gives each writer a totem client of its own;
// totem-gw-8 has a node's writers share one, as a node's gateway (one
// cmap service, one client) would. totem-vs-gw-8 is totem-gw-8 under
// the rule virtual synchrony allows on three nodes: a write from a node
// other than the sequencer's returns once its own node has applied it
// (the sequencer holds every payload it ordered, so two nodes hold the
// write), one from the sequencer's node once another node has too; the
// other nodes acknowledge to the sequencer's node only.
// totem-noack-gw-8 publishes no acknowledgement and waits for none (a
// write returns once its own node has applied it): the multicast and
// the apply alone, the floor under any acknowledgement rule. Left out:
// the gateway and libqb, the cmap service, JetStream behind, the state
// transfer to joiners, view changes (a write caught by one fails the
// benchmark).
// acks/write: acknowledgements published (all nodes) per write;
// seqnode-share: the share of the writes made by the writers on the
// sequencer's node (two of the eight).
func totemWrites(b *testing.B, cl *bustest.Cluster) {
	subj, err := bus.NewSubjects("corobus.benchcw")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var nodes []*totem.Node
	for id := 1; id <= 3; id++ {
		// The sequencer stays the ring's representative: totem-vs-gw-8's
		// rule is the sequencer's node's, read once below.
		tc := totem.DefaultConfig(uint32(id), subj)
		tc.HandoffRun = -1
		tn, err := totem.New(cl.Conn(id, nats.NoEcho()), tc, totem.Callbacks{})
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, tn)
		wg.Add(1)
		go func() { defer wg.Done(); _ = tn.Run(ctx) }()
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		formed := true
		for _, tn := range nodes {
			if st := tn.Status(); st.State != "operational" || len(st.Members) != 3 {
				formed = false
			}
		}
		if formed {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no totem view of the three nodes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ackSubj := subj.Prefix() + ".benchcw.applied"
	seq := nodes[0].Status().Sequencer
	if seq == 0 {
		b.Fatal("no sequencer in node 1's status")
	}
	var appliers []*applier
	for id := 1; id <= 3; id++ {
		a, err := startApplier(ctx, cl.Conn(id, nats.NoEcho()), subj, uint32(id), ackSubj, uint32(id) == seq)
		if err != nil {
			b.Fatal(err)
		}
		defer a.close()
		appliers = append(appliers, a)
	}
	// The writers' connection to each node, shared as kv-put-8's are.
	var wconns []*nats.Conn
	for id := 1; id <= 3; id++ {
		wconns = append(wconns, cl.Conn(id))
	}
	var issued atomic.Int64
	for _, v := range []struct {
		name   string
		shared bool
		rule   ackRule
	}{{"totem-8", false, ackMajority}, {"totem-gw-8", true, ackMajority}, {"totem-vs-gw-8", true, ackSequencer}, {"totem-noack-gw-8", true, ackNone}} {
		for _, a := range appliers {
			a.setRule(v.rule)
		}
		gw := make([]*sender, 3)
		if v.shared {
			for i := range gw {
				if gw[i], err = newSender(wconns[i], subj, uint32(i+1)); err != nil {
					b.Fatal(err)
				}
				defer gw[i].close()
			}
		}
		b.Run(v.name, func(b *testing.B) {
			const par = 4 // 2 CPUs × 4 = 8 writers
			b.SetParallelism(par)
			// Writer i (from 1) is on node i%3 (0-based), as kv-put-8's.
			senders := make([]*sender, par*runtime.GOMAXPROCS(0)+1)
			for i := 1; i < len(senders); i++ {
				if senders[i] = gw[i%3]; senders[i] == nil {
					s, err := newSender(wconns[i%3], subj, uint32(i%3+1))
					if err != nil {
						b.Fatal(err)
					}
					defer s.close()
					senders[i] = s
				}
			}
			var sent0 int64
			for _, a := range appliers {
				sent0 += a.sent.Load()
			}
			b.ResetTimer()
			stopCPU := reportCPU(b)
			var n, fromSeq atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(n.Add(1))
				done, err := senders[i].write(ctx, appliers[i%3], fmt.Sprintf("test.bench3.t.%d", i), pb, &issued)
				if err != nil {
					b.Fatal(err)
				}
				if appliers[i%3].seq {
					fromSeq.Add(done)
				}
			})
			stopCPU()
			var sent int64
			for _, a := range appliers {
				sent += a.sent.Load()
			}
			b.ReportMetric(float64(sent-sent0)/float64(b.N), "acks/write")
			b.ReportMetric(float64(fromSeq.Load())/float64(b.N), "seqnode-share")
			b.StopTimer()
			// Not a test, a sanity check of what was measured: every
			// applier ends with every write, and the same map.
			if err := sameMaps(appliers, issued.Load(), 10*time.Second); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// appliedPos is a position of a ring's total order.
type appliedPos struct {
	ring totem.RingID
	pos  uint64
}

// applier is one node's applier in totemWrites.
type applier struct {
	node    uint32
	nc      *nats.Conn
	ackSubj string
	cl      *totem.Client
	sub     *nats.Subscription
	seqSub  *nats.Subscription
	seq     bool // this node is the ring's sequencer
	kick    chan struct{}
	sent    atomic.Int64           // acknowledgements published
	pub     atomic.Pointer[string] // where to acknowledge; nil: nowhere

	mu      sync.Mutex
	quorum  int // nodes that must have applied a write of this node's
	data    map[string][]byte
	at      appliedPos // applied through
	writes  int64
	acked   map[uint32]appliedPos // the other nodes' latest acknowledgements
	waiters []ackWaiter
}

// ackWaiter is a writer waiting for its write's quorum.
type ackWaiter struct {
	at   appliedPos
	done chan struct{}
}

// ackRule is when a write returns, and who acknowledges to whom.
type ackRule int

const (
	// ackMajority: every node acknowledges to every other; a write
	// returns once writeQuorum nodes, its own among them, applied it.
	ackMajority ackRule = iota
	// ackSequencer: the nodes other than the sequencer's acknowledge to
	// the sequencer's node alone; a write from the sequencer's node
	// waits for writeQuorum, any other for its own node's apply.
	ackSequencer
	// ackNone: nobody acknowledges; a write waits for its own node's
	// apply.
	ackNone
)

// toSequencer is the subject of acknowledgements to the sequencer's
// node alone (ackSequencer).
func toSequencer(ackSubj string) string { return ackSubj + ".seq" }

func startApplier(ctx context.Context, nc *nats.Conn, subj bus.Subjects, node uint32, ackSubj string, seq bool) (*applier, error) {
	a := &applier{node: node, nc: nc, ackSubj: ackSubj, seq: seq, kick: make(chan struct{}, 1),
		data: map[string][]byte{}, acked: map[uint32]appliedPos{}}
	a.setRule(ackMajority)
	sub, err := nc.Subscribe(ackSubj, a.onAck)
	if err != nil {
		return nil, fmt.Errorf("applier %d: %w", node, err)
	}
	a.sub = sub
	if seq {
		if a.seqSub, err = nc.Subscribe(toSequencer(ackSubj), a.onAck); err != nil {
			return nil, fmt.Errorf("applier %d: %w", node, err)
		}
	}
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("applier %d: %w", node, err)
	}
	if a.cl, err = totem.NewClient(nc, subj, node, totem.ClientOptions{Service: writeService, OnDeliver: a.deliver}); err != nil {
		return nil, fmt.Errorf("applier %d: %w", node, err)
	}
	go a.ackLoop(ctx)
	return a, nil
}

// setRule sets where this node acknowledges and what its writers wait
// for.
func (a *applier) setRule(r ackRule) {
	pub, quorum := &a.ackSubj, writeQuorum
	switch {
	case r == ackNone:
		pub, quorum = nil, 1
	case r == ackSequencer && a.seq:
		pub = nil
	case r == ackSequencer:
		s := toSequencer(a.ackSubj)
		pub, quorum = &s, 1
	}
	a.pub.Store(pub)
	a.mu.Lock()
	a.quorum = quorum
	a.mu.Unlock()
}

func (a *applier) close() {
	_ = a.cl.Close()
	_ = a.sub.Unsubscribe()
	if a.seqSub != nil {
		_ = a.seqSub.Unsubscribe()
	}
}

// deliver applies one delivered write, in the node's delivery order.
func (a *applier) deliver(d totem.Delivery) {
	m := d.Message
	if m == nil {
		return // a configuration change: each message carries its ring
	}
	key, val, ok := decodeWrite(m.Payload)
	a.mu.Lock()
	if ok {
		a.data[key] = val // the payload is the receiver's: no copy
		a.writes++
	}
	a.at = appliedPos{m.Ring, m.Pos}
	a.releaseLocked()
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// ackLoop publishes what the node applied through, once per wake: the
// deliveries of a burst kick it while it is busy, and share the next
// acknowledgement.
func (a *applier) ackLoop(ctx context.Context) {
	var last appliedPos
	buf := make([]byte, 24)
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		a.mu.Lock()
		at := a.at
		a.mu.Unlock()
		pub := a.pub.Load()
		if at == last || pub == nil {
			continue
		}
		last = at
		binary.BigEndian.PutUint32(buf, a.node)
		binary.BigEndian.PutUint32(buf[4:], at.ring.Rep)
		binary.BigEndian.PutUint64(buf[8:], at.ring.Seq)
		binary.BigEndian.PutUint64(buf[16:], at.pos)
		if err := a.nc.Publish(*pub, buf); err == nil {
			a.sent.Add(1)
		}
	}
}

// onAck takes another node's acknowledgement.
func (a *applier) onAck(m *nats.Msg) {
	if len(m.Data) != 24 {
		return
	}
	node := binary.BigEndian.Uint32(m.Data)
	at := appliedPos{totem.RingID{Rep: binary.BigEndian.Uint32(m.Data[4:]), Seq: binary.BigEndian.Uint64(m.Data[8:])}, binary.BigEndian.Uint64(m.Data[16:])}
	if node == a.node {
		return
	}
	a.mu.Lock()
	if prev := a.acked[node]; prev.ring != at.ring || prev.pos < at.pos {
		a.acked[node] = at
		a.releaseLocked()
	}
	a.mu.Unlock()
}

// quorumLocked: a.quorum nodes, this one among those counted, have
// applied through at in at's ring.
func (a *applier) quorumLocked(at appliedPos) bool {
	n := 0
	if a.at.ring == at.ring && a.at.pos >= at.pos {
		n++
	}
	for _, p := range a.acked {
		if p.ring == at.ring && p.pos >= at.pos {
			n++
		}
	}
	return n >= a.quorum
}

func (a *applier) releaseLocked() {
	keep := a.waiters[:0]
	for _, w := range a.waiters {
		if a.quorumLocked(w.at) {
			w.done <- struct{}{}
		} else {
			keep = append(keep, w)
		}
	}
	a.waiters = keep
}

// await signals done (buffered, one slot) once at has its quorum.
func (a *applier) await(at appliedPos, done chan struct{}) {
	a.mu.Lock()
	if a.quorumLocked(at) {
		done <- struct{}{}
	} else {
		a.waiters = append(a.waiters, ackWaiter{at, done})
	}
	a.mu.Unlock()
}

// sender is a totem client that writers multicast through and that
// tells each its write's position when it is delivered back.
type sender struct {
	cl      *totem.Client
	origin  atomic.Uint32
	mu      sync.Mutex
	early   map[uint64]appliedPos      // delivered before its writer asked
	waiting map[uint64]chan appliedPos // writers waiting, by sequence
}

func newSender(nc *nats.Conn, subj bus.Subjects, node uint32) (*sender, error) {
	s := &sender{early: map[uint64]appliedPos{}, waiting: map[uint64]chan appliedPos{}}
	cl, err := totem.NewClient(nc, subj, node, totem.ClientOptions{Service: writeService, OnDeliver: s.deliver})
	if err != nil {
		return nil, fmt.Errorf("writer on node %d: %w", node, err)
	}
	s.cl = cl
	s.origin.Store(cl.Origin())
	return s, nil
}

func (s *sender) close() { _ = s.cl.Close() }

func (s *sender) deliver(d totem.Delivery) {
	m := d.Message
	if m == nil || m.ID.Origin != s.origin.Load() {
		return
	}
	at := appliedPos{m.Ring, m.Pos}
	s.mu.Lock()
	if ch, ok := s.waiting[m.ID.Seq]; ok {
		delete(s.waiting, m.ID.Seq)
		ch <- at
	} else {
		s.early[m.ID.Seq] = at
	}
	s.mu.Unlock()
}

// write is one writer's loop: it sets key to a counting uint32 through
// s, then waits for the write's delivery on its node and for its quorum
// at the node's applier a. It returns how many writes returned.
func (s *sender) write(ctx context.Context, a *applier, key string, pb *testing.PB, issued *atomic.Int64) (int64, error) {
	own := make(chan appliedPos, 1)
	acked := make(chan struct{}, 1)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var buf []byte
	var done int64
	for v := uint32(1); pb.Next(); v++ {
		buf = encodeWrite(buf[:0], key, v)
		id, err := s.cl.Mcast(ctx, writeService, buf)
		if err != nil {
			return done, err
		}
		issued.Add(1)
		s.mu.Lock()
		at, ok := s.early[id.Seq]
		if ok {
			delete(s.early, id.Seq)
		} else {
			s.waiting[id.Seq] = own
		}
		s.mu.Unlock()
		t.Reset(10 * time.Second)
		if !ok {
			select {
			case at = <-own:
			case <-t.C:
				return done, fmt.Errorf("write %v not delivered back within 10 s", id)
			}
		}
		a.await(at, acked)
		select {
		case <-acked:
		case <-t.C:
			return done, fmt.Errorf("write %v at %v/%d: no quorum within 10 s", id, at.ring, at.pos)
		}
		done++
	}
	return done, nil
}

// encodeWrite appends a write of a uint32 value: the type, the key's
// length (2 bytes), the key, the value.
func encodeWrite(dst []byte, key string, v uint32) []byte {
	dst = append(dst, byte(objdb.Uint32))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	return binary.LittleEndian.AppendUint32(dst, v)
}

func decodeWrite(p []byte) (string, []byte, bool) {
	if len(p) < 3 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(p[1:]))
	if len(p) < 3+n {
		return "", nil, false
	}
	return string(p[3 : 3+n]), p[3+n:], true
}

// sameMaps waits until every applier has applied want writes, then
// compares their maps.
func sameMaps(as []*applier, want int64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, a := range as {
		for {
			a.mu.Lock()
			got := a.writes
			a.mu.Unlock()
			if got == want {
				break
			}
			if got > want || time.Now().After(deadline) {
				return fmt.Errorf("node %d applied %d writes of %d", a.node, got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	ref := as[0]
	for _, a := range as[1:] {
		a.mu.Lock()
		ref.mu.Lock()
		err := diffMaps(ref.data, a.data)
		ref.mu.Unlock()
		a.mu.Unlock()
		if err != nil {
			return fmt.Errorf("nodes %d and %d: %w", ref.node, a.node, err)
		}
	}
	return nil
}

func diffMaps(x, y map[string][]byte) error {
	if len(x) != len(y) {
		return fmt.Errorf("%d keys against %d", len(x), len(y))
	}
	for k, v := range x {
		if string(y[k]) != string(v) {
			return fmt.Errorf("key %s: %x against %x", k, v, y[k])
		}
	}
	return nil
}
