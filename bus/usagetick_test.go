package bus

import (
	"testing"
	"time"
)

// The variable SlowUsageResend sets is nats-server's usage resend period,
// at its default. A nats-server that renamed or re-typed it fails to
// link; one that changed its meaning (another default) fails here, so
// that the linkname is looked at again rather than silently set.
func TestUsageTickIsNatsServers(t *testing.T) {
	if natsUsageTick != 1500*time.Millisecond {
		t.Fatalf("nats-server's usageTick is %v, want its default 1.5s: reread server/jetstream.go before setting it", natsUsageTick)
	}
}
