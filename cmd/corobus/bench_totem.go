package main

import (
	"context"
	"fmt"
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
			"own delivery of messages sent one at a time. Prints msgs_per_s=… p50_us=… p99_us=….")
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
	slices.Sort(l)
	p50, p99 := 0.0, 0.0
	if len(l) > 0 {
		p50 = float64(l[len(l)/2].Nanoseconds()) / 1e3
		p99 = float64(l[len(l)*99/100].Nanoseconds()) / 1e3
	}
	fmt.Fprintf(a.stdout, "msgs_per_s=%.0f p50_us=%.0f p99_us=%.0f size=%d seconds=%.1f mb_per_s=%.1f latency_samples=%d\n",
		msgsPerS, p50, p99, size, elapsed.Seconds(), msgsPerS*float64(size)/1e6, len(l))
	return nil
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
