// Package vscheck judges what the members of one CPG group delivered, from
// the logs of services/cpg/cpgtest's cpgcheck program: the guarantees
// corosync's CPG gives and corobus must give too.
//
//   - no duplicates: a member delivers a message at most once;
//   - self-delivery in send order: a member delivers its own messages in
//     the order it sent them, without a gap, and every one of them if it
//     ended cleanly;
//   - total order: any two members deliver the messages they both deliver
//     in the same order;
//   - virtual synchrony: two members that deliver the same two consecutive
//     configuration changes deliver the same messages between them;
//   - membership: a message comes from a member of the deliverer's current
//     configuration.
//
// The same checker runs on logs of a real corosync cluster, so that it is
// known to accept what corosync does; its own tests feed it logs that break
// each rule, so that it is known to catch them.
package vscheck

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Proc names a member: node id and pid.
type Proc struct{ Node, PID uint32 }

func (p Proc) String() string { return fmt.Sprintf("%d/%d", p.Node, p.PID) }

// Msg names a message: its sender and the sender's sequence number.
type Msg struct {
	From Proc
	Seq  uint64
}

func (m Msg) String() string { return fmt.Sprintf("%s#%d", m.From, m.Seq) }

// Event is one line of a log: a delivery or a configuration change.
type Event struct {
	Msg     *Msg
	ConfChg string // the change as logged ("m=… l=… j=…")
	Members []Proc // of a configuration change
	Line    int    // in the log, for reports
}

// Log is what one member logged.
type Log struct {
	Name   string
	Proc   Proc
	Events []Event
	Sent   int  // messages it reported sent
	Clean  bool // it reached its end (END)
	Errors []string
}

// Parse reads a cpgcheck log.
func Parse(name string, r io.Reader) (*Log, error) {
	l := &Log{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "D":
			f := strings.Fields(rest)
			if len(f) != 3 {
				return nil, fmt.Errorf("%s:%d: bad delivery %q", name, n, line)
			}
			p, err := parseProc(f[0])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: bad sequence %q", name, n, f[1])
			}
			l.Events = append(l.Events, Event{Msg: &Msg{From: p, Seq: seq}, Line: n})
		case "C":
			m, err := parseConfChg(rest)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			l.Events = append(l.Events, Event{ConfChg: rest, Members: m, Line: n})
		case "S":
			l.Sent++
		case "E":
			l.Errors = append(l.Errors, fmt.Sprintf("%s:%d: %s", name, n, rest))
		case "END":
			l.Clean = true
		case "I":
			p, err := parseProc(rest)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			l.Proc = p
		case "T":
		default:
			return nil, fmt.Errorf("%s:%d: unknown line %q", name, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

func parseProc(s string) (Proc, error) {
	a, b, ok := strings.Cut(s, "/")
	n, err1 := strconv.ParseUint(a, 10, 32)
	p, err2 := strconv.ParseUint(strings.SplitN(b, "/", 2)[0], 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return Proc{}, fmt.Errorf("bad member %q", s)
	}
	return Proc{uint32(n), uint32(p)}, nil
}

// parseConfChg reads "m=a,b l=c j=d" and returns the members.
func parseConfChg(s string) ([]Proc, error) {
	f := strings.Fields(s)
	if len(f) != 3 || !strings.HasPrefix(f[0], "m=") || !strings.HasPrefix(f[1], "l=") || !strings.HasPrefix(f[2], "j=") {
		return nil, fmt.Errorf("bad configuration change %q", s)
	}
	var out []Proc
	for _, x := range strings.Split(strings.TrimPrefix(f[0], "m="), ",") {
		if x == "" {
			continue
		}
		p, err := parseProc(x)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Check judges the logs of one group's members and returns every
// violation found.
func Check(logs []*Log) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	pos := make([]map[Msg]int, len(logs))
	for i, l := range logs {
		for _, e := range l.Errors {
			bad("%s reported: %s", l.Name, e)
		}
		pos[i] = map[Msg]int{}
		var members []Proc
		seen := map[string]bool{}
		next := uint64(0)
		for k, e := range l.Events {
			if e.Msg == nil {
				if seen[e.ConfChg] {
					bad("%s:%d: configuration change %q seen twice: the virtual synchrony check needs each to be unique", l.Name, e.Line, e.ConfChg)
				}
				seen[e.ConfChg] = true
				members = e.Members
				continue
			}
			m := *e.Msg
			if _, dup := pos[i][m]; dup {
				bad("%s:%d: %s delivered twice", l.Name, e.Line, m)
				continue
			}
			pos[i][m] = k
			if members == nil {
				bad("%s:%d: %s delivered before any configuration change", l.Name, e.Line, m)
			} else if !slices.Contains(members, m.From) {
				bad("%s:%d: %s delivered from a process not in the configuration %v", l.Name, e.Line, m, members)
			}
			if m.From == l.Proc {
				if m.Seq != next {
					bad("%s:%d: own message %s delivered, expected #%d next", l.Name, e.Line, m, next)
				}
				next = m.Seq + 1
			}
		}
		if l.Clean && next != uint64(l.Sent) {
			bad("%s: sent %d messages and ended cleanly, delivered %d of its own", l.Name, l.Sent, next)
		}
	}
	// Total order: the common messages of two members in one order.
	for i := range logs {
		for j := i + 1; j < len(logs); j++ {
			last, lastMsg := -1, Msg{}
			for _, e := range logs[j].Events {
				if e.Msg == nil {
					continue
				}
				k, ok := pos[i][*e.Msg]
				if !ok {
					continue
				}
				if k < last {
					bad("%s and %s deliver %s and %s in opposite orders", logs[i].Name, logs[j].Name, lastMsg, *e.Msg)
					break
				}
				last, lastMsg = k, *e.Msg
			}
		}
	}
	// Virtual synchrony: same consecutive configuration changes, same
	// messages between them.
	type segment struct {
		next string
		msgs []Msg
	}
	segs := make([]map[string]segment, len(logs))
	for i, l := range logs {
		segs[i] = map[string]segment{}
		cur := ""
		var msgs []Msg
		for _, e := range l.Events {
			if e.Msg != nil {
				msgs = append(msgs, *e.Msg)
				continue
			}
			if cur != "" {
				segs[i][cur] = segment{next: e.ConfChg, msgs: msgs}
			}
			cur, msgs = e.ConfChg, nil
		}
	}
	for i := range logs {
		for j := i + 1; j < len(logs); j++ {
			for from, a := range segs[i] {
				b, ok := segs[j][from]
				if !ok || b.next != a.next {
					continue
				}
				if !slices.Equal(a.msgs, b.msgs) {
					bad("%s and %s both go from %q to %q but deliver different messages between: %s",
						logs[i].Name, logs[j].Name, from, a.next, firstDiff(a.msgs, b.msgs))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func firstDiff(a, b []Msg) string {
	for k := range min(len(a), len(b)) {
		if a[k] != b[k] {
			return fmt.Sprintf("at %d: %s vs %s (%d vs %d messages)", k, a[k], b[k], len(a), len(b))
		}
	}
	return fmt.Sprintf("%d vs %d messages", len(a), len(b))
}
