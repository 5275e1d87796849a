// Package beat puts periodic messages at rest on the wall clock: a
// heartbeat of period p goes out on the multiples of p since the Unix
// epoch, so that the heartbeats of one period that a node's processes send
// (and its peers', for totem) fall on the same instants, and each
// process that sends, relays or receives them wakes once a period for all
// of them rather than once for each.
package beat

import "time"

// Next is when a heartbeat sent at last is next due: the first multiple
// of period on the wall clock after last, so never more than period after
// it (a receiver that counts on one a period still gets it). Senders whose
// last heartbeats fell in the same period send their next ones at the same
// instant, give or take their clocks' skew. A clock that jumps only moves
// the phase: the wait is counted on the monotonic clock from last.
func Next(last time.Time, period time.Duration) time.Time {
	if period <= 0 {
		return last
	}
	rem := last.UnixNano() % int64(period)
	if rem < 0 { // before 1970
		rem += int64(period)
	}
	return last.Add(period - time.Duration(rem))
}
