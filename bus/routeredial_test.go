package bus

import (
	"testing"
	"time"
)

// The variable fastRouteRedial sets is nats-server's delay before an
// explicit route that closed is dialled again, at its default. A
// nats-server that renamed or re-typed it fails to link; one that
// changed its meaning (another default, as DEFAULT_ROUTE_RECONNECT in
// server/const.go) fails here, so that the linkname is looked at again
// rather than silently set: reread reConnectToRoute in server/route.go.
func TestRouteRedialIsNatsServers(t *testing.T) {
	if natsRouteReconnectDefault != time.Second {
		t.Fatalf("nats-server's routeReconnectDelay is %v, want its default 1s: reread server/route.go before setting it", natsRouteReconnectDefault)
	}
	fastRouteRedial()
	if natsRouteReconnectDelay != RouteRedial {
		t.Fatalf("routeReconnectDelay is %v after fastRouteRedial, want %v", natsRouteReconnectDelay, RouteRedial)
	}
}
