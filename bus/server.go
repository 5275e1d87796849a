// Package bus is corobus's totem layer: the embedded nats-server every other
// layer talks through, with routes to the other nodes of the nodelist.
package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/logsys"
)

// ServerConfig is everything the embedded server needs. Build it from a node
// configuration with ServerConfigFrom, or by hand in tests.
type ServerConfig struct {
	NodeID      uint32
	ClusterName string
	// Listen is the client listener's host; ClientPort its port (-1 picks a
	// free one, for tests).
	Listen     string
	ClientPort int
	// RouteHost and RoutePort are this node's route listener; Routes the
	// route URLs of every node of the nodelist (this node's own is fine:
	// the server recognises itself). No routes means a one-node bus.
	RouteHost string
	RoutePort int
	Routes    []string
	// StoreDir holds JetStream's files (in a jetstream/ directory that
	// nats-server makes below it).
	StoreDir string
	// Token is the node's administrator credential (every permission),
	// and the secret every user's password is derived from. Empty: a
	// random one, for in-process use (tests); clients still authenticate.
	Token string
	// Subjects are the cluster's subjects, Users the declared bus users
	// with their roles (nil: only the fixed ones); Config, when set, is
	// handed to the roles (a grant may depend on it).
	Subjects Subjects
	Users    *Users
	Config   *config.Config
	// Route protects the routes (TLS, route password); nil leaves them
	// plain, as corosync's totem is with crypto off.
	Route *RouteSecurity
	// LameDuck is how long a graceful shutdown lets clients move away.
	LameDuck time.Duration
	Logger   *slog.Logger
	// Tags are the server's JetStream placement tags (nats-server's
	// server_tags): a stream whose placement names them is put on this
	// server. A node has none; tests use them to put a stream on the
	// node of their choice (bustest).
	Tags []string
}

// ServerConfigFrom derives the local node's server configuration from a node
// configuration. The token is read from (or created in) the state directory
// unless bus.token is configured.
func ServerConfigFrom(cfg *config.Config, log *slog.Logger) (ServerConfig, error) {
	local, err := cfg.LocalNode()
	if err != nil {
		return ServerConfig{}, err
	}
	nodes, err := cfg.Nodes()
	if err != nil {
		return ServerConfig{}, err
	}
	sc := ServerConfig{
		NodeID:      local.ID,
		ClusterName: cfg.ClusterName(),
		Listen:      cfg.String("bus.listen"),
		ClientPort:  local.ClientPort,
		RouteHost:   local.Addr,
		RoutePort:   local.BusPort,
		StoreDir:    cfg.StateDir(), // nats-server adds its own jetstream/ below
		LameDuck:    2 * time.Second,
		Logger:      log,
		Config:      cfg,
	}
	if sc.Subjects, err = NewSubjects(cfg.Prefix()); err != nil {
		return ServerConfig{}, err
	}
	if len(nodes) > 1 {
		for _, n := range nodes {
			sc.Routes = append(sc.Routes, "nats-route://"+net.JoinHostPort(n.Addr, strconv.Itoa(n.BusPort)))
		}
	}
	// The crypto settings are checked (and the key read) even on one
	// node, as corosync checks them: a file that would not protect a
	// second node's routes is refused before it has one.
	if sc.Route, err = RouteSecurityFrom(cfg, local.ID); err != nil {
		return ServerConfig{}, err
	}
	tok, err := EnsureToken(cfg)
	if err != nil {
		return ServerConfig{}, err
	}
	sc.Token = tok
	return sc, nil
}

// ServerName is the NATS server name of a node; JetStream peers and route
// listings use it.
func ServerName(node uint32) string { return "node" + strconv.FormatUint(uint64(node), 10) }

// Server is a running embedded nats-server.
type Server struct {
	started time.Time
	cfg     ServerConfig
	ns      *server.Server
	log     *slog.Logger
	refused *refusals
	viol    *violations
}

