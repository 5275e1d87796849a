// Command component is an example corobus component in its own
// executable: put it in loader.component_dir and list it in a service
// block (service { name: example; ver: 1 }), and the service manager
// starts it, the loader resolves it, and clients reach it through a
// handle. It serves two functions: "echo" returns the request's payload,
// "whoami" returns which instance served it.
//
// It speaks the protocol of docs/loader.md through the Go component
// library; a component in another language does the same with any NATS
// client. The service manager starts it with --bus, --prefix, --node and
// --namespace, and the supervisor appends --restarts.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "component:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("component", flag.ContinueOnError)
	url := fs.String("bus", "", "bus `URL` (nats://TOKEN@host:port)")
	prefix := fs.String("prefix", "corobus.corobus", "subject prefix of the cluster")
	node := fs.Uint("node", 1, "this node's id")
	namespace := fs.String("namespace", "", "namespace to serve in (default node<ID>)")
	name := fs.String("name", "example", "component name")
	version := fs.Uint("version", 1, "component version")
	replaces := fs.String("replaces", "", "comma-separated versions this one replaces")
	priority := fs.Int("priority", 0, "unload priority (higher unloads first)")
	interval := fs.Duration("interval", time.Second, "heartbeat interval")
	linger := fs.Duration("linger", 0, "how long a retired instance answers \"moved\" after the last request (default 2 intervals)")
	exitBusy := fs.Int("exit-busy", 0, "answer this many exit requests with busy before agreeing")
	work := fs.Duration("work", 0, "time each request takes (simulated work, so that requests are in flight)")
	report := fs.String("report", "", "publish the id of every served request on this `subject` (tests count them)")
	fs.Int("restarts", 0, "restart count, set by the supervisor")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return fmt.Errorf("--bus is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("pid", os.Getpid())
	subjects, err := bus.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	var reps []uint32
	for _, f := range strings.FieldsFunc(*replaces, func(r rune) bool { return r == ',' || r == ' ' }) {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return fmt.Errorf("--replaces %q: %w", *replaces, err)
		}
		reps = append(reps, uint32(v))
	}
	nc, err := bus.Dial(*url, "corobus-component-"+*name, 10*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()

	var busyLeft atomic.Int64
	busyLeft.Store(int64(*exitBusy))
	c := loader.Component{
		Name:       *name,
		Version:    uint32(*version),
		Namespace:  *namespace,
		Interfaces: []string{"echo", "whoami"},
		Priority:   *priority,
		Replaces:   reps,
		Interval:   *interval,
		Linger:     *linger,
		Log:        log,
		Exit: func() error {
			// Asking for more time, as a service with work to hand
			// over would (exec_exit_fn returning -1).
			if busyLeft.Add(-1) >= 0 {
				log.Info("asked to exit; busy")
				return loader.ErrBusy
			}
			return nil
		},
		Handler: func(ctx context.Context, fn string, m *nats.Msg) ([]byte, error) {
			if *work > 0 {
				select {
				case <-time.After(*work):
				case <-ctx.Done():
				}
			}
			var out []byte
			switch fn {
			case "echo":
				out = m.Data
			case "whoami":
				out, _ = json.Marshal(map[string]any{"name": *name, "version": *version, "pid": os.Getpid()})
			default:
				return nil, fmt.Errorf("no function %q", fn)
			}
			if *report != "" {
				_ = nc.Publish(*report, []byte(m.Header.Get(loader.HdrReqID)+" "+strconv.FormatUint(uint64(*version), 10)))
			}
			return out, nil
		},
	}
	if err := c.Serve(ctx, nc, subjects, uint32(*node)); err != nil {
		return err
	}
	// Serve flushed its replies; flush the reports published after them.
	return nc.Flush()
}
