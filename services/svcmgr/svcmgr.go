// Package svcmgr is corobus's service manager (`corobus svcmgr`), the
// analogue of corosync's exec/service.c: it loads the configured services
// through the loader in configuration order (the service { name; ver }
// blocks, then the default services unless loader.default_services is
// off), runs each component's process under a supervisor that restarts it
// with backoff, records what it loaded in objdb
// (internal_configuration.service.N.{name,ver}) together with each
// service's per-function counters (runtime.services.<service>.<fn>.{rx,tx}),
// loads and unloads services at run time on request, and on shutdown
// unloads them by priority, highest first, asking each whether it may exit
// and waiting while it answers busy.
package svcmgr

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/hdb"
	"github.com/corobus/corobus/logsys"
	"github.com/corobus/corobus/node"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
)

// Service is one service to load: a component name and version.
type Service struct {
	Name    string `json:"name"`
	Version uint32 `json:"ver"`
}

// DefaultServices are loaded after the configured ones unless
// loader.default_services is "no" — corosync 1.x's default list, with
// corobus's names. Those whose component cannot be found (no built-in
// subcommand, no executable in loader.component_dir) are skipped with a
// notice, not an error: a node runs what it has.
func DefaultServices() []Service {
	return []Service{{"cmap", 0}, {"cpg", 0}, {"quorum", 0}, {"votequorum", 0}, {"cfg", 0}}
}

// Recorder is where the manager records what it loaded: objdb (its
// client, with Internal set, satisfies it).
type Recorder interface {
	Set(ctx context.Context, key string, v objdb.Value) error
	DeletePrefix(ctx context.Context, prefix string) (int, error)
}

// Config configures a Manager.
type Config struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	Node     uint32
	// BusURL is passed to component executables (--bus); BusURLFor, when
	// set, gives each its own (a URL as the component's bus user).
	BusURL    string
	BusURLFor func(service string) string
	Log       *slog.Logger
	// Out receives the components' output, each line prefixed with the
	// service name; default os.Stderr.
	Out io.Writer
	// Services are loaded in order at start, then Defaults.
	Services []Service
	Defaults []Service
	// ComponentDir is searched for executables named <name>-<ver>, then
	// <name> (loader.component_dir).
	ComponentDir string
	// Builtin maps service names to corobus subcommands: the arguments
	// (subcommand first) that Executable runs them with.
	Builtin    map[string][]string
	Executable string
	// Args are extra arguments for a service's executable, by name.
	Args     map[string][]string
	Recorder Recorder
	Backoff  node.Backoff
	// StopTimeout is how long a component has after SIGTERM; default 10s.
	StopTimeout time.Duration
	// ReadyTimeout bounds the wait for a started component's first
	// announcement; default 30s.
	ReadyTimeout time.Duration
	// ExitRetry is the pause between exit requests a component answers
	// busy; ExitPatience is how long it may stay busy; defaults 200ms and
	// 30s.
	ExitRetry, ExitPatience time.Duration
	// StatsInterval is how soon a failed recording (a service's keys,
	// its runtime.services counters) is tried again; default 1s.
	// Recording follows the instances' announcements: what they announce
	// is recorded when it arrives, and nothing is looked at in between.
	StatsInterval time.Duration
}

// ServiceInfo describes a loaded service (the list operation), or one
// the manager is still trying to load (State "loading", with the last
// error; Index -1).
type ServiceInfo struct {
	State     string    `json:"state"` // "loaded", "loading", "hosted" (served by another process of the node: cpg in the gateway)
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	Index     int       `json:"index"`
	Name      string    `json:"name"`
	Version   uint32    `json:"ver"`
	Target    string    `json:"subject"`
	Serving   uint32    `json:"serving_version"`
	Priority  int       `json:"priority"`
	Launch    []string  `json:"launch"`
	PIDs      []int     `json:"pids"`
	Restarts  int       `json:"restarts"`
	Loaded    time.Time `json:"loaded"`
	Instances int       `json:"instances"`
}