// StartServer starts the server and waits until it accepts clients and
// JetStream is enabled.
func StartServer(ctx context.Context, sc ServerConfig) (*Server, error) {
	if sc.Logger == nil {
		sc.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(sc.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the JetStream store %s: %w", sc.StoreDir, err)
	}
	if sc.Token == "" {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("generating a bus token: %w", err)
		}
		sc.Token = hex.EncodeToString(raw)
	}
	if sc.Subjects.Prefix() == "" {
		var err error
		if sc.Subjects, err = NewSubjects(DefaultPrefix(sc.ClusterName)); err != nil {
			return nil, err
		}
	}
	if sc.Users == nil {
		sc.Users = NewUsers()
	}
	refused := newRefusals(sc.Logger)
	viol := &violations{log: sc.Logger, lim: newRefusals(sc.Logger)}
	opts := &server.Options{
		ServerName:          ServerName(sc.NodeID),
		Host:                sc.Listen,
		Port:                sc.ClientPort,
		JetStream:           true,
		StoreDir:            sc.StoreDir,
		NoSigs:              true, // the process's run.Group owns signals
		NoSystemAccount:     false,
		LameDuckDuration:    sc.LameDuck,
		LameDuckGracePeriod: sc.LameDuck / 2,
		CustomClientAuthentication: clientAuth{token: sc.Token, users: sc.Users, refused: refused,
			access: Access{Subjects: sc.Subjects, Node: sc.NodeID, Bucket: ObjdbBucket(sc.ClusterName), Config: sc.Config}},
		// A client is a process of this node: one that dies closes its
		// socket, so its pings only find a hung one. Every 10 s rather
		// than 2: each ping timer and PING/PONG wakes the bus and a
		// silent layer, all day, on every connection.
		PingInterval: 10 * time.Second,
		MaxPingsOut:  2,
	}
	opts.Tags = append(opts.Tags, sc.Tags...)
	if len(sc.Routes) > 0 {
		opts.Cluster = server.ClusterOpts{
			Name: sc.ClusterName,
			Host: sc.RouteHost,
			Port: sc.RoutePort,
			// Route pings find a dead peer well inside totem.token's
			// order of magnitude; the membership protocol has its own
			// detector.
			PingInterval: 2 * time.Second,
			MaxPingsOut:  2,
			// One connection per peer, carrying every account's
			// traffic, the system account's (JetStream's raft,
			// server statistics) too: no pool, so nats-server pins
			// no second connection for the system account. Both
			// ends of a pair dial each other at start, and when the
			// two dials cross each end keeps its own and closes the
			// other's, so both are lost and redialled (after
			// RouteRedial), again and again while the handshakes are slow
			// (docs/totem.md, Scale): half the connections, half
			// the crossings and handshakes. 32 nodes in one process
			// formed in 3.0-3.2 s instead of 6.1-9.1 s, on half
			// the CPU; 3 to 16 nodes unchanged. The price: a
			// JetStream catch-up's bytes queue on the socket that
			// totem's frames use (milliseconds on a LAN, against
			// totem.token's second). A node still on the pool of
			// one (before 1 Dec) and one without should still
			// route, nats-server treating the other as a server
			// without pools (read in its route.go, not tested).
			PoolSize: -1,
			// Route compression off rather than nats-server's
			// default "accept": two "accept" ends never compress
			// (each waits for the other to ask), but a server
			// configured for compression holds the INFO of every
			// route it dials until the peer's INFO arrives, a round
			// trip that widens the window in which two nodes' dials
			// to each other cross (docs/totem.md, Scale). A node
			// still on "accept" and one on "off" settle on off.
			// 32 nodes in one process formed in 1.5-1.8 s in seven
			// runs of eight instead of 2.7-2.9 s in six of eight.
			Compression: server.CompressionOpts{Mode: server.CompressionOff},
			// The other nodes' client URLs are not advertised to this
			// node's clients. A node's layers and corosync's clients
			// talk to their own node's bus, as libcpg talks to its own
			// corosync: a layer that followed the advertised URLs to
			// another node's bus while its own restarted would serve
			// the wrong node (or be refused, each node having its own
			// token). Advertising also cost every route that came up
			// an INFO to every client of the server (32 nodes: 31 per
			// client, each URL list decoded and merged by nats.go) and
			// a client URL in each route INFO its peers gossip on.
			NoAdvertise: true,
		}
		if rs := sc.Route; rs != nil {
			opts.Cluster.TLSConfig = rs.TLS
			opts.Cluster.TLSTimeout = 5 // seconds; a loaded machine is slow to handshake
			opts.Cluster.Username, opts.Cluster.Password = rs.User, rs.Password
			opts.CustomRouterAuthentication = routeAuth{sec: rs, refused: refused}
		}
		self := net.JoinHostPort(sc.RouteHost, strconv.Itoa(sc.RoutePort))
		for _, r := range sc.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("route %s: %w", r, err)
			}
			if u.Host == self && len(sc.Routes)%2 == 1 {
				// nats-server takes the length of its route list for the
				// size of a fresh JetStream meta group, and a fresh
				// group, its logs empty, elects its first leader only
				// with a vote from every member of that size. Listing
				// every node, itself included (not a route: nats-server
				// skips it), a fresh three-node cluster waited for all
				// three; corosync is quorate with two. Without itself,
				// an odd N's list says N-1, whose majority is still
				// N's (N/2+1: any two majorities share a node), so a
				// fresh cluster of N starts with N-1 of them: 2 of 3.
				// An even N keeps itself listed: N-1 would make half a
				// majority, and two halves could each elect a leader.
				continue
			}
			if sc.Route != nil && sc.Route.User != "" {
				u.User = url.UserPassword(sc.Route.User, sc.Route.Password)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	// Crossed route dials are dialled again after 0.1 s, not nats-server's
	// second (bus/routeredial.go).
	fastRouteRedial()
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring nats-server: %w", err)
	}
	// A peer that is down makes nats-server log each reconnect attempt of
	// each route, forever: a repeated condition is logged once, then
	// summarized with a count once a minute.
	ns.SetLoggerV2(&natsLogger{log: logsys.Repeating(sc.Logger, logsys.DefaultThrottleWindow, 1), refused: refused, viol: viol}, false, false, false)
	switch {
	case len(sc.Routes) == 0:
	case sc.Route == nil:
		sc.Logger.Warn("routes are neither authenticated nor encrypted (totem.crypto_cipher and crypto_hash are none): anyone who reaches the route port joins the bus; set them and give every node the same key (corobus keygen)",
			"route_port", sc.RoutePort)
	default:
		sc.Logger.Info("routes protected", "how", sc.Route.Describe)
	}
	go ns.Start()
	s := &Server{cfg: sc, ns: ns, log: sc.Logger, started: time.Now().UTC(), refused: refused, viol: viol}
	deadline := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats-server %s not ready for connections after %s", opts.ServerName, deadline)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, errors.New("nats-server started without JetStream")
	}
	// Before the totem hook subscribes: an import applies to the
	// subscriptions made after it.
	if err := ShareDisconnects(ns); err != nil {
		ns.Shutdown()
		return nil, err
	}
	return s, nil
}

