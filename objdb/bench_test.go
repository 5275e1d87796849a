package objdb_test

import (
	"context"
	"testing"
	"time"

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
