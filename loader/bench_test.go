package loader_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
)

// BenchmarkRequest compares one request through a loader-resolved handle
// with the same request sent on the component's fixed subject, both to the
// same in-process component over in-process connections: the difference
// is the handle's cost (hdb get/put, the cached target, the request-id
// header).
func BenchmarkRequest(b *testing.B) {
	cl := bustest.StartNode(b)
	subjects := testSubjects(b)
	conn := func() *nats.Conn {
		nc, err := cl.Server.Connect("bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	startLoader(b, conn(), subjects, 1, "node1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	comp := loader.Component{Name: "bench", Version: 1, Interval: time.Second,
		Handler: func(_ context.Context, _ string, m *nats.Msg) ([]byte, error) { return m.Data, nil }}
	go func() { defer close(done); _ = comp.Serve(ctx, conn(), subjects, 1) }()
	b.Cleanup(func() { cancel(); <-done })

	nc := conn()
	c := newClient(b, nc, subjects)
	h := reference(b, c, "bench", 1)
	tg, err := c.Target(h)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 64)
	b.Run("handle", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Request(context.Background(), h, "echo", payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same request as the handle sends (request-id header, context
	// deadline), on the fixed subject: what is left is the handle itself.
	b.Run("fixed-subject-same-msg", func(b *testing.B) {
		subject := tg.Subject + ".echo"
		for b.Loop() {
			m := nats.NewMsg(subject)
			m.Header.Set(loader.HdrReqID, "bench.1")
			m.Data = payload
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := nc.RequestMsgWithContext(ctx, m)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fixed-subject", func(b *testing.B) {
		subject := tg.Subject + ".echo"
		for b.Loop() {
			if _, err := nc.Request(subject, payload, 2*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
}
