package libqb

import (
	"log/slog"
	"sync"
	"time"
)

// logLimiter logs a repeating condition (connections refused at a limit,
// accept failing for lack of descriptors) once, then at most once per
// interval with the number of times it happened in between: a local user
// who provokes it in a loop cannot flood the node's log.
type logLimiter struct {
	log      *slog.Logger
	interval time.Duration

	mu    sync.Mutex
	conds map[string]*limitedCond
}

type limitedCond struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: log, interval: interval, conds: map[string]*limitedCond{}}
}

// Warn logs msg under the condition key unless it was logged less than an
// interval ago; the next line that is logged carries the count of those
// that were not.
func (l *logLimiter) Warn(key, msg string, args ...any) {
	l.mu.Lock()
	c := l.conds[key]
	if c == nil {
		c = &limitedCond{}
		l.conds[key] = c
	}
	now := time.Now()
	if !c.last.IsZero() && now.Sub(c.last) < l.interval {
		c.suppressed++
		l.mu.Unlock()
		return
	}
	n := c.suppressed
	c.last, c.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "repeated", n, "within", l.interval.String())
	}
	l.log.Warn(msg, args...)
}
