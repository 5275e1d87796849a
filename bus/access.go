package bus

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/corobus/corobus/config"
)

// Least privilege on the bus. Every process of a node connects as a user of
// its own — a layer as its layer name (objdb, loader, …), a built-in
// service as its service name (cmap, …), a component executable as
// component.<name> — and may publish and subscribe only to the subjects
// its Grant lists. The node's token is the administrator (the CLI), with
// every permission; "subscriber" may subscribe to the cluster's subjects
// and publish nothing. docs/security.md says how a new layer or component
// declares its grant.

// Grant is what one bus user may do. Subjects may hold NATS wildcards; a
// deny entry wins over an allow entry.
type Grant struct {
	Pub, Sub []string
	DenyPub  []string
	// Respond lets the user answer the requests it receives: publish once
	// to the reply subject of a message delivered to it, within
	// ResponseWindow, without a standing permission on inboxes.
	Respond bool
}

// ResponseWindow is how long a user may take to answer a request it
// received (a sync hook, a service load).
const ResponseWindow = 10 * time.Minute

// Merge is the union of grants.
func Merge(gs ...Grant) Grant {
	var out Grant
	for _, g := range gs {
		out.Pub = append(out.Pub, g.Pub...)
		out.Sub = append(out.Sub, g.Sub...)
		out.DenyPub = append(out.DenyPub, g.DenyPub...)
		out.Respond = out.Respond || g.Respond
	}
	out.Pub = uniq(out.Pub)
	out.Sub = uniq(out.Sub)
	out.DenyPub = uniq(out.DenyPub)
	return out
}

func uniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// permissions turns a grant into nats-server's form. An allow list is
// never nil: nil would allow everything.
func (g Grant) permissions() *server.Permissions {
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: append([]string{}, g.Pub...), Deny: g.DenyPub},
		Subscribe: &server.SubjectPermission{Allow: append([]string{}, g.Sub...)},
	}
	if g.Respond {
		p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: ResponseWindow}
	}
	return p
}

// Access is what a grant is built from: the cluster's subjects and the node
// whose bus the user connects to (a layer always connects to its own
// node's bus).
type Access struct {
	Subjects Subjects
	Node     uint32
	// Bucket is the objdb KV bucket of the cluster.
	Bucket string
	// User is the user the grant is for.
	User string
	// Config is the node's configuration (nil in tests that start bare
	// buses): a grant may depend on it (ipc.colocate).
	Config *config.Config
}

// Role builds a user's grant.
type Role func(a Access) Grant

// Fixed user names.
const (
	// UserAdmin is who holds the node's token: every permission.
	UserAdmin = "admin"
	// UserSubscriber may subscribe to the cluster's subjects, nothing
	// more: outside observers (`corobus sub`, `nats sub`).
	UserSubscriber = "subscriber"
	// ComponentUserPrefix starts the user of a component executable
	// (loader.component_dir), e.g. component.mysvc.
	ComponentUserPrefix = "component."
)

// ComponentUser is the bus user of the component executable name.
func ComponentUser(name string) string { return ComponentUserPrefix + SanitizeToken(name) }

// Users maps user names to roles: the one registry of who may do what on
// the bus. NewUsers holds the fixed users; a node adds its layers' and
// built-in services' roles.
type Users struct {
	roles map[string]Role
}

// NewUsers returns the registry with the subscriber and the component
// template.
func NewUsers() *Users {
	return &Users{roles: map[string]Role{UserSubscriber: SubscriberRole}}
}

// Add declares user's role. A name is declared once.
func (u *Users) Add(user string, r Role) error {
	switch {
	case user == "" || strings.ContainsAny(user, " \t\r\n*>:@/"):
		return fmt.Errorf("bus user %q: not a valid user name", user)
	case user == UserAdmin || strings.HasPrefix(user, ComponentUserPrefix):
		return fmt.Errorf("bus user %q: the name is reserved", user)
	case r == nil:
		return fmt.Errorf("bus user %q declares no grant", user)
	}
	if _, dup := u.roles[user]; dup {
		return fmt.Errorf("bus user %q declared twice", user)
	}
	u.roles[user] = r
	return nil
}

// Lookup returns user's role: a declared one, or the component template
// for component.<name>.
func (u *Users) Lookup(user string) (Role, bool) {
	if u == nil {
		return nil, false
	}
	if r, ok := u.roles[user]; ok {
		return r, true
	}
	if name, ok := strings.CutPrefix(user, ComponentUserPrefix); ok && name != "" && SanitizeToken(name) == name {
		return func(a Access) Grant { return ComponentExecutableRole(a, name) }, true
	}
	return nil, false
}

// Names lists the declared users, sorted.
func (u *Users) Names() []string {
	var out []string
	for n := range u.roles {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// UserPassword is user's password on a node whose token is token: an HMAC
// of the user name under the token. Whoever holds the token (the node's
// owner) can derive every user's password; a process handed only its own
// password cannot derive another's, nor the token.
func UserPassword(token, user string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("corobus bus user\x00" + user))
	return hex.EncodeToString(m.Sum(nil))
}

// InboxPrefix is the prefix of user's reply inboxes: each user receives its
// replies under its own prefix, so that no other user may subscribe to
// them. Connections made as a user (Dial, Server.ConnectAs) use it.
func InboxPrefix(user string) string { return "_INBOX." + SanitizeToken(user) }

// ObjdbBucket is the JetStream KV bucket that holds a cluster's objdb.
func ObjdbBucket(cluster string) string {
	b := []byte("objdb_" + cluster)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
