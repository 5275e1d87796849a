package bus

import (
	"context"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"time"
)

// refusals logs who the server refused — a route that could not prove it
// holds the cluster key, a client with wrong credentials — at warning
// level, at most once per RefusalWindow for each kind and remote host, with
// the count of those not logged in between. Someone hammering the port
// cannot flood the log, and the log still says who and how often.
type refusals struct {
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]*refusalCount
	total uint64
}

type refusalCount struct {
	last       time.Time // when a line was last logged for this key
	suppressed int
}

// RefusalWindow is how often a refusal of the same kind from the same host
// is logged.
const RefusalWindow = time.Minute

// maxRefusalKeys bounds the memory of refusals: past it the oldest are
// forgotten (and would be logged again).
const maxRefusalKeys = 4096

func newRefusals(log *slog.Logger) *refusals {
	return &refusals{log: log, window: RefusalWindow, now: time.Now, seen: map[string]*refusalCount{}}
}

// note records one refusal of kind ("route", "client") from addr (host or
// host:port) for reason; extra attributes (the user name) go in the line.
func (r *refusals) note(kind, addr, reason string, attrs ...any) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	r.mu.Lock()
	r.total++
	r.mu.Unlock()
	// One line per kind, host and reason: the reasons are few, so an
	// attacker cannot widen the key (user names are not in it).
	r.noteLevel(slog.LevelWarn, kind+" refused", kind+" "+host+" "+reason, append([]any{"from", addr, "reason", reason}, attrs...)...)
}

// noteLevel logs msg with attrs at level unless a line with the same key
// was logged less than a window ago; then it only counts it, and the next
// line of the key says how many were not logged.
func (r *refusals) noteLevel(level slog.Level, msg, key string, attrs ...any) {
	now := r.now()
	r.mu.Lock()
	c := r.seen[key]
	if c != nil && now.Sub(c.last) < r.window {
		c.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := 0
	if c == nil {
		if len(r.seen) >= maxRefusalKeys {
			r.forgetOldestLocked()
		}
		c = &refusalCount{}
		r.seen[key] = c
	} else {
		suppressed = c.suppressed
	}
	c.last, c.suppressed = now, 0
	r.mu.Unlock()
	if suppressed > 0 {
		attrs = append(attrs, "not_logged_since_last_line", suppressed)
	}
	r.log.Log(context.Background(), level, msg, attrs...)
}

func (r *refusals) forgetOldestLocked() {
	var oldest string
	var t time.Time
	for k, c := range r.seen {
		if oldest == "" || c.last.Before(t) {
			oldest, t = k, c.last
		}
	}
	delete(r.seen, oldest)
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
func (r *refusals) count() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
