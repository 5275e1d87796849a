package bus

import (
	"sync"
	"time"
	_ "unsafe" // go:linkname
)

// When two nodes dial each other at the same moment, each registers the
// connection it dialled and closes the other's as a duplicate, so both
// connections close (nats-server's route.go: handleDuplicateRoute, then
// reconnect). Each end dials again after routeReconnectDelay, a fixed
// second for an explicit route, plus nats-server's own 0-100 ms of
// jitter. Nodes booted together cross often: in BenchmarkScale at 32
// nodes 96-97 % of the routes were up after 0.9 s and the crossed ones a
// second later (2 Dec, docs/totem.md, Scale), a second in which nothing
// else was left to do. The same delay is waited after a live route drops
// (its peer died or restarted) before the first redial.
//
//go:linkname natsRouteReconnectDelay github.com/nats-io/nats-server/v2/server.routeReconnectDelay
var natsRouteReconnectDelay time.Duration

// natsRouteReconnectDefault is nats-server's value, read before any bus
// sets it (package variables of an imported package are initialized
// first): TestRouteRedialIsNatsServers checks it.
var natsRouteReconnectDefault = natsRouteReconnectDelay

// RouteRedial is how long a bus waits, plus nats-server's 0-100 ms of
// jitter, before it dials again a route that closed: crossed dials at a
// start, a peer that died. The jitter is what separates two crossed
// nodes' next dials; a dial still refused is retried every second
// (nats-server's routeConnectDelay, unchanged).
const RouteRedial = 100 * time.Millisecond

var routeRedialOnce sync.Once

// fastRouteRedial sets nats-server's route redial delay to RouteRedial,
// once per process, before StartServer's first server starts (every
// server's reconnect reads it after its own StartServer has passed here).
func fastRouteRedial() {
	routeRedialOnce.Do(func() { natsRouteReconnectDelay = RouteRedial })
}
