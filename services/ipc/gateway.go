// Package ipc is the IPC manager: the gateway through which unmodified
// corosync clients reach corobus over libqb's IPC (shared memory, as
// corosync serves it, or sockets). Each libqb
// service name is routed to a component resolved through the loader; a
// client connection becomes a session with one instance of it
// (services/ipc/session), its requests bus requests, its events bus
// messages back to the client's event socket.
package ipc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/beat"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/hdb"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/session"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// Route is how the gateway serves one libqb service name.
type Route struct {
	// Service is the libqb IPC name clients connect to ("cmap").
	Service string
	// Component and Version are what the loader resolves it to.
	Component string
	Version   uint32
	// HeldDuringSync tells, by request message id, which requests wait
	// out a running sync: they are answered CS_ERR_TRY_AGAIN, as corosync
	// answers its services' CS_LIB_FLOW_CONTROL_REQUIRED calls. Nil:
	// none (cmap's calls all run during a sync in corosync too).
	HeldDuringSync func(id int32) bool
	// Async tells, by request message id, the calls that get no response
	// (CPG's multicast, which libcpg sends without waiting): they go to
	// the component without a reply subject, in order with the others.
	// They are never held: the component flow-controls its clients.
	Async func(id int32) bool
	// EventQueueHigh and EventQueueMax, when set, replace the server's
	// limits of a connection's event backlog (flow control from High,
	// disconnection at Max) for this route's connections.
	EventQueueHigh, EventQueueMax int
	// ServiceID is corosync's id of the service (CMAP_SERVICE 0, …),
	// which names its connections in cmap's stats map.
	ServiceID int
	// Loaded says the node loads the route's component (a service block
	// of the configuration, or a default service: svcmgr starts it, or
	// the gateway runs it, ipc.colocate). A connection made before any
	// instance serves it — the node starting, the service restarting —
	// waits up to Config.StartWait for one rather than being refused at
	// once: corosync takes no connection before all its services are
	// loaded, so a client that found cmap found cfg too. A route not
	// loaded is refused at once.
	Loaded bool
	// RequestIDs is how many request ids the service has, 0 to
	// RequestIDs-1 (corosync's lib_engine_count, cswire.RequestIDs): a
	// request of another id is answered CS_ERR_INVALID_PARAM without
	// reaching the component, and counted in the connection's
	// invalid_request, as corosync's dispatcher does. Zero: every id
	// reaches the component.
	RequestIDs int32
	// SyncService is the name the route's component registers under
	// with the node's sync engine ("": it takes no part in
	// synchronization). The start-up gate (Config.AwaitStartup) waits
	// for a loaded route's to be registered and synchronized.
	SyncService string
}

// Config configures a Gateway.
type Config struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	Node     uint32
	Log      *slog.Logger
	Routes   []Route
	// Admit decides who may connect (uidgid); required.
	Admit func(libqb.Creds) bool
	// ShmDir is where connection directories go; default /dev/shm.
	ShmDir string
	// RequestTimeout bounds one request's trip to its component; default
	// 30 s (a replicated write may wait for a JetStream quorum).
	RequestTimeout time.Duration
	// Retry is the pause before trying again to take a service name that
	// another process owns in this network namespace; default 5 s.
	Retry time.Duration
	// Colocated are component instances running in the gateway's own
	// process, by component name (ipc.colocate).
	Colocated map[string]Colocated
	// MaxConns and MaxConnsPerUID bound the client connections, in total
	// and per uid (ipc.max_connections, ipc.max_connections_per_uid);
	// zero takes libqb.DefaultMaxConns and DefaultMaxConnsPerUID.
	MaxConns, MaxConnsPerUID int
	// Transport is the libqb connection type offered (ipc.transport).
	Transport libqb.Transport
	// StartWait bounds the wait of a connection to a loaded route no
	// instance serves yet (Route.Loaded); default DefaultStartWait.
	StartWait time.Duration
	// Settle, when set, waits until the objdb copy that serves this
	// gateway's cmap reads (the colocated cmap's) has applied through a
	// position a component's answer carries (session.Settler): the
	// answer reaches the client only then, so the client's next read
	// sees the request's writes. At most SettleWait.
	Settle func(ctx context.Context, p objdb.Position) error
	// SettleWait bounds Settle; default DefaultSettleWait.
	SettleWait time.Duration
	// AwaitStartup holds every connection, of every route, until the
	// node's start-up is done: each loaded route (Route.Loaded) has an
	// instance, and the node's sync engine has completed a round that
	// synchronized every service registered with it — the loaded
	// routes' (Route.SyncService) among them — and runs none. corosync
	// accepts no IPC connection before its first synchronization
	// completed (all its services loaded by then); a corobus node's
	// services register one after the other, each running the ring's
	// round again, so a client that connected to the first of them got
	// CS_ERR_TRY_AGAIN from calls that wait out a sync (cpg_leave)
	// while the others registered. A connection waits for the start-up
	// up to StartupWait, then is refused with EAGAIN, as corosync
	// refuses it at once ("corosync is not ready"): its libraries report
	// CS_ERR_TRY_AGAIN. Once done, the gate stays open, as corosync's
	// does.
	AwaitStartup bool
	// StartupWait bounds a connection's wait for the node's start-up
	// (AwaitStartup); default DefaultStartupWait.
	StartupWait time.Duration
}

