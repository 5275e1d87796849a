// Package logsystest holds what tests of rate-limited logging share: a
// clock whose windows end when the test says so (logsys.Clock).
package logsystest

import (
	"sync"
	"time"
)

// ManualClock implements logsys.Clock: a timer fires only when EndWindows
// is called, so a test decides when a throttle's window ends.
type ManualClock struct {
	mu      sync.Mutex
	pending []*manualTimer
}

type manualTimer struct {
	f       func()
	stopped bool
}

// AfterFunc schedules f for the next EndWindows.
func (c *ManualClock) AfterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{f: f}
	c.pending = append(c.pending, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// EndWindows runs every timer scheduled so far and not stopped (not the
// ones they schedule in turn).
func (c *ManualClock) EndWindows() {
	c.mu.Lock()
	due := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, t := range due {
		c.mu.Lock()
		run := !t.stopped
		c.mu.Unlock()
		if run {
			t.f()
		}
	}
}