// DisconnectEvents is the subject on which the bus's clients (all in the
// global account, $G) see nats-server's event of a client connection that
// closed, for whatever reason (closed, died, kicked, a stale connection):
// JSON server.DisconnectEventMsg, whose server.id and client.id are the
// server's id and the connection's CID (nats.go's ConnectedServerId and
// GetClientID). nats-server publishes it in its system account only;
// ShareDisconnects imports it, under the same name. Events of the other
// servers of the cluster come too (the system account's interest is
// routed). The totem node forgets a dead client's listen registration on
// it (docs/totem.md, "Kept own messages").
const DisconnectEvents = "$SYS.ACCOUNT.$G.DISCONNECT"

// ShareDisconnects exports ns's disconnect events from its system account
// to its global account (DisconnectEvents). Only the administrator (the
// token) may subscribe to them: every role's grant is under the bus
// prefix (bus/grants.go). Call it once, before the subscriptions that
// should receive them.
func ShareDisconnects(ns *server.Server) error {
	sys, global := ns.SystemAccount(), ns.GlobalAccount()
	if sys == nil || global == nil {
		return errors.New("sharing disconnect events: the server has no system or global account")
	}
	if subj := "$SYS.ACCOUNT." + global.GetName() + ".DISCONNECT"; subj != DisconnectEvents {
		return fmt.Errorf("sharing disconnect events: the global account's are on %s, not %s", subj, DisconnectEvents)
	}
	if err := sys.AddStreamExport(DisconnectEvents, []*server.Account{global}); err != nil {
		return fmt.Errorf("exporting %s from the system account: %w", DisconnectEvents, err)
	}
	if err := global.AddStreamImport(sys, DisconnectEvents, ""); err != nil {
		return fmt.Errorf("importing %s into the global account: %w", DisconnectEvents, err)
	}
	return nil
}

// Refused is how many route and client connections the server refused
// (wrong or missing credentials, no valid route certificate).
func (s *Server) Refused() uint64 { return s.refused.count() }

// NATS exposes the underlying server (status, tests).
func (s *Server) NATS() *server.Server { return s.ns }

// Config is the configuration the server was started with.
func (s *Server) Config() ServerConfig { return s.cfg }

// ClientURL is the URL local clients connect to (without credentials).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens an in-process connection as the administrator (the
// token): no socket, same semantics.
func (s *Server) Connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns), nats.Token(s.cfg.Token)}, extra...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("in-process connection %s: %w", name, err)
	}
	return nc, nil
}

// ConnectAs opens an in-process connection as user, with the permissions
// of its role and its own reply inboxes.
func (s *Server) ConnectAs(user, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns),
		nats.UserInfo(user, UserPassword(s.cfg.Token, user)), nats.CustomInboxPrefix(InboxPrefix(user))}, extra...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("in-process connection %s as bus user %s: %w", name, user, err)
	}
	return nc, nil
}

// AdminURL is the client URL with the token: every permission.
func (s *Server) AdminURL() string { return withUser(s.ClientURL(), url.User(s.cfg.Token)) }

// UserURL is the client URL with user's derived password.
func (s *Server) UserURL(user string) string {
	return withUser(s.ClientURL(), url.UserPassword(user, UserPassword(s.cfg.Token, user)))
}

