package libqb

import (
	"log/slog"
	"slices"
	"time"

	"github.com/corobus/corobus/logsys"
)

// logLimiter logs a repeating condition (connections refused at a limit,
// accept failing for lack of descriptors) once, then counts it: at the end
// of the interval one line says how many more there were (logsys.Throttle).
// A local user who provokes it in a loop cannot flood the node's log, and
// no occurrence goes uncounted.
type logLimiter struct {
	log      *slog.Logger
	throttle *logsys.Throttle
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: log, throttle: logsys.NewThrottle(interval, 1)}
}

// Warn logs msg under the condition key unless it was logged within the
// current interval; those that were not are summarized when it ends.
func (l *logLimiter) Warn(key, msg string, args ...any) {
	if l.throttle.Allow(key, func(n int, over time.Duration) {
		l.log.Warn(msg, append(slices.Clone(args), "repeated", n, "over", over.String())...)
	}) {
		l.log.Warn(msg, args...)
	}
}
