package bus

import (
	"crypto/subtle"

	"github.com/nats-io/nats-server/v2/server"
)

// routeAuth admits a route that came through the TLS handshake (so its
// certificate chains to the cluster's CA) and, when a route password is
// derived from the key, presents it. Everything else is refused and
// logged, rate-limited.
type routeAuth struct {
	sec     *RouteSecurity
	refused *refusals
}

func (a routeAuth) Check(c server.ClientAuthentication) bool {
	addr := "unknown"
	if ra := c.RemoteAddress(); ra != nil {
		addr = ra.String()
	}
	if a.sec.TLS != nil && c.GetTLSConnectionState() == nil {
		a.refused.note("route", addr, "no TLS")
		return false
	}
	if a.sec.Password == "" {
		return true
	}
	o := c.GetOpts()
	if subtle.ConstantTimeCompare([]byte(o.Username), []byte(a.sec.User)) != 1 ||
		subtle.ConstantTimeCompare([]byte(o.Password), []byte(a.sec.Password)) != 1 {
		a.refused.note("route", addr, "wrong route credentials (not derived from this cluster's key)", "user", o.Username)
		return false
	}
	return true
}