// DefaultSettleWait bounds the gateway's wait for its copy to apply a
// request's writes: the keeper has them already (the component settled
// them), so only a copy whose node feed is lost waits that long — and the
// client then gets its answer with the copy behind, as a partitioned node
// serves its stale reads (docs/objdb.md).
const DefaultSettleWait = 2 * time.Second

// DefaultStartWait is how long a connection to a loaded service waits for
// its first instance: a node's services are all up within a few seconds
// of its start (svcmgr loads them one after the other), and a client's
// handshake allows libqb.DefaultHandshakeTimeout in all.
const DefaultStartWait = 5 * time.Second

// DefaultStartupWait is how long a connection waits for the node's
// start-up (Config.AwaitStartup): libqb's client waits for the
// handshake's answer without a limit, and a node's whole start-up —
// five services loaded one after the other, a synchronization after
// each registration — took 11 s from its ring to its last service on
// this 2-vCPU machine under a load of 26–30 (3 Dec): a client started
// with the node, or a tool run as soon as the ring formed, is let in
// rather than told to try again. It is svcmgr's bound on one service's
// start.
const DefaultStartupWait = 30 * time.Second

// DefaultProbeInterval is how often the gateway probes the instances it
// has sessions on, on the wall clock's multiples of it (bus/beat), where
// the instances and the node's loader clients send their 5 s heartbeats:
// a probe then wakes no process that was not waking anyway. Every second,
// as first built, a node with two idle clients (a cmap tracker, a quorum
// monitor) spent 1.5–2.2 % of a core against 0.65–0.90 % without probes
// (2 Dec, 60 s windows, five pairs): more than corosync's whole idle
// daemon. An instance that died is found within two intervals (two
// probes without an answer).
const DefaultProbeInterval = 5 * time.Second

// Colocated is a component instance in the gateway's process. It is a
// full instance — announced to the loader, serving sessions over the bus
// to other gateways — and while the loader resolves a route to its
// subject, the gateway opens its connections by function call: no bus
// round trip per request, as an LCR component loaded into corosync's
// process cost none.
type Colocated struct {
	// Subject is the instance's component subject.
	Subject string
	// Open starts a connection's state, events going straight to conn.
	Open func(conn *libqb.Conn) (libqb.Session, error)
}

