package beat

import (
	"testing"
	"time"
)

// Heartbeats at rest go out on the wall clock's multiples of the period, so
// that the senders of an idle node (and cluster) beat together; the wait after a
// heartbeat is never longer than the period, whatever the phase it was
// sent at (totem's failure detector and the loader's expiry count on it).
func TestNextIsTheNextMultipleWithinAPeriod(t *testing.T) {
	const period = 333 * time.Millisecond
	base := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	cases := []time.Time{
		base,
		base.Add(time.Nanosecond),
		base.Add(period / 2),
		base.Add(period - time.Nanosecond),
		time.Unix(0, 0),
		time.Unix(0, 0).Add(-time.Nanosecond), // before 1970: a negative remainder
		time.Unix(0, 0).Add(-period - 7*time.Nanosecond),
		time.Now(), // with a monotonic reading
	}
	for _, last := range cases {
		due := Next(last, period)
		wait := due.Sub(last)
		if wait <= 0 || wait > period {
			t.Errorf("after %v: due %v, %v later; want within (0, %v]", last, due, wait, period)
		}
		if r := due.UnixNano() % int64(period); r != 0 {
			t.Errorf("after %v: due %v is %v past a multiple of %v", last, due, time.Duration(r), period)
		}
	}
	// Two nodes whose last heartbeats fell in the same period beat next
	// at the same instant.
	grid := time.Unix(0, 0).Add(5_300_000 * period) // a multiple, in 2025
	a := Next(grid.Add(10*time.Millisecond), period)
	b := Next(grid.Add(300*time.Millisecond), period)
	if !a.Equal(b) {
		t.Errorf("heartbeats 10 and 300 ms into a period are next due at %v and %v; want one instant", a, b)
	}
	// A heartbeat sent on a multiple waits a whole period, not zero.
	onGrid := time.Unix(0, 0).Add(1000 * period)
	if got := Next(onGrid, period); !got.Equal(onGrid.Add(period)) {
		t.Errorf("after a heartbeat on a multiple, %v: due %v; want %v", onGrid, got, onGrid.Add(period))
	}
}
