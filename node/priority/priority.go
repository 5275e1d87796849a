// Package priority gives a node's processes the scheduling priority
// corosync gives itself (system.sched_rr, system.priority).
//
// corosync runs SCHED_RR at the highest real-time priority by default,
// and when the kernel refuses that, at nice -20: membership must keep
// its heartbeats on time on a busy host, or a loaded node is declared
// dead and fenced. corobus does not use SCHED_RR — the Go runtime's
// spinning threads at a real-time priority never yield the CPU
// (docs/architecture.md, Departures) — and takes corosync's fallback
// instead: nice -20 for every process of the node. With sched_rr other
// than yes, system.priority sets the nice value as corosync does.
package priority

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/config/keys"
)

// Setting is the nice value a node's processes run at.
type Setting struct {
	// Nice is the value; Set false leaves the processes as they started.
	Nice int
	Set  bool
	// Explicit: system.priority asked for it, rather than the default
	// that stands in for corosync's real-time scheduling. A refusal is
	// then a warning, not a note.
	Explicit bool
}

// FromConfig is the node's setting: sched_rr yes (or absent) is nice -20;
// otherwise system.priority if present, else nothing.
func FromConfig(c *config.Config) (Setting, error) {
	if rr := c.String("system.sched_rr"); rr == "" || rr == "yes" {
		return Setting{Nice: keys.NiceMax, Set: true}, nil
	}
	v := c.String("system.priority")
	if v == "" {
		return Setting{}, nil
	}
	n, err := keys.ParsePriority(v)
	if err != nil {
		return Setting{}, fmt.Errorf("system.priority: %w", err)
	}
	return Setting{Nice: n, Set: true, Explicit: true}, nil
}

// Apply gives every thread of this process the setting's nice value (a
// Linux nice value is a thread's; threads made later, and processes
// started later, inherit their creator's). A process already at the
// value — a layer started by `corobus up`, which applied it first — does
// nothing. Without the right to raise its priority (not root, no
// CAP_SYS_NICE) the process runs at its own: quiet says the refusal was
// already reported by the process that started this one.
func Apply(s Setting, log *slog.Logger, quiet bool) {
	if !s.Set {
		return
	}
	cur, err := Nice(0)
	if err == nil && cur == s.Nice {
		return
	}
	if err := setAll(s.Nice); err != nil {
		msg := "the node's processes run at nice " + strconv.Itoa(cur)
		switch {
		case s.Explicit:
			log.Warn(msg+": system.priority not applied", "priority", s.Nice, "err", err)
		case !quiet:
			log.Info(msg+", not -20 as corosync's real-time priority would have them: raising it needs root or CAP_SYS_NICE", "err", err)
		}
		return
	}
	log.Debug("priority set", "nice", s.Nice, "explicit", s.Explicit)
}

// setAll sets the nice value of every thread of the process: twice over
// the thread list, for a thread a not yet visited one made meanwhile.
func setAll(nice int) error {
	for range 2 {
		tids, err := threads()
		if err != nil {
			return err
		}
		for _, tid := range tids {
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("setpriority(thread %d, %d): %w", tid, nice, err)
			}
		}
	}
	return nil
}

func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("listing this process's threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// Nice is a thread's nice value (0: the calling thread). The system
// call returns 20 - nice, never negative.
func Nice(tid int) (int, error) {
	v, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil {
		return 0, fmt.Errorf("getpriority: %w", err)
	}
	return 20 - v, nil
}
