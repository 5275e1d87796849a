package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
)

// runSub follows subjects of a node's bus as the read-only subscriber user:
// `nats sub` without the token and without the nats CLI.
func runSub(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var count int
	var printURL bool
	fs := newFlagSet(a, "sub", "[-c FILE | --bus URL] [--count N] [PATTERN ...] | --url",
		"Print the messages on the cluster's subjects that match PATTERN (default: all of them),\n"+
			"as they pass: subject, headers, payload (text, or a hex dump when binary). A PATTERN is\n"+
			"relative to the cluster's prefix (objdb.changed.totem.>, totem.event.>, log.1.>) unless it\n"+
			"starts with it. It connects as the bus user \"subscriber\", which may subscribe and\n"+
			"publish nothing. --url prints that user's URL for other NATS tools (nats sub --server URL)\n"+
			"and exits. docs/subjects.md lists every subject.")
	nf.register(fs, true)
	fs.IntVar(&count, "count", 0, "exit after `N` messages (0: until interrupted)")
	fs.BoolVar(&printURL, "url", false, "print the subscriber user's bus URL and exit")
	patterns, err := parseInterspersed(a, fs, args)
	if err != nil {
		return err
	}
	if count < 0 {
		// Until 3 Dec a negative count connected and exited at once,
		// having printed nothing.
		return usagef("--count takes 0 (until interrupted) or more messages, found %d", count)
	}
	cfg, err := nf.loadRunning(a)
	if err != nil {
		return err
	}
	subjects, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		return err
	}
	url := nf.busURL
	if url == "" {
		url, err = bus.UserURL(cfg, bus.UserSubscriber)
	} else {
		url, err = bus.AsUser(url, bus.UserSubscriber)
	}
	if err != nil {
		return err
	}
	if printURL {
		fmt.Fprintln(a.stdout, url)
		return nil
	}
	if len(patterns) == 0 {
		patterns = []string{">"}
	}
	for i, p := range patterns {
		if p != subjects.Prefix() && !strings.HasPrefix(p, subjects.Prefix()+".") {
			patterns[i] = subjects.Join(p)
		}
	}
	nc, err := bus.Dial(url, "corobus-sub", 0)
	if err != nil {
		return dialHint(err, nf, cfg)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 4096)
	for _, p := range patterns {
		sub, err := nc.ChanSubscribe(p, msgs)
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", p, err)
		}
		_ = sub.SetPendingLimits(-1, -1)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("subscribing to %s: %w", strings.Join(patterns, " "), err)
	}
	for n := 1; count == 0 || n <= count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			printMsg(a, n, m)
		}
	}
	return nil
}

// printMsg writes one message as `nats sub` does: a header line, the
// headers, the payload.
func printMsg(a *app, n int, m *nats.Msg) {
	w := a.stdout
	fmt.Fprintf(w, "[#%d] %s", n, m.Subject)
	if m.Reply != "" {
		fmt.Fprintf(w, " (reply to %s)", m.Reply)
	}
	fmt.Fprintf(w, " %d bytes\n", len(m.Data))
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m.Header {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range m.Header[k] {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
	switch {
	case len(m.Data) == 0:
	case printable(m.Data):
		fmt.Fprintf(w, "%s\n", strings.TrimRight(string(m.Data), "\x00\n"))
	default:
		fmt.Fprint(w, hex.Dump(m.Data))
	}
	fmt.Fprintln(w)
}

// printable is text worth printing as such: valid UTF-8 without control
// characters (a trailing NUL, as corosync strings end, is fine).
func printable(b []byte) bool {
	b = []byte(strings.TrimRight(string(b), "\x00"))
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}
