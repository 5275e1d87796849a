package bus

import (
	"crypto/subtle"
	"log/slog"
	"regexp"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// clientAuth admits the clients of a node's bus: the token (the node's
// administrator, every permission), or a declared user with the password
// derived from the token and the permissions of its role. Everything else
// is refused and logged, rate-limited.
type clientAuth struct {
	token   string
	users   *Users
	access  Access
	refused *refusals
}

func (a clientAuth) Check(c server.ClientAuthentication) bool {
	addr := "in-process"
	if ra := c.RemoteAddress(); ra != nil {
		addr = ra.String()
	}
	o := c.GetOpts()
	switch {
	case o.Token != "":
		if subtle.ConstantTimeCompare([]byte(o.Token), []byte(a.token)) != 1 {
			a.refused.note("client", addr, "wrong token")
			return false
		}
		c.RegisterUser(&server.User{Username: UserAdmin})
		return true
	case o.Username != "":
		role, ok := a.users.Lookup(o.Username)
		if !ok {
			a.refused.note("client", addr, "unknown user", "user", o.Username)
			return false
		}
		if subtle.ConstantTimeCompare([]byte(o.Password), []byte(UserPassword(a.token, o.Username))) != 1 {
			a.refused.note("client", addr, "wrong password", "user", o.Username)
			return false
		}
		acc := a.access
		acc.User = o.Username
		c.RegisterUser(&server.User{Username: o.Username, Permissions: role(acc).permissions()})
		return true
	default:
		a.refused.note("client", addr, "no credentials")
		return false
	}
}

// violations records the publishes and subscriptions the server refused a
// user for lack of permission: a layer doing what its grant does not allow
// is a bug, logged loudly (once a minute per user and subject) with what to
// change, and kept for tests (Server.Violations).
type violations struct {
	log *slog.Logger
	lim *refusals

	mu   sync.Mutex
	seen []Violation
}

// Violation is one refused publish or subscription.
type Violation struct {
	Kind    string // publish, subscription
	User    string
	Subject string
}

// maxViolations bounds what is kept for Server.Violations.
const maxViolations = 256

// violationLine matches nats-server's lines for a refused publish or
// subscription: `<addr> - cid:7 - "<client name>" - "$G/user:objdb" -
// Publish Violation - Subject "x"` (or Subscription …, or … - Reply "x").
var violationLine = regexp.MustCompile(`(?:"[^"]*/user:([^"]+)" - )?(Publish|Subscription) Violation - (?:Subject|Reply) "([^"]*)"`)

// fromServerLog records a violation line; it reports whether line was one.
func (v *violations) fromServerLog(line string) bool {
	m := violationLine.FindStringSubmatch(line)
	if m == nil {
		return false
	}
	kind := "publish"
	if m[2] == "Subscription" {
		kind = "subscription"
	}
	viol := Violation{Kind: kind, User: m[1], Subject: m[3]}
	v.mu.Lock()
	if len(v.seen) < maxViolations {
		v.seen = append(v.seen, viol)
	}
	v.mu.Unlock()
	v.lim.noteLevel(slog.LevelError, "bus permission violation", "user "+viol.User+" "+kind+" "+viol.Subject,
		"user", viol.User, "kind", kind, "subject", viol.Subject,
		"fix", "declare the subject in the grant of "+viol.User+" (layer.Layer.Grant, bus/grants.go; docs/security.md)")
	return true
}

func (v *violations) list() []Violation {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Violation(nil), v.seen...)
}