// Gateway is one `corobus ipc` instance.
type Gateway struct {
	cfg     Config
	id      string
	lc      *loader.Client
	srv     *libqb.Server
	syncing atomic.Bool
	ctx     context.Context
	nextID  atomic.Uint64
	// serviceIDs are the routes' ServiceID by libqb service name.
	serviceIDs map[string]int

	// handlesMu is held across a loader round trip; mu guards what the
	// event path needs, so that resolving a route never delays events.
	handlesMu sync.Mutex
	handles   map[string]hdb.Handle // by component name and version
	mu        sync.Mutex
	conns     map[string]*libqb.Conn
	// sessions are the open connections' sessions, by connection id:
	// what the probes ask about.
	sessions map[string]*session.Client
	probing  atomic.Bool
	// missed counts, by session subject, the probes in a row that found
	// no instance (probe's goroutine only).
	missed map[string]int
	// firstConn pokes the alive loop when conns stops being empty.
	firstConn chan struct{}
	// started is set once the node's start-up is done (AwaitStartup).
	started atomic.Bool
}

// New checks cfg and returns a gateway; Run serves it.
func New(cfg Config) (*Gateway, error) {
	if cfg.Conn == nil || cfg.Log == nil || cfg.Admit == nil {
		return nil, errors.New("ipc: a connection, a logger and an admission function are required")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 5 * time.Second
	}
	if cfg.StartWait <= 0 {
		cfg.StartWait = DefaultStartWait
	}
	if cfg.StartupWait <= 0 {
		cfg.StartupWait = DefaultStartupWait
	}
	if cfg.SettleWait <= 0 {
		cfg.SettleWait = DefaultSettleWait
	}
	srv := libqb.NewServer(cfg.Log)
	if cfg.ShmDir != "" {
		srv.ShmDir = cfg.ShmDir
	}
	if cfg.MaxConns > 0 {
		srv.MaxConns = cfg.MaxConns
	}
	if cfg.MaxConnsPerUID > 0 {
		srv.MaxConnsPerUID = cfg.MaxConnsPerUID
	}
	srv.Transport = cfg.Transport
	ids := make(map[string]int, len(cfg.Routes))
	for _, r := range cfg.Routes {
		ids[r.Service] = r.ServiceID
	}
	return &Gateway{cfg: cfg, id: nuid.Next(), srv: srv, handles: map[string]hdb.Handle{}, conns: map[string]*libqb.Conn{},
		sessions: map[string]*session.Client{}, missed: map[string]int{}, firstConn: make(chan struct{}, 1), serviceIDs: ids}, nil
}

// Syncing reports whether the node's sync engine says a sync is running.
func (g *Gateway) Syncing() bool { return g.syncing.Load() }

// Run serves every route until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	lc, err := loader.NewClient(loader.ClientConfig{Conn: g.cfg.Conn, Subjects: g.cfg.Subjects, Node: g.cfg.Node, Log: g.cfg.Log})
	if err != nil {
		return err
	}
	defer lc.Close()
	g.lc, g.ctx = lc, ctx
	s := g.cfg.Subjects
	nc := g.cfg.Conn

	// The sync engine's flag: published on every change, and asked for
	// once at start (a gateway that starts mid-sync must know).
	syncSub, err := nc.Subscribe(s.SyncState(g.cfg.Node), g.onSyncState)
	if err != nil {
		return fmt.Errorf("subscribing to the sync state: %w", err)
	}
	defer func() { _ = syncSub.Unsubscribe() }()
	if m, err := nc.Request(s.SyncStateGet(g.cfg.Node), nil, 2*time.Second); err == nil {
		g.onSyncState(m)
	} else {
		g.cfg.Log.Info("no sync engine answered; assuming no sync runs", "err", err)
	}
	// One subscription carries every connection's events, in the order
	// the components published them.
	evSub, err := nc.Subscribe(s.IPCEvents(g.cfg.Node, g.id, "*"), g.onEvent)
	if err != nil {
		return fmt.Errorf("subscribing to events: %w", err)
	}
	defer func() { _ = evSub.Unsubscribe() }()
	// cmap's stats map, for a cmap instance outside this process.
	statsSub, err := nc.Subscribe(s.IPCStats(g.cfg.Node), g.onStatsRequest)
	if err != nil {
		return fmt.Errorf("subscribing to stats requests: %w", err)
	}
	defer func() { _ = statsSub.Unsubscribe() }()
	clearSub, err := nc.Subscribe(s.IPCStatsClear(g.cfg.Node), g.onStatsClear)
	if err != nil {
		return fmt.Errorf("subscribing to stats clears: %w", err)
	}
	defer func() { _ = clearSub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("flushing subscriptions: %w", err)
	}

	var grp run.Group
	{
		// Liveness: components drop the sessions of a silent gateway.
		// Only a gateway with connections has sessions to keep alive:
		// without, it publishes nothing (nobody would receive it).
		ctx, cancel := context.WithCancel(ctx)
		grp.Add(func() error {
			t := time.NewTimer(session.AliveInterval)
			defer t.Stop()
			pt := time.NewTimer(time.Until(beat.Next(time.Now(), DefaultProbeInterval)))
			defer pt.Stop()
			for {
				probe := false
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				case <-pt.C:
					probe = true
				case <-g.firstConn:
				}
				g.mu.Lock()
				n := len(g.conns)
				g.mu.Unlock()
				if n == 0 {
					continue // asleep until the next first connection
				}
				if probe {
					if !g.probing.Swap(true) {
						go func() {
							defer g.probing.Store(false)
							g.probe(ctx)
						}()
					}
				} else {
					_ = nc.Publish(s.IPCAlive(g.cfg.Node, g.id), nil)
					t.Reset(session.AliveInterval)
				}
				// The next probe is due at the next beat (the same
				// instant again when the alive tick comes first).
				pt.Reset(time.Until(beat.Next(time.Now(), DefaultProbeInterval)))
			}
		}, func(error) { cancel() })
	}
	for _, r := range g.cfg.Routes {
		ctx, cancel := context.WithCancel(ctx)
		grp.Add(func() error { return g.listen(ctx, r) }, func(error) { cancel() })
	}
	{
		// Until the node stops.
		ctx, cancel := context.WithCancel(ctx)
		grp.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	}
	err = grp.Run()
	g.releaseHandles()
	return err
}

