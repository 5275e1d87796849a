package bus

import (
	"context"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname

	"github.com/corobus/corobus/bus/beat"
)

// nats-server's stores (every JetStream file or memory store: the objdb
// bucket's stream, the raft logs of the meta group and of the stream's
// replicas) read the time for their caches' access stamps from its ats
// package, an atomic that a goroutine refreshes every ats.TickInterval
// (100 ms) for as long as any store is registered (ats.Register, one
// reference a store). In an idle bus that goroutine was 10 of its
// wake-ups a second, more than totem's heartbeats. The stamps decide only
// when a message block's cache or subject index may be dropped and its
// file closed (after 10 s, and longer, without use), the time of skip
// records, and, for streams with a maximum age or message TTLs (corobus
// has none), when messages expire; a stored message's timestamp comes
// from the clock itself.
//
// SlowAccessTime takes the first reference itself, so that ats.Register
// never starts nats-server's goroutine, and refreshes the atomic every
// AccessTimeTick instead.
//
//go:linkname atsRefs github.com/nats-io/nats-server/v2/server/ats.refs
var atsRefs atomic.Int64

//go:linkname atsUtime github.com/nats-io/nats-server/v2/server/ats.utime
var atsUtime atomic.Int64

// AccessTimeTick is how often the bus refreshes nats-server's access
// time: a store's stamps lag the clock by up to this much, a tenth of the
// 10 s a block's cache is kept without use. The refreshes fall on the
// wall clock's whole seconds (package beat), where the node's other
// periodic work at rest (every 5 s) falls too.
const AccessTimeTick = time.Second

// SlowAccessTime refreshes nats-server's access time every period, on the
// wall clock's multiples of it, in place of nats-server's 100 ms ticker.
// Call it before the process's first JetStream store exists: if one does
// (the ticker already runs, or another bus of the process refreshes), it
// does nothing and says false. After ctx ends it goes on refreshing while
// any store is left, and stops once none is, handing the reference back:
// a store registered after that starts nats-server's ticker as before.
func SlowAccessTime(ctx context.Context, period time.Duration) bool {
	if period <= 0 || !atsRefs.CompareAndSwap(0, 1) {
		return false
	}
	atsUtime.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTimer(time.Until(beat.Next(time.Now(), period)))
		defer t.Stop()
		done := ctx.Done()
		for {
			select {
			case <-t.C:
				t.Reset(time.Until(beat.Next(time.Now(), period)))
			case <-done:
				done = nil
			}
			// Only our reference left once the server has closed its
			// stores: give it back (from 1, so a store registering at
			// this instant either counts before us or starts
			// nats-server's ticker after).
			if done == nil && atsRefs.CompareAndSwap(1, 0) {
				return
			}
			atsUtime.Store(time.Now().UnixNano())
		}
	}()
	return true
}
