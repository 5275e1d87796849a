package objdb_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus/bustest"
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
			b.SetParallelism(4) // 2 CPUs × 4 = 8 writers
			defer reportCPU(b)()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := n.Add(1)
				st := stores[int(i)%3]
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
	var kvs []jetstream.KeyValue
	for id := 1; id <= 3; id++ {
		js, err := jetstream.New(cl.Conn(id))
		if err != nil {
			b.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, objdb.BucketName("svc"))
		if err != nil {
			b.Fatal(err)
		}
		kvs = append(kvs, kv)
	}
	b.Run("kv-put-8", func(b *testing.B) {
		b.SetParallelism(4)
		defer reportCPU(b)()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := n.Add(1)
			kv := kvs[int(i)%3]
			k := fmt.Sprintf("c.test.bench3.raw.%d", i)
			for pb.Next() {
				if _, err := kv.Put(ctx, k, []byte{1, 2, 3, 4}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	// What batching replicated writes would save the servers: the same
	// puts, R3, from eight writers, as JetStream atomic batches of four
	// (an op is one put). objdb does not batch its cluster writes: a
	// node's writers are too few to fill batches (docs/objdb.md).
	batchKV(b, []jetstream.JetStream{jsFor(b, cl.Conn(1)), jsFor(b, cl.Conn(2)), jsFor(b, cl.Conn(3))})
}

func jsFor(b *testing.B, nc *nats.Conn) jetstream.JetStream {
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
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
		b.SetParallelism(4)
		defer reportCPU(b)()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := n.Add(1)
			js := jss[int(i)%3]
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
	b.SetParallelism(4) // 2 CPUs × 4 = 8 writers
	defer reportCPU(b)()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		k := fmt.Sprintf("runtime.benchnode.%d", n.Add(1))
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
		b.SetParallelism(4)
		batches.Store(0)
		writes.Store(0)
		defer reportCPU(b)()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := n.Add(1)
			nc := jss[int(i)%3].Conn()
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
