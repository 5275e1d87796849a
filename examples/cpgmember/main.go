// Command cpgmember is a CPG group member in pure Go (package cpg, no
// cgo): it joins a group on a node's cpg service over the bus, multicasts
// numbered messages, and logs every callback — the same log lines as
// services/cpg/cpgtest's C program cpgcheck, so that services/cpg/vscheck
// judges Go members and libcpg members of one group together.
//
//	go run ./examples/cpgmember -c /etc/corosync/corosync.conf -g mygroup -n 100
//
// With -c it finds its node and the bus as corobus's client verbs do (the
// node's configuration file; root reads the bus token in its state
// directory); --bus, --prefix and --node name them instead.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/cpg"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpgmember:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cpgmember", flag.ContinueOnError)
	file := fs.String("c", "", "the node's configuration `file`")
	url := fs.String("bus", "", "bus `URL` (nats://TOKEN@host:port), instead of -c")
	prefix := fs.String("prefix", "", "subject prefix of the cluster (with --bus)")
	node := fs.Uint("node", 0, "the node whose cpg service to use (with --bus)")
	group := fs.String("g", "cpgmember", "`group` to join")
	count := fs.Int("n", 10, "messages to send")
	interval := fs.Duration("i", time.Millisecond, "pause between messages")
	size := fs.Int("s", 64, "message size (at least 16)")
	want := fs.Int("w", 1, "wait for this many members before sending")
	linger := fs.Duration("l", 2*time.Second, "keep receiving this long after the last message")
	out := fs.String("o", "", "log `file` (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, opts, err := connect(*file, *url, *prefix, uint32(*node))
	if err != nil {
		return err
	}
	defer nc.Close()
	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	logf := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	h, err := cpg.Connect(cctx, nc, opts)
	cancel()
	if err != nil {
		return err
	}
	logf("I %d/%d", h.Node(), h.PID())
	if err := h.Join(ctx, *group); err != nil {
		return fmt.Errorf("joining %q: %w", *group, err)
	}

	// Everything the service gives, logged as cpgcheck logs it.
	me := cpg.Address{NodeID: h.Node(), PID: h.PID()}
	var mu sync.Mutex
	joined, members, own := false, 0, 0 // under mu
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range h.Events() {
			switch ev.Kind {
			case cpg.Deliver:
				if len(ev.Data) < 16 {
					logf("E short message of %d bytes from %d/%d", len(ev.Data), ev.From.NodeID, ev.From.PID)
					continue
				}
				n, p, seq := binary.LittleEndian.Uint32(ev.Data), binary.LittleEndian.Uint32(ev.Data[4:]), binary.LittleEndian.Uint64(ev.Data[8:])
				if n != ev.From.NodeID || p != ev.From.PID {
					logf("E message header %d/%d delivered as from %d/%d", n, p, ev.From.NodeID, ev.From.PID)
				}
				logf("D %d/%d %d %d", ev.From.NodeID, ev.From.PID, seq, len(ev.Data))
				if ev.From == me {
					mu.Lock()
					own++
					mu.Unlock()
				}
			case cpg.ConfChg:
				logf("C m=%s l=%s j=%s", list(ev.Members, false), list(ev.Left, true), list(ev.Joined, true))
				mu.Lock()
				members = len(ev.Members)
				for _, j := range ev.Joined {
					if j.NodeID == me.NodeID && j.PID == me.PID {
						joined = true
					}
				}
				mu.Unlock()
			case cpg.TotemConfChg:
				ids := make([]string, len(ev.TotemMembers))
				for i, m := range ev.TotemMembers {
					ids[i] = fmt.Sprint(m)
				}
				logf("T %d.%d %s", ev.Ring.Rep, ev.Ring.Seq, strings.Join(ids, ","))
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	wait := func(cond func() bool) error {
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return nil
			}
			select {
			case <-progress:
			case <-done:
				return errors.New("the handle closed")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if err := wait(func() bool { return joined && members >= *want }); err != nil {
		return err
	}
	buf := make([]byte, max(*size, 16))
	binary.LittleEndian.PutUint32(buf, me.NodeID)
	binary.LittleEndian.PutUint32(buf[4:], me.PID)
	for i := range *count {
		binary.LittleEndian.PutUint64(buf[8:], uint64(i))
		if err := h.Mcast(ctx, buf); err != nil {
			if errors.Is(err, cpg.ErrTryAgain) {
				time.Sleep(time.Millisecond)
				continue
			}
			return fmt.Errorf("multicast %d: %w", i, err)
		}
		logf("S %d", i)
		time.Sleep(*interval)
	}
	if err := wait(func() bool { return own >= *count }); err != nil {
		return err
	}
	select {
	case <-time.After(*linger):
	case <-ctx.Done():
	}
	err = h.Close()
	<-done
	logf("END")
	return err
}

func list(l []cpg.Address, reason bool) string {
	s := make([]string, len(l))
	for i, a := range l {
		if reason {
			s[i] = fmt.Sprintf("%d/%d/%d", a.NodeID, a.PID, a.Reason)
		} else {
			s[i] = fmt.Sprintf("%d/%d", a.NodeID, a.PID)
		}
	}
	return strings.Join(s, ",")
}

// connect finds the bus, the subjects and the node: from the node's
// configuration file, or from --bus, --prefix and --node.
func connect(file, url, prefix string, node uint32) (*nats.Conn, cpg.Options, error) {
	var opts cpg.Options
	if url == "" {
		cfg, err := config.Load(config.Options{File: file})
		if err != nil {
			return nil, opts, err
		}
		local, err := cfg.LocalNode()
		if err != nil {
			return nil, opts, err
		}
		if url, err = bus.ClientURL(cfg); err != nil {
			return nil, opts, err
		}
		prefix, node = cfg.Prefix(), local.ID
	}
	if prefix == "" || node == 0 {
		return nil, opts, errors.New("--bus needs --prefix and --node")
	}
	s, err := bus.NewSubjects(prefix)
	if err != nil {
		return nil, opts, err
	}
	nc, err := bus.Dial(url, "cpgmember", 10*time.Second)
	if err != nil {
		return nil, opts, err
	}
	return nc, cpg.Options{Subjects: s, Node: node}, nil
}
