package totem_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem"
)

// startTotem runs a totem node on every node of a real bustest cluster
// (the servers `corobus bus` runs: JetStream on, direct routes) and waits
// for one view of all of them.
func startTotem(b *testing.B, n int) (*bustest.Cluster, bus.Subjects) {
	c := bustest.StartCluster(b, n)
	subj, err := bus.NewSubjects("corobus.bench")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	var nodes []*totem.Node
	for _, nd := range c.Nodes {
		nc, err := nd.Server.Connect("totem", nats.NoEcho())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		cfg := totem.DefaultConfig(nd.ID, subj)
		tn, err := totem.New(nc, cfg, totem.Callbacks{})
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, tn)
		wg.Add(1)
		go func() { defer wg.Done(); _ = tn.Run(ctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, tn := range nodes {
			if st := tn.Status(); st.State != "operational" || len(st.Members) != n {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no view of all nodes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, subj
}

// BenchmarkMcast measures ordered multicast as a service process sees it:
// a Client on node `from` multicasts through its own node's totem and
// counts its own deliveries. Node 1 is the sequencer; from=2 is every
// other node's path (the payload to the sequencer, its order record
// back). msgs/s: b.N messages with a full window; p50_us/p99_us: send-to-
// own-delivery latency of messages sent one at a time. keep=1: the client
// keeps its 64 KiB messages (ClientOptions.KeepOwn, on a service of its
// own: the bus remembers every client that named one until it closes)
// and they come back without their payload.
func BenchmarkMcast(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			c, subj := startTotem(b, nodes)
			for from := 1; from <= min(nodes, 2); from++ {
				for _, size := range []int{64, 1024, 64 << 10} {
					b.Run(fmt.Sprintf("from=%d/size=%d", from, size), func(b *testing.B) {
						benchMcast(b, c.Conn(from), subj, uint32(from), size, "bench", false)
					})
				}
			}
			b.Run("from=1/size=65536/keep=1", func(b *testing.B) {
				benchMcast(b, c.Conn(1), subj, 1, 64<<10, "benchkeep", true)
			})
		})
	}
}

// benchMcast multicasts through node's totem on nc, a connection to that
// node's server.
func benchMcast(b *testing.B, nc *nats.Conn, subj bus.Subjects, node uint32, size int, service string, keep bool) {
	var mu sync.Mutex
	sent := map[uint64]time.Time{}
	var lat []time.Duration
	got := make(chan struct{}, 1<<16)
	var cl *totem.Client
	cl, err := totem.NewClient(nc, subj, node, totem.ClientOptions{Window: 1024, Service: service, KeepOwn: keep, OnDeliver: func(d totem.Delivery) {
		if d.Message == nil || d.Message.ID.Origin != cl.Origin() {
			return
		}
		mu.Lock()
		if t, ok := sent[d.Message.ID.Seq]; ok {
			lat = append(lat, time.Since(t))
			delete(sent, d.Message.ID.Seq)
		}
		mu.Unlock()
		got <- struct{}{}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	payload := make([]byte, size)
	// Latency: one message at a time.
	for i := range 2000 {
		mu.Lock()
		sent[uint64(len(lat))+1] = time.Now() // seq is the count so far + 1
		mu.Unlock()
		if _, err := cl.Mcast(ctx, service, payload); err != nil {
			b.Fatal(err)
		}
		if !awaitDelivery(got) {
			b.Fatalf("own message %d not delivered within %v (a lost self-delivery, or a starved machine)", i+1, deliveryDeadline)
		}
	}
	mu.Lock()
	l := slices.Clone(lat)
	mu.Unlock()
	slices.Sort(l)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	done := make(chan struct{})
	var lost atomic.Bool
	go func() {
		defer close(done)
		for range b.N {
			if !awaitDelivery(got) {
				lost.Store(true)
				return
			}
		}
	}()
	for range b.N {
		if _, err := cl.Mcast(ctx, service, payload); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	if lost.Load() {
		b.Fatalf("a multicast of the window not delivered to its sender within %v (a lost self-delivery, or a starved machine)", deliveryDeadline)
	}
	el, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	// The whole path is in this process (client, servers, totem): its CPU
	// per message is the path's, whatever else the machine runs.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_us/msg")
	if len(l) > 0 {
		b.ReportMetric(float64(l[len(l)/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(l[len(l)*99/100].Microseconds()), "p99_us")
	}
}

// deliveryDeadline bounds the wait for one of the sender's own
// deliveries: totem delivers every message to its sender while the sender
// lives, so a benchmark that waits longer has found a loss (or a machine
// too starved to measure on) and says so instead of hanging.
const deliveryDeadline = time.Minute

// awaitDelivery waits for one delivery on got, up to deliveryDeadline.
func awaitDelivery(got <-chan struct{}) bool {
	t := time.NewTimer(deliveryDeadline)
	defer t.Stop()
	select {
	case <-got:
		return true
	case <-t.C:
		return false
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
