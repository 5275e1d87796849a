package bus

import (
	"time"
	_ "unsafe" // go:linkname
)

// A clustered nats-server sends each JetStream account's storage usage to
// the other servers ($JSC.ARU.<account>.<server>) at once when it changes
// (at most every 250 ms) and again on a timer, every usageTick (1.5 s),
// forever, whether it changed or not. The peers add it up for the
// account's limits; corobus sets none (the global account's JetStream is
// unlimited), so the totals only feed the account's usage report. At
// rest the timer made each bus send one update and receive one from each
// peer every 1.5 s: on three nodes two wake-ups a second a node, for
// figures that had not moved.
//
//go:linkname natsUsageTick github.com/nats-io/nats-server/v2/server.usageTick
var natsUsageTick time.Duration

// UsageResend is how often a bus resends an unchanged account usage to
// its peers. A change still goes out at once; what waits for the resend is
// only the last change of a burst that fell inside the 250 ms after the
// one before it: a peer's total may lag by that much for up to this long.
const UsageResend = 30 * time.Second

// SlowUsageResend sets nats-server's usage resend period to UsageResend.
// It is process-wide: call it first thing in main, before any server
// starts (every server reads the period when it rearms its timer).
func SlowUsageResend() { natsUsageTick = UsageResend }