// listen serves one route's libqb name, retrying while another process of
// this network namespace owns it. That is said once, with the owner when
// it can be found; the retries are debug records; getting the name at last
// is said once too.
func (g *Gateway) listen(ctx context.Context, r Route) error {
	h := &routeHandler{g: g, r: r, invalid: libqb.ErrorResponse(int32(cswire.ErrInvalidParam))}
	waiting := false // said to be taken, not yet served
	for {
		if waiting && !nameBound(r.Service) {
			g.cfg.Log.Info("the IPC name is free now; serving it", "service", r.Service)
			waiting = false
		}
		err := g.srv.Listen(ctx, r.Service, h)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		// Abstract socket names are per network namespace: a corosync,
		// or another node's gateway on this host, owns this one.
		if !waiting {
			waiting = true
			owner := nameOwner(r.Service)
			if owner == "" {
				owner = "another process"
			}
			g.cfg.Log.Warn("the IPC name is taken in this network namespace: this node serves no corosync client of it while "+owner+" holds it (run each node in its own network namespace); retrying quietly",
				"service", r.Service, "retry", g.cfg.Retry)
		} else {
			g.cfg.Log.Debug("the IPC name is still taken; retrying", "service", r.Service)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(g.cfg.Retry):
		}
	}
}

func (g *Gateway) onSyncState(m *nats.Msg) {
	var st struct {
		InProgress bool `json:"in_progress"`
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		g.cfg.Log.Warn("unreadable sync state", "err", err)
		return
	}
	if g.syncing.Swap(st.InProgress) != st.InProgress {
		g.cfg.Log.Debug("sync state", "in_progress", st.InProgress)
	}
}

func (g *Gateway) onEvent(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	g.mu.Lock()
	c := g.conns[id]
	g.mu.Unlock()
	if c == nil {
		return // the client left; its component will hear of it
	}
	if len(m.Data) == 0 && m.Header != nil {
		if v := m.Header.Get(session.HdrFlow); v != "" {
			if level, err := strconv.ParseInt(v, 10, 32); err == nil {
				c.SetFlowControl(int32(level))
			}
			return
		}
	}
	if err := c.SendEvent(m.Data); err != nil {
		g.cfg.Log.Debug("event not delivered", "conn", id, "err", err)
	}
}

