// Package priority gives a node's processes the scheduling priority
// corosync's system.sched_rr and system.priority ask for.
//
// corosync runs SCHED_RR at the highest real-time priority by default,
// and when the kernel refuses that, at nice -20. corobus does neither by
// default: the Go runtime's spinning threads at a real-time priority
// never yield the CPU, and nice -20 for every process of a node — many
// processes, where corosync is one — starved the node's own clients
// (docs/architecture.md, Departures). With sched_rr other than yes,
// system.priority sets the nice value of every process of the node, as
// corosync sets its own.
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
}

// FromConfig is the node's setting: with sched_rr other than yes,
// system.priority if present; else nothing (corosync would run SCHED_RR).
func FromConfig(c *config.Config) (Setting, error) {
	if rr := c.String("system.sched_rr"); rr == "" || rr == "yes" {
		return Setting{}, nil
	}
	v := c.String("system.priority")
	if v == "" {
		return Setting{}, nil
	}
	n, err := keys.ParsePriority(v)
	if err != nil {
		return Setting{}, fmt.Errorf("system.priority: %w", err)
	}
	return Setting{Nice: n, Set: true}, nil
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
	cur, nerr := Nice(0)
	if nerr == nil && cur == s.Nice {
		return
	}
	if err := setAll(s.Nice); err != nil {
		if !quiet {
			// The nice value the processes keep, when it could be read:
			// a warning that said 0 for an unreadable value misled.
			at := "their own nice value"
			if nerr == nil {
				at = "nice " + strconv.Itoa(cur)
			}
			log.Warn("the node's processes run at "+at+": system.priority not applied (raising a priority needs root or CAP_SYS_NICE)", "priority", s.Nice, "err", err)
		}
		return
	}
	log.Debug("priority set", "nice", s.Nice)
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