// Event is published on Subjects.SvcmgrEvents(node) for every load and
// unload.
type Event struct {
	Op      string `json:"op"` // "loaded", "unloaded", "failed"
	Name    string `json:"name"`
	Version uint32 `json:"ver"`
	Index   int    `json:"index"`
	// ExitAsks is how many exit requests an unload took (busy answers
	// plus the final one).
	ExitAsks int    `json:"exit_asks,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Manager is a node's service manager.
type Manager struct {
	cfg    Config
	client *loader.Client
	ns     string

	// retries logs a service that does not load: once, then a summary
	// with the count once a minute while it goes on failing.
	retries *slog.Logger

	mu        sync.Mutex
	loaded    map[string]*loadedSvc
	pending   []*pendingSvc                  // to load at start, not loaded yet
	instances map[string]loader.Announcement // this node's component instances, by id
	// announced pokes Run to record what an instance of this node
	// announced.
	announced chan struct{}
	// hostedRec are the hosted services (cmap and cpg in the IPC
	// gateway) whose internal_configuration keys are written.
	hostedRec map[string]bool
	// busy serializes load and unload so that indexes and priorities
	// are decided on a stable set.
	busy sync.Mutex
}

// pendingSvc is a service the manager loads at start and keeps trying to
// load until it is: whatever the order the node's layers come up in, and
// whatever restarts meanwhile (a loader not serving yet, a component
// slower than ReadyTimeout), a node does not stay without its services.
type pendingSvc struct {
	Service
	attempts int
	lastErr  string
}

type loadedSvc struct {
	Service
	index    int
	launch   []string
	handle   hdb.Handle
	sup      *node.Supervisor
	stop     context.CancelFunc
	done     chan struct{}
	loadedAt time.Time
	recorded bool
	stats    map[string]loader.FnStats // last recorded
}

// New builds a manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.Conn == nil || cfg.Log == nil {
		return nil, errors.New("svcmgr: a connection and a logger are required")
	}
	if cfg.Out == nil {
		cfg.Out = os.Stderr
	}
	if cfg.Backoff == (node.Backoff{}) {
		cfg.Backoff = node.DefaultBackoff()
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.ExitRetry <= 0 {
		cfg.ExitRetry = 200 * time.Millisecond
	}
	if cfg.ExitPatience <= 0 {
		cfg.ExitPatience = 30 * time.Second
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = time.Second
	}
	client, err := loader.NewClient(loader.ClientConfig{Conn: cfg.Conn, Subjects: cfg.Subjects, Node: cfg.Node, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, client: client, ns: loader.LocalNamespace(cfg.Node),
		retries: logsys.Repeating(cfg.Log, logsys.DefaultThrottleWindow, 1),
		loaded:  map[string]*loadedSvc{}, instances: map[string]loader.Announcement{}, hostedRec: map[string]bool{},
		announced: make(chan struct{}, 1)}, nil
}

// ServiceKey is the token of runtime.services.<service>: the name's part
// after its last '_' (corosync_cpg → cpg), as corosync names it.
func ServiceKey(name string) string {
	if i := strings.LastIndexByte(name, '_'); i >= 0 && i < len(name)-1 {
		return name[i+1:]
	}
	return name
}

// Run loads the configured services, then serves until ctx ends, then
// unloads everything by priority.
func (m *Manager) Run(ctx context.Context) error {
	defer m.client.Close()
	// The node's own namespace only (and the legacy subject): the
	// announcements of other nodes' components, which it would drop,
	// then never reach this node.
	for _, subj := range []string{m.cfg.Subjects.LcrAnnounceNamespace(m.ns), m.cfg.Subjects.LcrAnnounceLegacyAll()} {
		sub, err := m.cfg.Conn.Subscribe(subj, m.onAnnounce)
		if err != nil {
			return fmt.Errorf("svcmgr: following announcements: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err := m.cfg.Conn.Flush(); err != nil {
		return fmt.Errorf("svcmgr: following announcements: %w", err)
	}
	// Instances announce themselves every few seconds at rest: ask them
	// now, so that a (re)started manager records the services the gateway
	// hosts (internal_configuration.service.0 for cmap, …) at once rather
	// than at their next heartbeat.
	if err := m.cfg.Conn.Publish(m.cfg.Subjects.LcrAsk(), nil); err != nil {
		m.cfg.Log.Warn("asking the components to announce themselves", "err", err)
	}
	defer m.unloadAll()

	// The configured services in order, then the defaults this node has.
	var want []Service
	for _, s := range m.cfg.Services {
		if !slices.ContainsFunc(want, func(w Service) bool { return w.Name == s.Name }) {
			want = append(want, s)
		}
	}
	for _, s := range m.cfg.Defaults {
		if slices.ContainsFunc(want, func(w Service) bool { return w.Name == s.Name }) {
			continue
		}
		if _, err := m.launchFor(s); err != nil {
			m.cfg.Log.Info("default service not available; skipped", "service", s.Name, "err", err)
			continue
		}
		want = append(want, s)
	}
	m.mu.Lock()
	for _, s := range want {
		m.pending = append(m.pending, &pendingSvc{Service: s})
	}
	m.mu.Unlock()

	// Recording runs when an instance of this node announces itself
	// (its counters or state changed, or its heartbeat), and again after
	// StatsInterval while some of it failed: no ticker at rest.
	t := time.NewTimer(m.cfg.StatsInterval)
	defer t.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	delay := m.cfg.Backoff.Min
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.announced:
			if !m.record(ctx) {
				t.Reset(m.cfg.StatsInterval)
			}
		case <-t.C:
			if !m.record(ctx) {
				t.Reset(m.cfg.StatsInterval)
			}
		case <-retry.C:
			if m.loadPending(ctx) {
				retry.Reset(delay)
				delay = min(delay*2, m.cfg.Backoff.Max, 5*time.Second)
			}
		}
	}
}

// loadPending tries to load each pending service, in order, and reports
// whether some are still not loaded.
func (m *Manager) loadPending(ctx context.Context) bool {
	m.mu.Lock()
	todo := slices.Clone(m.pending)
	m.mu.Unlock()
	left := false
	for _, p := range todo {
		if ctx.Err() != nil {
			return false
		}
		err := m.Load(ctx, p.Service)
		if err != nil && m.isLoaded(p.Name) {
			err = nil // loaded meanwhile through the API
		}
		m.mu.Lock()
		p.attempts++
		if err == nil {
			m.pending = slices.DeleteFunc(m.pending, func(q *pendingSvc) bool { return q == p })
		} else {
			p.lastErr = err.Error()
		}
		attempts := p.attempts
		m.mu.Unlock()
		if err == nil {
			if attempts > 1 {
				m.cfg.Log.Info("service loaded after retrying", "service", p.Name, "ver", p.Version, "attempts", attempts)
			}
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		left = true
		m.retries.Warn("service not loaded; retrying", "service", p.Name, "ver", p.Version, "err", err)
	}
	return left
}

func (m *Manager) isLoaded(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.loaded[name]
	return ok
}

// onAnnounce keeps the latest announcement of this node's instances.
func (m *Manager) onAnnounce(msg *nats.Msg) {
	a, err := loader.ParseAnnouncement(m.cfg.Subjects, msg.Subject, msg.Data)
	if err != nil || a.Namespace != m.ns {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.State == loader.Leaving {
		delete(m.instances, a.Instance)
		return
	}
	m.instances[a.Instance] = a
	m.pokeRecord()
}

// pokeRecord has Run record what changed.
func (m *Manager) pokeRecord() {
	select {
	case m.announced <- struct{}{}:
	default:
	}
}

// localInstances are this node's announced instances of name.
func (m *Manager) localInstances(name string) []loader.Announcement {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []loader.Announcement
	for _, a := range m.instances {
		if a.Name == name {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(x, y loader.Announcement) int { return strings.Compare(x.Instance, y.Instance) })
	return out
}

// launchFor finds how to start a service's component.
func (m *Manager) launchFor(s Service) ([]string, error) {
	if args, ok := m.cfg.Builtin[s.Name]; ok && m.cfg.Executable != "" {
		return append([]string{m.cfg.Executable}, args...), nil
	}
	if m.cfg.ComponentDir != "" {
		for _, file := range []string{s.Name + "-" + strconv.FormatUint(uint64(s.Version), 10), s.Name} {
			p := filepath.Join(m.cfg.ComponentDir, file)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				url := m.cfg.BusURL
				if m.cfg.BusURLFor != nil {
					url = m.cfg.BusURLFor(s.Name)
				}
				args := []string{p, "--bus", url, "--prefix", m.cfg.Subjects.Prefix(),
					"--node", strconv.FormatUint(uint64(m.cfg.Node), 10), "--namespace", m.ns}
				return append(args, m.cfg.Args[s.Name]...), nil
			}
		}
	}
	return nil, fmt.Errorf("no component %s: not a built-in service and no executable %s-%d or %s in %q",
		s.Name, s.Name, s.Version, s.Name, m.cfg.ComponentDir)
}

// Load starts a service's component, waits for its announcement, and
// references it through the loader.
func (m *Manager) Load(ctx context.Context, s Service) error {
	m.busy.Lock()
	defer m.busy.Unlock()
	if m.isLoaded(s.Name) {
		return fmt.Errorf("service %s is already loaded", s.Name)
	}
	launch, err := m.launchFor(s)
	if err != nil {
		m.event(Event{Op: "failed", Name: s.Name, Version: s.Version, Error: err.Error()})
		return err
	}
	known := map[string]bool{}
	for _, a := range m.localInstances(s.Name) {
		known[a.Instance] = true
	}
	ls := &loadedSvc{Service: s, launch: launch, done: make(chan struct{}), stats: map[string]loader.FnStats{},
		sup: node.NewSupervisor(m.cfg.Log, m.cfg.Out, m.cfg.Backoff, m.cfg.StopTimeout)}
	ready := make(chan struct{})
	supCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	ls.stop = stop
	child := node.Child{Name: s.Name, Path: launch[0], Args: launch[1:], Ready: func(ctx context.Context) error {
		// Ready is the first announcement of an instance that was not
		// there before the start: this child's.
		ctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
		defer cancel()
		for {
			for _, a := range m.localInstances(s.Name) {
				if !known[a.Instance] && a.State == loader.Serving {
					close(ready)
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s did not announce itself within %s", s.Name, m.cfg.ReadyTimeout)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}}
	var runErr error
	go func() {
		defer close(ls.done)
		runErr = ls.sup.Run(supCtx, []node.Child{child})
	}()
	select {
	case <-ready:
	case <-ls.done:
		stop()
		err := fmt.Errorf("starting %s: %w", s.Name, runErr)
		m.event(Event{Op: "failed", Name: s.Name, Version: s.Version, Error: err.Error()})
		return err
	case <-ctx.Done():
		stop()
		<-ls.done
		return ctx.Err()
	}
	// The component runs; the loader may not serve yet, or be restarting,
	// or not have seen the announcement: wait for it rather than stop a
	// healthy process.
	h, err := m.reference(ctx, s)
	if err != nil {
		stop()
		<-ls.done
		err = fmt.Errorf("referencing %s version %d: %w", s.Name, s.Version, err)
		m.event(Event{Op: "failed", Name: s.Name, Version: s.Version, Error: err.Error()})
		return err
	}
	ls.handle = h
	ls.loadedAt = time.Now().UTC()
	m.mu.Lock()
	ls.index = m.indexLocked(s.Name)
	m.loaded[s.Name] = ls
	m.mu.Unlock()
	m.recordService(ctx, ls)
	// Its counters, which may have been announced before it was in
	// m.loaded, and a retry if recordService failed.
	m.pokeRecord()
	m.cfg.Log.Info("service engine loaded", "service", s.Name, "ver", s.Version, "index", ls.index, "launch", launch[0])
	m.event(Event{Op: "loaded", Name: s.Name, Version: s.Version, Index: ls.index})
	return nil
}

// reference references a started service through the loader, trying
// again for up to ReadyTimeout.
func (m *Manager) reference(ctx context.Context, s Service) (hdb.Handle, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	defer cancel()
	pause := 50 * time.Millisecond
	for {
		h, err := m.client.Reference(ctx, s.Name, s.Version)
		if err == nil {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// indexLocked is the N of internal_configuration.service.N: a corosync
// service's id, else (or if another service holds it) the lowest free N.
func (m *Manager) indexLocked(name string) int {
	if id, _, ok := cswire.CorosyncService(ServiceKey(name)); ok {
		free := true
		for _, ls := range m.loaded {
			free = free && ls.index != id
		}
		if free {
			return id
		}
	}
	return m.freeIndexLocked()
}

// freeIndexLocked is the lowest N not used by a loaded service.
func (m *Manager) freeIndexLocked() int {
	used := map[int]bool{}
	for _, ls := range m.loaded {
		used[ls.index] = true
	}
	i := 0
	for used[i] {
		i++
	}
	return i
}

// Unload asks a service's instances whether they may exit (waiting while
// they answer busy, up to ExitPatience), stops its process, releases its
// reference and removes its keys.
func (m *Manager) Unload(ctx context.Context, name string) (Event, error) {
	m.busy.Lock()
	defer m.busy.Unlock()
	return m.unloadLocked(ctx, name)
}

func (m *Manager) unloadLocked(ctx context.Context, name string) (Event, error) {
	m.mu.Lock()
	ls, ok := m.loaded[name]
	m.mu.Unlock()
	if !ok {
		return Event{}, fmt.Errorf("service %s is not loaded", name)
	}
	asks := m.askExit(ctx, name)
	ls.stop()
	<-ls.done
	if err := m.client.Release(ctx, ls.handle); err != nil {
		m.cfg.Log.Warn("releasing a service's reference", "service", name, "err", err)
	}
	m.mu.Lock()
	delete(m.loaded, name)
	m.mu.Unlock()
	if r := m.cfg.Recorder; r != nil {
		// Bounded: objdb without a quorum (the last node of a cluster
		// going down) must not hold the unload until the node kills us.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, p := range []string{fmt.Sprintf("internal_configuration.service.%d.", ls.index), "runtime.services." + ServiceKey(name) + "."} {
			if _, err := r.DeletePrefix(rctx, p); err != nil {
				m.cfg.Log.Warn("removing a service's keys", "prefix", p, "err", err)
			}
		}
	}
	ev := Event{Op: "unloaded", Name: name, Version: ls.Version, Index: ls.index, ExitAsks: asks}
	m.cfg.Log.Info("service engine unloaded", "service", name, "ver", ls.Version, "exit_asks", asks)
	m.event(ev)
	return ev, nil
}

// askExit asks every instance of name whether it may exit, again and
// again while one answers busy, and returns how many rounds it took.
func (m *Manager) askExit(ctx context.Context, name string) int {
	deadline := time.Now().Add(m.cfg.ExitPatience)
	data, _ := json.Marshal(loader.Control{Op: loader.OpExit})
	for round := 1; ; round++ {
		busy := false
		for _, a := range m.localInstances(name) {
			r, err := m.cfg.Conn.Request(m.cfg.Subjects.LcrControl(a.Instance), data, 2*time.Second)
			if err != nil {
				continue // gone already, or deaf: SIGTERM decides
			}
			var cr loader.ControlReply
			if json.Unmarshal(r.Data, &cr) == nil && cr.Busy {
				busy = true
			}
		}
		if !busy {
			return round
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.cfg.Log.Warn("service still busy; stopping it anyway", "service", name, "asked", round)
			return round
		}
		m.cfg.Log.Info("service asks for more time before exiting", "service", name, "asked", round)
		select {
		case <-time.After(m.cfg.ExitRetry):
		case <-ctx.Done():
		}
	}
}

// unloadAll unloads every service, highest priority first (ties: the
// later loaded first), as corosync unloads by priority on shutdown.
func (m *Manager) unloadAll() {
	m.busy.Lock()
	defer m.busy.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ExitPatience+2*m.cfg.StopTimeout)
	defer cancel()
	for _, name := range m.unloadOrder() {
		if _, err := m.unloadLocked(ctx, name); err != nil {
			m.cfg.Log.Warn("unloading", "service", name, "err", err)
		}
	}
}

func (m *Manager) unloadOrder() []string {
	m.mu.Lock()
	svcs := slices.Collect(maps.Values(m.loaded))
	m.mu.Unlock()
	prio := map[string]int{}
	for _, ls := range svcs {
		for _, a := range m.localInstances(ls.Name) {
			prio[ls.Name] = max(prio[ls.Name], a.Priority)
		}
	}
	slices.SortFunc(svcs, func(a, b *loadedSvc) int {
		return cmp.Or(cmp.Compare(prio[b.Name], prio[a.Name]), b.loadedAt.Compare(a.loadedAt))
	})
	out := make([]string, len(svcs))
	for i, ls := range svcs {
		out[i] = ls.Name
	}
	return out
}

// List describes the loaded services in index order.
func (m *Manager) List() []ServiceInfo {
	m.mu.Lock()
	svcs := slices.Collect(maps.Values(m.loaded))
	m.mu.Unlock()
	out := make([]ServiceInfo, 0, len(svcs))
	for _, ls := range svcs {
		si := ServiceInfo{State: "loaded", Index: ls.index, Name: ls.Name, Version: ls.Version, Launch: ls.launch, Loaded: ls.loadedAt,
			Restarts: ls.sup.Restarts()[ls.Name]}
		if t, err := m.client.Target(ls.handle); err == nil {
			si.Target, si.Serving, si.Instances = t.Subject, t.Version, t.Instances
		}
		for _, a := range m.localInstances(ls.Name) {
			si.PIDs = append(si.PIDs, a.PID)
			si.Priority = max(si.Priority, a.Priority)
		}
		out = append(out, si)
	}
	out = append(out, m.hosted()...)
	slices.SortFunc(out, func(a, b ServiceInfo) int { return cmp.Compare(a.Index, b.Index) })
	m.mu.Lock()
	for _, p := range m.pending {
		if _, ok := m.loaded[p.Name]; !ok {
			out = append(out, ServiceInfo{State: "loading", Index: -1, Name: p.Name, Version: p.Version, Error: p.lastErr, Attempts: p.attempts})
		}
	}
	m.mu.Unlock()
	return out
}

// hosted describes the corosync services this node serves from processes
// the manager did not start (State "hosted"): cpg inside the IPC gateway
// (ipc.colocate) is the node's cpg, and is listed with the others.
func (m *Manager) hosted() []ServiceInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	byName := map[string]*ServiceInfo{}
	for _, a := range m.instances {
		id, _, ok := cswire.CorosyncService(ServiceKey(a.Name))
		if _, loaded := m.loaded[a.Name]; !ok || loaded || a.State != loader.Serving {
			continue
		}
		si := byName[a.Name]
		if si == nil {
			si = &ServiceInfo{State: "hosted", Index: id, Name: a.Name, Version: a.Version, Target: a.Subject, Serving: a.Version}
			byName[a.Name] = si
		}
		si.PIDs = append(si.PIDs, a.PID)
		si.Priority = max(si.Priority, a.Priority)
		si.Instances++
	}
	out := make([]ServiceInfo, 0, len(byName))
	for _, si := range byName {
		slices.Sort(si.PIDs)
		out = append(out, *si)
	}
	return out
}

// Client is the manager's loader client (its handles reach the loaded
// services).
func (m *Manager) Client() *loader.Client { return m.client }

func (m *Manager) event(ev Event) {
	data, _ := json.Marshal(ev)
	_ = m.cfg.Conn.Publish(m.cfg.Subjects.SvcmgrEvents(m.cfg.Node), data)
}

// recordService writes internal_configuration.service.N.{name,ver}; a
// failure (objdb not up yet) is retried by record.
func (m *Manager) recordService(ctx context.Context, ls *loadedSvc) {
	r := m.cfg.Recorder
	if r == nil {
		ls.recorded = true
		return
	}
	if err := m.recordKeys(ctx, ls.Service, ls.index); err != nil {
		// Once, then a summary a minute: at every node's start objdb
		// answers CS_ERR_TRY_AGAIN for seconds (until the bus's
		// JetStream has its meta leader), and each retry said it (25–40
		// warnings a start, three services a few times a second).
		m.retries.Warn("recording a loaded service in objdb; will retry", "service", ls.Name, "err", err)
		return
	}
	ls.recorded = true
}

// recordKeys writes a service's internal_configuration.service.N.{name,ver}
// and, for a corosync service, runtime.services.<name>.service_id.
func (m *Manager) recordKeys(ctx context.Context, s Service, index int) error {
	r := m.cfg.Recorder
	p := fmt.Sprintf("internal_configuration.service.%d.", index)
	recorded := s.Name
	_, engine, isCorosync := cswire.CorosyncService(ServiceKey(s.Name))
	if isCorosync {
		recorded = engine
	}
	name, _ := objdb.ParseValue(objdb.String, recorded)
	ver, _ := objdb.ParseValue(objdb.Uint32, strconv.FormatUint(uint64(s.Version), 10))
	err := errors.Join(r.Set(ctx, p+"name", name), r.Set(ctx, p+"ver", ver))
	if isCorosync && err == nil {
		id, _ := objdb.ParseValue(objdb.Uint16, strconv.Itoa(index))
		err = r.Set(ctx, "runtime.services."+ServiceKey(s.Name)+".service_id", id)
	}
	return err
}

// record retries unrecorded services and writes the counters that changed;
// it reports whether everything is recorded.
func (m *Manager) record(ctx context.Context) bool {
	r := m.cfg.Recorder
	if r == nil {
		return true
	}
	ok := true
	// Under busy: Load and Unload write the same services' keys.
	m.busy.Lock()
	defer m.busy.Unlock()
	// A hosted service is recorded as corosync lists its services (cmap
	// as internal_configuration.service.0, …): the node serves it.
	for _, h := range m.hosted() {
		m.mu.Lock()
		done := m.hostedRec[h.Name]
		m.mu.Unlock()
		if done {
			continue
		}
		if err := m.recordKeys(ctx, Service{Name: h.Name, Version: h.Version}, h.Index); err != nil {
			m.cfg.Log.Debug("recording a hosted service in objdb; will retry", "service", h.Name, "err", err)
			ok = false
			continue
		}
		m.mu.Lock()
		m.hostedRec[h.Name] = true
		m.mu.Unlock()
	}
	m.mu.Lock()
	svcs := slices.Collect(maps.Values(m.loaded))
	m.mu.Unlock()
	for _, ls := range svcs {
		if !ls.recorded {
			m.recordService(ctx, ls)
			ok = ok && ls.recorded
		}
		sum := map[string]loader.FnStats{}
		for _, a := range m.localInstances(ls.Name) {
			for fn, st := range a.Stats {
				cur := sum[fn]
				cur.RX += st.RX
				cur.TX += st.TX
				sum[fn] = cur
			}
		}
		_, _, isCorosync := cswire.CorosyncService(ServiceKey(ls.Name))
		for fn, st := range sum {
			if prev, ok := ls.stats[fn]; ok && prev == st {
				continue // unchanged; a counter still at zero is recorded once
			}
			if _, err := strconv.Atoi(fn); isCorosync && err != nil {
				// A corosync service's counters are its exec messages'
				// (numbers); its bus functions (a session's "open")
				// are corobus's plumbing, not corosync's keys.
				continue
			}
			p := "runtime.services." + ServiceKey(ls.Name) + "." + fn + "."
			rx, _ := objdb.ParseValue(objdb.Uint64, strconv.FormatUint(st.RX, 10))
			tx, _ := objdb.ParseValue(objdb.Uint64, strconv.FormatUint(st.TX, 10))
			if err := errors.Join(r.Set(ctx, p+"rx", rx), r.Set(ctx, p+"tx", tx)); err != nil {
				m.cfg.Log.Debug("recording service counters", "service", ls.Name, "err", err)
				ok = false
				continue
			}
			ls.stats[fn] = st
		}
	}
	return ok
}

// LoadRequest is the payload of the load operation; UnloadRequest of
// unload.
type LoadRequest = Service

// UnloadRequest names the service to unload.
type UnloadRequest struct {
	Name string `json:"name"`
}

// AddEndpoints serves load, unload and list on Subjects.SvcmgrAPI(node, op).
func (m *Manager) AddEndpoints(svc micro.Service) error {
	handlers := map[string]micro.HandlerFunc{
		"load": func(r micro.Request) {
			var q LoadRequest
			if err := json.Unmarshal(r.Data(), &q); err != nil || q.Name == "" {
				_ = r.Error("400", "expected JSON {name, ver}", nil)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ReadyTimeout+5*time.Second)
			defer cancel()
			if err := m.Load(ctx, q); err != nil {
				_ = r.Error("500", err.Error(), nil)
				return
			}
			for _, si := range m.List() {
				if si.Name == q.Name {
					_ = r.RespondJSON(si)
					return
				}
			}
			_ = r.RespondJSON(ServiceInfo{Name: q.Name, Version: q.Version})
		},
		"unload": func(r micro.Request) {
			var q UnloadRequest
			if err := json.Unmarshal(r.Data(), &q); err != nil || q.Name == "" {
				_ = r.Error("400", "expected JSON {name}", nil)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ExitPatience+2*m.cfg.StopTimeout)
			defer cancel()
			ev, err := m.Unload(ctx, q.Name)
			if err != nil {
				_ = r.Error("404", err.Error(), nil)
				return
			}
			_ = r.RespondJSON(ev)
		},
		"list": func(r micro.Request) { _ = r.RespondJSON(m.List()) },
	}
	for op, h := range handlers {
		// Loads and unloads take seconds: run them off the endpoint's
		// subscription so that list answers meanwhile.
		h := h
		async := func(r micro.Request) { go h(r) }
		if err := svc.AddEndpoint(op, micro.HandlerFunc(async), micro.WithEndpointSubject(m.cfg.Subjects.SvcmgrAPI(m.cfg.Node, op))); err != nil {
			return fmt.Errorf("adding svcmgr endpoint %s: %w", op, err)
		}
	}
	return nil
}