// handle references a route's component once and keeps the handle: the
// loader client re-resolves it when versions come and go.
func (g *Gateway) handle(r Route) (hdb.Handle, error) {
	key := r.Component + "/" + strconv.FormatUint(uint64(r.Version), 10)
	g.handlesMu.Lock()
	defer g.handlesMu.Unlock()
	if h, ok := g.handles[key]; ok {
		return h, nil
	}
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	h, err := g.lc.Reference(ctx, r.Component, r.Version)
	if err != nil {
		return 0, err
	}
	g.handles[key] = h
	return h, nil
}

func (g *Gateway) releaseHandles() {
	g.handlesMu.Lock()
	defer g.handlesMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for k, h := range g.handles {
		_ = g.lc.Release(ctx, h)
		delete(g.handles, k)
	}
}

// routeHandler serves one route's libqb connections.
type routeHandler struct {
	g *Gateway
	r Route
	// invalid answers a request of an id the service does not have:
	// corosync's bare header with id 0 and CS_ERR_INVALID_PARAM.
	invalid []byte
}

func (h *routeHandler) Admit(c libqb.Creds) bool { return h.g.cfg.Admit(c) }

// RequestIDs implements libqb.RequestRange with the route's request ids:
// the libqb server refuses the others before any session, colocated or
// not, sees them.
func (h *routeHandler) RequestIDs() (int32, []byte) { return h.r.RequestIDs, h.invalid }

// EventLimits implements libqb.EventLimiter with the route's limits.
func (h *routeHandler) EventLimits() (high, max int) { return h.r.EventQueueHigh, h.r.EventQueueMax }

