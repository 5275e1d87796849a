package bus

import (
	"context"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sync/atomic"
	"time"

	"github.com/corobus/corobus/logsys"
)

// refusals logs who the server refused — a route that could not prove it
// holds the cluster key, a client with wrong credentials — at warning
// level, once per RefusalWindow for each kind, remote host and reason; the
// rest are counted and summarized when the window ends (logsys.Throttle).
// Someone hammering the port cannot flood the log, and the log still says
// who and how often.
type refusals struct {
	log      *slog.Logger
	throttle *logsys.Throttle
	total    atomic.Uint64
}

// RefusalWindow is how often a refusal of the same kind from the same host
// is logged.
const RefusalWindow = time.Minute

func newRefusals(log *slog.Logger) *refusals {
	return newRefusalsClock(log, logsys.NewThrottle(RefusalWindow, 1))
}

func newRefusalsClock(log *slog.Logger, throttle *logsys.Throttle) *refusals {
	return &refusals{log: log, throttle: throttle}
}

// note records one refusal of kind ("route", "client") from addr (host or
// host:port) for reason; extra attributes (the user name) go in the line.
func (r *refusals) note(kind, addr, reason string, attrs ...any) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	r.total.Add(1)
	// One line per kind, host and reason: the reasons are few, so an
	// attacker cannot widen the key (user names are not in it).
	r.noteLevel(slog.LevelWarn, kind+" refused", kind+" "+host+" "+reason, append([]any{"from", addr, "reason", reason}, attrs...)...)
}

// noteLevel logs msg with attrs at level unless a line with the same key
// was logged in the current window; then it only counts it, and one line
// at the window's end says how many were not logged.
func (r *refusals) noteLevel(level slog.Level, msg, key string, attrs ...any) {
	if r.throttle.Allow(key, func(n int, over time.Duration) {
		r.log.Log(context.Background(), level, msg, append(slices.Clone(attrs), "not_logged", n, "over", over.String())...)
	}) {
		r.log.Log(context.Background(), level, msg, attrs...)
	}
}

// routeHandshakeError matches nats-server's line for a route whose TLS
// handshake failed: "<addr> - rid:<n> - TLS route handshake error: <why>".
var routeHandshakeError = regexp.MustCompile(`^(\S+) - rid:\d+ - TLS route handshake error: (.*)$`)

// authError matches nats-server's line for a connection its authenticator
// refused; the authenticator (routeAuth, clientAuth) logged it already,
// with the reason.
var authError = regexp.MustCompile(`(?i)^\S+ - (rid|cid):\d+ - .*authentication error`)

// fromServerLog turns nats-server's own refusal lines into rate-limited
// refusals, and reports whether it did (the caller then drops the line).
func (r *refusals) fromServerLog(line string) bool {
	if m := routeHandshakeError.FindStringSubmatch(line); m != nil {
		r.note("route", m[1], "TLS handshake failed (no valid certificate of this cluster)", "detail", m[2])
		return true
	}
	return authError.MatchString(line)
}

// count is how many connections were refused since the server started.
func (r *refusals) count() uint64 { return r.total.Load() }
