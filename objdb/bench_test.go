package objdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// BenchmarkClient measures one synchronous client of a node's objdb
// process: a get served from the watched copy, a set replicated through
// JetStream (R1 here).
func BenchmarkClient(b *testing.B) {
	cl := bustest.StartCluster(b, 1)
	env := testEnv(b, cl.Conn(1))
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
	b.Run("set", func(b *testing.B) {
		for b.Loop() {
			if err := c.Set(ctx, "test.bench.k", v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Get(ctx, "test.bench.k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreSet is the write path a co-located writer (the cmap
// service) pays: a replicated put and the local copy catching up, against
// the bare JetStream KV put under it.
func BenchmarkStoreSet(b *testing.B) {
	cl := bustest.StartCluster(b, 1)
	env := testEnv(b, cl.Conn(1))
	ctx := context.Background()
	st, err := objdb.OpenFor(ctx, env)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	v, _ := objdb.ParseValue(objdb.Uint32, "7")
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			if err := st.Set(ctx, "test.bench.k", v); err != nil {
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