// Open opens a session with an instance of the route's component. A
// component that is not running yet makes the client try again, as
// corosync's "not ready" does — after waiting for it a little when the
// node loads it (Route.Loaded).
func (h *routeHandler) Open(c *libqb.Conn) (libqb.Session, error) {
	g := h.g
	if err := g.awaitStartup(time.Now().Add(g.cfg.StartupWait)); err != nil {
		return nil, err
	}
	handle, err := h.resolve()
	if err != nil {
		return nil, fmt.Errorf("resolving %s version %d: %w: %w", h.r.Component, h.r.Version, err, syscall.EAGAIN)
	}
	if local, ok := g.cfg.Colocated[h.r.Component]; ok {
		if t, err := g.lc.Target(handle); err == nil && t.Subject == local.Subject {
			s, err := local.Open(c)
			if err != nil {
				return nil, refusal(h.r.Component, err)
			}
			return s, nil
		}
	}
	id := strconv.FormatUint(g.nextID.Add(1), 10)
	// Registered before the open: the component may send events at once.
	g.mu.Lock()
	g.conns[id] = c
	first := len(g.conns) == 1
	g.mu.Unlock()
	if first {
		select {
		case g.firstConn <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	open := func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
		return g.lc.RequestMsg(ctx, handle, "open", m)
	}
	s := g.cfg.Subjects
	cl, err := session.Open(ctx, g.cfg.Conn, open, id, s.IPCAlive(g.cfg.Node, g.id), s.IPCEvents(g.cfg.Node, g.id, id),
		session.Creds{PID: c.Creds.PID, UID: c.Creds.UID, GID: c.Creds.GID})
	if err != nil {
		g.forget(id)
		return nil, refusal(h.r.Component, err)
	}
	g.mu.Lock()
	if g.conns[id] != nil {
		g.sessions[id] = cl
	}
	g.mu.Unlock()
	return &conn{g: g, r: h.r, cl: cl, id: id, qc: c}, nil
}

// refusal is a service's refusal to open a connection as the libqb
// server answers it, an errno, the same for an instance in the gateway's
// process and one across the bus: CS_ERR_ACCESS stays a refusal (EACCES),
// anything else — a cpg instance that has not synchronized the groups yet
// (CS_ERR_TRY_AGAIN) — makes the client try again (EAGAIN), as corosync
// answers every connection until its first synchronization is done.
// Pacemaker's daemons retry CS_ERR_TRY_AGAIN and take anything else for
// fatal: a cpg refused with EACCES made pacemaker-fenced exit with a fatal
// error after the engine restarted under a running pacemakerd, and
// pacemakerd then shut the whole node down.
func refusal(component string, err error) error {
	if errors.Is(err, cswire.ErrAccess) {
		return fmt.Errorf("%s: %w: %w", component, err, syscall.EACCES)
	}
	return fmt.Errorf("%s: %w: %w", component, err, syscall.EAGAIN)
}

// resolve references the route's component; while nothing serves a
// loaded route yet (the loader knows no instance, or no loader answers:
// the node is starting), it asks again until StartWait has passed. Once
// referenced, the loader client itself waits for an instance that comes
// back (loader.Client.RequestMsg).
func (h *routeHandler) resolve() (hdb.Handle, error) {
	g := h.g
	handle, err := g.handle(h.r)
	if err == nil || !h.r.Loaded {
		return handle, err
	}
	deadline := time.Now().Add(g.cfg.StartWait)
	pause := 50 * time.Millisecond
	for err != nil && (errors.Is(err, loader.ErrNotFound) || errors.Is(err, nats.ErrNoResponders)) {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		select {
		case <-g.ctx.Done():
			return 0, err
		case <-time.After(min(pause, left)):
		}
		pause = min(2*pause, 500*time.Millisecond)
		handle, err = g.handle(h.r)
	}
	return handle, err
}

// awaitStartup returns once the node's start-up is done
// (Config.AwaitStartup), looking again every 50–500 ms; past deadline it
// refuses the connection with EAGAIN.
func (g *Gateway) awaitStartup(deadline time.Time) error {
	if !g.cfg.AwaitStartup || g.started.Load() {
		return nil
	}
	pause := 50 * time.Millisecond
	for {
		err := g.startupDone()
		if err == nil {
			if !g.started.Swap(true) {
				g.cfg.Log.Info("the node's services are loaded and synchronized: accepting client connections")
			}
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 || g.ctx.Err() != nil {
			return fmt.Errorf("the node is not ready: %w: %w", err, syscall.EAGAIN)
		}
		select {
		case <-g.ctx.Done():
		case <-time.After(min(pause, left)):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// startupDone reports nil once every loaded route has an instance and the
// node's sync engine has synchronized every service registered with it
// (the loaded routes' among them) and runs no round; otherwise what is
// still missing.
func (g *Gateway) startupDone() error {
	for _, r := range g.cfg.Routes {
		if !r.Loaded {
			continue
		}
		if _, err := g.handle(r); err != nil {
			return fmt.Errorf("service %s has no instance yet: %w", r.Component, err)
		}
	}
	st, err := syncsvc.FetchState(g.cfg.Conn, g.cfg.Subjects, g.cfg.Node, 2*time.Second)
	if err != nil {
		return err
	}
	switch {
	case st.Rounds == 0:
		return errors.New("no synchronization has completed yet")
	case st.InProgress:
		return errors.New("a synchronization runs")
	case len(st.Waiting) > 0:
		return fmt.Errorf("services %s wait for their synchronization", strings.Join(st.Waiting, ", "))
	}
	for _, r := range g.cfg.Routes {
		if r.Loaded && r.SyncService != "" && !slices.Contains(st.Services, r.SyncService) {
			return fmt.Errorf("service %s has not registered with the sync engine yet", r.SyncService)
		}
	}
	return nil
}

func (g *Gateway) forget(id string) {
	g.mu.Lock()
	delete(g.conns, id)
	delete(g.sessions, id)
	g.mu.Unlock()
}

// probe asks every instance the gateway has sessions on which of them it
// no longer knows (session.Probe), and ends those clients' connections.
// A component instance killed or crashed takes its sessions with it; a
// client that sends no more requests (Pacemaker tracks quorum and cfg's
// shutdown requests, and only waits for their events) would otherwise
// never learn it, and keep a connection that no event reaches again —
// with corosync it sees the connection end and reconnects or stops.
func (g *Gateway) probe(ctx context.Context) {
	bySession := map[string][]string{}
	g.mu.Lock()
	for id, cl := range g.sessions {
		bySession[cl.Session()] = append(bySession[cl.Session()], id)
	}
	g.mu.Unlock()
	for subject := range g.missed {
		if bySession[subject] == nil {
			delete(g.missed, subject)
		}
	}
	for subject, ids := range bySession {
		pctx, cancel := context.WithTimeout(ctx, 2*session.AliveInterval)
		gone, err := session.Probe(pctx, g.cfg.Conn, subject, ids)
		cancel()
		switch {
		case errors.Is(err, session.ErrNoInstance):
			// Twice in a row, a probe interval apart: an instance
			// reconnecting to a restarted bus (100 ms) misses one.
			g.missed[subject]++
			if g.missed[subject] < 2 {
				continue
			}
			delete(g.missed, subject)
			gone = ids
		case err != nil:
			if ctx.Err() == nil {
				g.cfg.Log.Debug("session probe unanswered", "session", subject, "err", err)
			}
			continue
		default:
			delete(g.missed, subject)
		}
		for _, id := range gone {
			g.mu.Lock()
			c := g.conns[id]
			g.mu.Unlock()
			if c == nil {
				continue // closed meanwhile
			}
			g.cfg.Log.Info("the component instance lost the session; closing the client connection", "service", c.Service, "conn", id, "pid", c.Creds.PID)
			c.Disconnect()
		}
	}
}

// conn is one client connection's session.
type conn struct {
	g  *Gateway
	r  Route
	cl *session.Client
	id string
	qc *libqb.Conn
}

func (c *conn) Request(ctx context.Context, msg []byte) []byte {
	if c.r.Async != nil && len(msg) >= 4 && c.r.Async(int32(binary.LittleEndian.Uint32(msg))) {
		if err := c.cl.Send(msg); err != nil {
			c.g.cfg.Log.Warn("asynchronous request not delivered", "service", c.r.Service, "conn", c.id, "err", err)
		}
		return libqb.NoResponse
	}
	if c.r.HeldDuringSync != nil && c.g.syncing.Load() && len(msg) >= 4 &&
		c.r.HeldDuringSync(int32(binary.LittleEndian.Uint32(msg))) {
		c.qc.Overloaded()
		return libqb.ErrorResponse(int32(cswire.ErrTryAgain))
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.cfg.RequestTimeout)
	defer cancel()
	resp, settled, err := c.cl.RequestSettled(ctx, msg)
	switch {
	case err == nil:
		if settled != "" && c.g.cfg.Settle != nil {
			c.settle(ctx, settled)
		}
		return resp
	case errors.Is(err, session.ErrSessionGone):
		// The instance that held this connection's state is gone: the
		// client sees its connection end, as when corosync restarts.
		c.g.cfg.Log.Info("the component lost the session; closing the client connection", "service", c.r.Service, "conn", c.id)
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		// It may have been served: the client must not assume otherwise.
		c.g.cfg.Log.Warn("request timed out", "service", c.r.Service, "conn", c.id, "err", err)
		return libqb.ErrorResponse(int32(cswire.ErrTimeout))
	default:
		c.g.cfg.Log.Warn("request not delivered", "service", c.r.Service, "conn", c.id, "err", err)
		return libqb.ErrorResponse(int32(cswire.ErrTryAgain))
	}
}

// settle waits, at most SettleWait, until the gateway's copy has applied
// the writes an answer says its request made.
func (c *conn) settle(ctx context.Context, settled string) {
	p, err := objdb.ParsePosition(settled)
	if err != nil {
		c.g.cfg.Log.Warn("a component's answer carries an unreadable objdb position", "service", c.r.Service, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.cfg.SettleWait)
	defer cancel()
	if err := c.g.cfg.Settle(ctx, p); err != nil {
		c.g.cfg.Log.Warn("answering before this gateway's objdb copy has the request's writes", "service", c.r.Service, "conn", c.id, "err", err)
	}
}

func (c *conn) Close() {
	c.g.forget(c.id)
	c.cl.Close()
}
