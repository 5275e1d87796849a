package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
)

// benchTotem is `corobus bench totem [--size N] [--seconds S]`: a client of
// a running node multicasts in total order as fast as its window allows
// for S seconds and counts its own deliveries (cpgbench's method), then
// sends one message at a time for the send-to-own-delivery latency.
func benchTotem(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var size, window int
	var seconds float64
	fs := newFlagSet(a, "bench totem", "[-c FILE | --bus URL] [--size N] [--seconds S]",
		"Benchmark the ordered multicast of a running node or cluster: messages per second\n"+
			"delivered back to the sender with a full window, then the latency from multicast to\n"+
			"own delivery of messages sent one at a time. Prints RESULT lines as the anchor's C\n"+
			"benchmarks do: totem_mcast msgs_per_s=… and totem_mcast_to_self_deliver p50_us=….")
	nf.register(fs, true)
	fs.IntVar(&size, "size", 64, "payload size in bytes")
	fs.Float64Var(&seconds, "seconds", 5, "duration of the throughput phase")
	fs.IntVar(&window, "window", 1024, "messages in flight")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	if size < 0 || size > totem.MaxPayload {
		return usagef("--size must be 0..%d", totem.MaxPayload)
	}
	c, err := a.connect(nf, "corobus-bench-totem", 0)
	if err != nil {
		return err
	}
	defer c.Close()
	nc, subjects := c.nc, c.subjects
	nodeID := c.node
	if _, err := totem.FetchStatus(nc, subjects, nodeID, 2*time.Second); err != nil {
		return fmt.Errorf("%w (is totem running on node %d?)", err, nodeID)
	}
	cl, err := totem.NewClient(nc, subjects, nodeID, totem.ClientOptions{Window: window})
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	payload := make([]byte, size)

	// Throughput: keep the window full; count own deliveries.
	dur := time.Duration(seconds * float64(time.Second))
	tctx, cancel := context.WithTimeout(ctx, dur)
	start := time.Now()
	sent := 0
	for tctx.Err() == nil {
		if _, err := cl.Mcast(tctx, "bench", payload); err != nil {
			break
		}
		sent++
	}
	cancel()
	_ = cl.Flush(5 * time.Second)
	// Fill the window once more with empty messages: when that returns,
	// every message of the throughput phase was delivered back.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	for range window {
		if _, err := cl.Mcast(wctx, "bench-drain", nil); err != nil {
			break
		}
		sent++ // delivered within elapsed, so counted
	}
	wcancel()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msgsPerS := float64(sent) / elapsed.Seconds()

	l, err := totemLatency(ctx, latencyClient(nc, subjects, nodeID), payload)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "RESULT totem_mcast size=%d seconds=%.1f msgs_per_s=%.0f MB_per_s=%.2f\n",
		size, elapsed.Seconds(), msgsPerS, msgsPerS*float64(size)/1e6)
	printLatency(a.stdout, "RESULT totem_mcast_to_self_deliver", l)
	return nil
}

// printLatency prints a latency distribution as the anchor's C benchmarks
// do (shared/anchor/common.h print_lat), so the lines compare directly.
func printLatency(w io.Writer, label string, l []time.Duration) {
	if len(l) == 0 {
		fmt.Fprintf(w, "%s n=0\n", label)
		return
	}
	slices.Sort(l)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	pct := func(p int) time.Duration { return l[min(len(l)-1, len(l)*p/100)] }
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	fmt.Fprintf(w, "%s n=%d min_us=%.2f p50_us=%.2f p90_us=%.2f p99_us=%.2f max_us=%.2f mean_us=%.2f\n",
		label, len(l), us(l[0]), us(pct(50)), us(pct(90)), us(pct(99)), us(l[len(l)-1]), us(sum)/float64(len(l)))
}

type clientFactory func(onOwn func(*totem.Message)) (*totem.Client, error)

func latencyClient(nc *nats.Conn, subjects bus.Subjects, node uint32) clientFactory {
	return func(onOwn func(*totem.Message)) (*totem.Client, error) {
		var cl *totem.Client
		var mu sync.Mutex
		mu.Lock()
		defer mu.Unlock()
		c, err := totem.NewClient(nc, subjects, node, totem.ClientOptions{Window: 1, Service: "bench", OnDeliver: func(d totem.Delivery) {
			mu.Lock()
			me := cl
			mu.Unlock()
			if d.Message != nil && me != nil && d.Message.ID.Origin == me.Origin() {
				onOwn(d.Message)
			}
		}})
		cl = c
		return c, err
	}
}

// totemLatency sends one message at a time (up to 2000, or one second) and
// returns each one's multicast-to-own-delivery time.
func totemLatency(ctx context.Context, newClient clientFactory, payload []byte) ([]time.Duration, error) {
	back := make(chan struct{}, 1)
	cl, err := newClient(func(*totem.Message) {
		select {
		case back <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = cl.Close() }()
	var lat []time.Duration
	end := time.Now().Add(time.Second)
	for i := 0; i < 2000 && time.Now().Before(end); i++ {
		t0 := time.Now()
		if _, err := cl.Mcast(ctx, "bench", payload); err != nil {
			return nil, err
		}
		select {
		case <-back:
			lat = append(lat, time.Since(t0))
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("message %d not delivered back within 5s", i+1)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return lat, nil
}
