package objdb_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
}