func withUser(raw string, u *url.Userinfo) string {
	p, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	p.User = u
	return p.String()
}

// Violations are the publishes and subscriptions the server refused a user
// for lack of permission since it started (the first few hundred).
func (s *Server) Violations() []Violation { return s.viol.list() }

// Shutdown stops the server. With graceful set it first enters lame-duck
// mode so that clients and peers move away before the listeners close.
func (s *Server) Shutdown(graceful bool) {
	if graceful && len(s.cfg.Routes) > 0 {
		s.ns.LameDuckShutdown()
	} else {
		s.ns.Shutdown()
	}
	s.ns.WaitForShutdown()
}

// ReadToken returns the client token of the node that cfg configures:
// bus.token if set, else the contents of the token file (bus.token_file or
// <state_dir>/bus.token). It never creates one: a token file that does not
// exist means that no node has run on that state directory (a
// *NoTokenError), and what a client or a layer wants is the node's real
// one, not a fresh token nobody serves. Only the processes that own the
// node call EnsureToken.
func ReadToken(cfg *config.Config) (string, error) {
	if t := cfg.String("bus.token"); t != "" {
		return t, nil
	}
	path := TokenFile(cfg)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", &NoTokenError{Path: path, StateDir: cfg.StateDir(), TokenFile: cfg.String("bus.token_file") != ""}
	}
	if err != nil {
		return "", fmt.Errorf("reading the bus token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// NoTokenError is a token file that does not exist: no node has ever run
// on the state directory the configuration names (or bus.token_file points
// elsewhere than the node's).
type NoTokenError struct {
	Path      string // the token file looked for
	StateDir  string // system.state_dir of the configuration
	TokenFile bool   // Path came from bus.token_file
}

func (e *NoTokenError) Error() string {
	if e.TokenFile {
		return fmt.Sprintf("no bus token at %s (bus.token_file): no node has created one there; "+
			"give the bus.token_file of the running node, or --bus nats://TOKEN@host:port", e.Path)
	}
	return fmt.Sprintf("no node has ever run on the state directory %s (it has no bus token, %s, which `corobus up` creates): "+
		"point at the node's own state directory — the node's configuration file (-c FILE, its system.state_dir), "+
		"-o system.state_dir=DIR, or, for the embedded default, the XDG_STATE_HOME the node ran with "+
		"(its state is $XDG_STATE_HOME/corobus, else ~/.local/state/corobus) — or give --bus nats://TOKEN@host:port; "+
		"`corobus up` starts a node here", e.StateDir, e.Path)
}

// EnsureToken is ReadToken for the processes that own the node (`corobus
// up`, `corobus bus`): a token file that does not exist is created with a
// random token. Only the owner of the state directory can read it, as only
// root could talk to corosync's IPC by default.
func EnsureToken(cfg *config.Config) (string, error) {
	tok, err := ReadToken(cfg)
	var none *NoTokenError
	if !errors.As(err, &none) {
		return tok, err
	}
	path := none.Path
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generating the bus token: %w", err)
	}
	tok = hex.EncodeToString(raw)
	// Written aside, then linked in place: the file never exists empty or
	// half written (a process starting at the same time would read that
	// as the token). When two processes race, the first link wins and
	// the other reads the winner's token.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bus.token.*")
	if err != nil {
		return "", fmt.Errorf("creating the bus token in %s: %w", filepath.Dir(path), err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(tok + "\n")
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("writing the bus token %s: %w", tmp.Name(), werr)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("creating the bus token %s: %w", path, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading the bus token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return tok, nil
}

// TokenFile is where the node's client token lives.
func TokenFile(cfg *config.Config) string {
	if p := cfg.String("bus.token_file"); p != "" {
		return p
	}
	return filepath.Join(cfg.StateDir(), "bus.token")
}

// natsLogger routes nats-server's log lines into slog. Its refusal lines
// go through refused, rate-limited.
type natsLogger struct {
	log     *slog.Logger
	refused *refusals
	viol    *violations
}

// Noticef is nats-server's chatter (banner, listening on …): debug here, so
// that a node's log at info level says what corobus does.
func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Errorf(format string, v ...any) {
	line := fmt.Sprintf(format, v...)
	if l.refused != nil && l.refused.fromServerLog(line) {
		return
	}
	if l.viol != nil && l.viol.fromServerLog(line) {
		return
	}
	l.log.Error(line)
}
func (l *natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// HasInterest reports whether any client of the bus — on this node, or on
// another through the routes — subscribes to subject: a publisher of
// events nobody follows may skip building them.
func (s *Server) HasInterest(subject string) bool {
	return s.ns.GlobalAccount().SubscriptionInterest(subject)
}
