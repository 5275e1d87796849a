package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// runBench dispatches `corobus bench <what>`.
func runBench(ctx context.Context, a *app, args []string) error {
	what := map[string]func(context.Context, *app, []string) error{
		"cmap":  benchCmap,
		"totem": benchTotem,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(a.stdout, "usage: corobus bench cmap|totem [flags]   (corobus bench <what> --help for its flags)")
		fmt.Fprintln(a.stdout, "\n  cmap   one synchronous client: set then get ops/s against a running node")
		fmt.Fprintln(a.stdout, "  totem  ordered multicast: messages/s and send-to-self-delivery latency")
		if len(args) == 0 {
			return usagef("say what to measure (cmap, totem)")
		}
		return nil
	}
	f, ok := what[args[0]]
	if !ok {
		return usagef("unknown benchmark %q (cmap, totem)", args[0])
	}
	return f(ctx, a, args[1:])
}

// benchCmap measures one synchronous client, like ../shared/anchor's
// cmap_bench: cmap sets of a u32 for S seconds, then gets.
func benchCmap(ctx context.Context, a *app, args []string) (err error) {
	var nf nodeFlags
	var seconds float64
	var key string
	fs := newFlagSet(a, "bench cmap", "[-c FILE | --bus URL] [--seconds S] [--key KEY]",
		"One synchronous client against a running node: set a u32 key in a loop for S seconds,\n"+
			"then get it; prints RESULT cmap_set_uint32 ops_per_s=… and RESULT cmap_get_uint32\n"+
			"ops_per_s=…, as the anchor's C cmap_bench does. The client is a Go program on the bus\n"+
			"(objdb's API over NATS, a round trip through the bus process per call), not a libcmap\n"+
			"client of the IPC gateway: `task bench:compare` runs corosync's own clients against\n"+
			"both engines. The default key is a cluster key (each set a replicated JetStream write);\n"+
			"--key runtime.bench.k measures a node key (the node's keeper, JetStream behind).\n"+
			"At the end the key is deleted, or given back its value if it existed before.")
	nf.register(fs, true)
	fs.Float64Var(&seconds, "seconds", 2, "duration of each phase")
	fs.StringVar(&key, "key", "test.bench.k", "the key set and read (docs/objdb.md: node keys and cluster keys)")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	nc, err := a.connect(nf, "corobus-bench-cmap", 0)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := client.New(nc.nc, nc.subjects, nc.node)
	restore, err := benchKeyRestorer(ctx, c, key)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, restore()) }()
	d := time.Duration(seconds * float64(time.Second))
	n, start := 0, time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		v, _ := objdb.ParseValue(objdb.Uint32, fmt.Sprint(n))
		if err := c.Set(ctx, key, v); err != nil {
			return fmt.Errorf("set: %w", err)
		}
		n++
	}
	setRate := float64(n) / time.Since(start).Seconds()
	n, start = 0, time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		if _, err := c.Get(ctx, key); err != nil {
			return fmt.Errorf("get: %w", err)
		}
		n++
	}
	getRate := float64(n) / time.Since(start).Seconds()
	// As the anchor's cmap_bench prints them, so the lines compare.
	fmt.Fprintf(a.stdout, "RESULT cmap_set_uint32 ops_per_s=%.0f\nRESULT cmap_get_uint32 ops_per_s=%.0f\n", setRate, getRate)
	return nil
}

// benchKeyRestorer notes what key holds before the benchmark writes it and
// returns what puts the cluster back as it was: the key deleted when the
// benchmark created it, its old value and type when --key named one that
// existed. It runs however the benchmark ends, interrupted included, so
// its writes get a context of their own.
func benchKeyRestorer(ctx context.Context, c *client.Client, key string) (func() error, error) {
	old, err := c.Get(ctx, key)
	existed := err == nil
	if err != nil && !errors.Is(err, objdb.ErrNotExist) {
		return nil, fmt.Errorf("reading %s before the benchmark: %w", key, err)
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if existed {
			if err := c.Set(ctx, key, old); err != nil {
				return fmt.Errorf("restoring %s's value from before the benchmark (%s): %w", key, old, err)
			}
			return nil
		}
		if err := c.Delete(ctx, key); err != nil && !errors.Is(err, objdb.ErrNotExist) {
			return fmt.Errorf("deleting %s, which the benchmark created: %w", key, err)
		}
		return nil
	}, nil
}
