package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
)

// ServerConfig configures a loader process.
type ServerConfig struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	// Node is the node whose search path this loader serves.
	Node uint32
	// SearchPath is the expanded search path (ExpandSearchPath).
	SearchPath []string
	Log        *slog.Logger
	// Sweep is the least time between two looks for silent instances;
	// default 100ms. The loader looks when the earliest deadline passes,
	// not every Sweep: at rest it wakes once per announcement interval,
	// not ten times a second.
	Sweep time.Duration
}

// Server is the loader process of one node: it follows every component's
// announcements, resolves references along the node's search path, and
// tells superseded instances to retire.
type Server struct {
	cfg ServerConfig

	mu  sync.Mutex
	reg *Registry
	// retireSent limits retire requests to one per instance heartbeat.
	retireSent map[string]time.Time
	// sweepAt is when Run looks next; an announcement due to expire
	// sooner (a new instance with a short interval) pokes it.
	sweepAt time.Time
	poke    chan struct{}
}

// NewServer checks cfg and returns a server; Run and AddEndpoints start it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Conn == nil || cfg.Log == nil {
		return nil, errors.New("loader: a connection and a logger are required")
	}
	if len(cfg.SearchPath) == 0 {
		return nil, errors.New("loader: empty search path")
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = 100 * time.Millisecond
	}
	return &Server{cfg: cfg, reg: NewRegistry(), retireSent: map[string]time.Time{}, poke: make(chan struct{}, 1)}, nil
}

// Layer is `corobus loader`.
func Layer() layer.Layer {
	return layer.Layer{Name: "loader", Subsys: "LCR", Summary: "live component replacement: component registry and resolution", Run: Run,
		Procs: 1, // announcements and resolutions: a trickle
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName("loader")), a.LoaderServer())
		}}
}

// Run is the loader layer: it serves the node's search path
// (loader.search_path) until ctx ends.
func Run(ctx context.Context, env layer.Env) error {
	path, err := ExpandSearchPath(env.Config.String("loader.search_path"), env.Node.ID)
	if err != nil {
		return err
	}
	s, err := NewServer(ServerConfig{Conn: env.Conn, Subjects: env.Subjects, Node: env.Node.ID, SearchPath: path, Log: env.Log})
	if err != nil {
		return err
	}
	svc, err := layer.NewService(env, "loader", "corobus live component replacement", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the loader service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := s.AddEndpoints(svc); err != nil {
		return err
	}
	env.Log.Info("loader serving", "search_path", path)
	return s.Run(ctx)
}

// AddEndpoints serves the loader API of the node on svc (a queue group
// shared with the node's other loader processes).
func (s *Server) AddEndpoints(svc micro.Service) error {
	for op, h := range map[string]micro.HandlerFunc{
		APIReference: s.handleRef(true),
		APIResolve:   s.handleRef(false),
		APIRelease:   s.handleRelease,
		APIList:      s.handleList,
	} {
		if err := svc.AddEndpoint(op, h, micro.WithEndpointSubject(s.cfg.Subjects.LcrAPI(s.cfg.Node, op))); err != nil {
			return fmt.Errorf("adding loader endpoint %s: %w", op, err)
		}
	}
	return nil
}

// Run follows announcements and hold messages and drops silent instances
// until ctx ends. Announcements are not a queue subscription: every loader
// keeps the registry of the namespaces on its search path, and hears
// those only — another node's own components' heartbeats then stay on
// that node (a route forwards only what the other side subscribed to) —
// and the legacy announcements of every namespace.
func (s *Server) Run(ctx context.Context) error {
	nc := s.cfg.Conn
	subjects := []string{s.cfg.Subjects.LcrAnnounceLegacyAll()}
	for _, ns := range s.cfg.SearchPath {
		if subj := s.cfg.Subjects.LcrAnnounceNamespace(ns); !slices.Contains(subjects, subj) {
			subjects = append(subjects, subj)
		}
	}
	for _, subj := range subjects {
		sub, err := nc.Subscribe(subj, s.onAnnounce)
		if err != nil {
			return fmt.Errorf("subscribing to announcements: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	holdSub, err := nc.Subscribe(s.cfg.Subjects.LcrHold(s.cfg.Node), s.onHold)
	if err != nil {
		return fmt.Errorf("subscribing to hold messages: %w", err)
	}
	defer func() { _ = holdSub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	// Instances announce themselves every few seconds at rest: ask them
	// now, so that a (re)started loader resolves at once.
	if err := nc.Publish(s.cfg.Subjects.LcrAsk(), nil); err != nil {
		s.cfg.Log.Warn("asking the components to announce themselves", "err", err)
	}
	t := time.NewTimer(s.cfg.Sweep)
	defer t.Stop()
	s.mu.Lock()
	s.sweepAt = time.Now().Add(s.cfg.Sweep)
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.poke:
		case now := <-t.C:
			s.mu.Lock()
			names := s.reg.Expire(now)
			s.mu.Unlock()
			for _, n := range names {
				s.cfg.Log.Warn("component instance stopped announcing; dropped", "component", n)
				s.publishChanged(n)
			}
		}
		// Next look: just past the earliest deadline (Expire drops what
		// is strictly older), at least Sweep from now; a minute away
		// when nothing is registered (what registers pokes it sooner).
		now := time.Now()
		s.mu.Lock()
		wait := time.Minute
		if next, ok := s.reg.NextExpiry(); ok {
			wait = next.Sub(now) + time.Millisecond
		}
		wait = max(wait, s.cfg.Sweep)
		s.sweepAt = now.Add(wait)
		s.mu.Unlock()
		t.Reset(wait)
	}
}

func (s *Server) onAnnounce(m *nats.Msg) {
	a, err := ParseAnnouncement(s.cfg.Subjects, m.Subject, m.Data)
	if err != nil {
		s.cfg.Log.Warn("invalid component announcement", "err", err)
		return
	}
	now := time.Now()
	s.mu.Lock()
	changed, err := s.reg.Announce(a, now)
	var retire []Retirement
	if err == nil && a.State != Leaving {
		s.pokeBefore(now.Add(expiryFactor * a.interval()))
	}
	if err == nil {
		for _, r := range s.reg.Superseded() {
			// Once per heartbeat of the instance at most: a lost retire
			// request is repeated, a slow one is not piled up.
			if last, ok := s.retireSent[r.Instance]; ok && now.Sub(last) < a.interval() {
				continue
			}
			s.retireSent[r.Instance] = now
			retire = append(retire, r)
		}
		if a.State == Leaving {
			delete(s.retireSent, a.Instance)
		}
	}
	s.mu.Unlock()
	if err != nil {
		s.cfg.Log.Warn("invalid component announcement", "err", err)
		return
	}
	if changed {
		s.cfg.Log.Info("component instance", "component", a.Name, "version", a.Version, "namespace", a.Namespace,
			"instance", a.Instance, "state", a.State, "node", a.Node, "pid", a.PID)
		// The change is published before any retire request goes out,
		// so that a client told "moved" by a retiring instance finds
		// the replacement when it asks this loader again.
		s.publishChanged(a.Name)
	}
	for _, r := range retire {
		go s.retire(r)
	}
}

// retire asks a superseded instance to finish and leave.
func (s *Server) retire(r Retirement) {
	data, _ := json.Marshal(Control{Op: OpRetire, By: &r.By})
	reply, err := s.cfg.Conn.Request(s.cfg.Subjects.LcrControl(r.Instance), data, 2*time.Second)
	if err != nil {
		s.cfg.Log.Warn("asking a replaced instance to retire", "instance", r.Instance, "err", err)
		return
	}
	var cr ControlReply
	if err := json.Unmarshal(reply.Data, &cr); err != nil || !cr.OK {
		s.cfg.Log.Warn("replaced instance refused to retire", "instance", r.Instance, "reply", string(reply.Data))
		return
	}
	s.cfg.Log.Info("replaced instance retiring", "instance", r.Instance, "component", r.By.Name, "by_version", r.By.Version)
}

func (s *Server) publishChanged(name string) {
	data, _ := json.Marshal(Changed{Name: name})
	if err := s.cfg.Conn.Publish(s.cfg.Subjects.LcrChanged(s.cfg.Node, name), data); err != nil {
		s.cfg.Log.Warn("publishing a resolution change", "component", name, "err", err)
	}
}

func (s *Server) onHold(m *nats.Msg) {
	var h HoldMsg
	if err := json.Unmarshal(m.Data, &h); err != nil || h.Holder == "" {
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.reg.Hold(h, now)
	if h.IntervalMS > 0 {
		s.pokeBefore(now.Add(expiryFactor * time.Duration(h.IntervalMS) * time.Millisecond))
	}
	s.mu.Unlock()
}

// pokeBefore wakes Run to plan its next look if deadline comes before
// the planned one. s.mu is held.
func (s *Server) pokeBefore(deadline time.Time) {
	if deadline.Before(s.sweepAt) {
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
}

func (s *Server) handleRef(count bool) micro.HandlerFunc {
	return func(r micro.Request) {
		var q RefRequest
		if err := json.Unmarshal(r.Data(), &q); err != nil || q.Name == "" {
			_ = r.Error("400", "expected JSON {name, version}", nil)
			return
		}
		s.mu.Lock()
		t, err := s.reg.Resolve(q.Name, q.Version, s.cfg.SearchPath)
		if err == nil && count && q.Holder != "" {
			s.reg.Reference(q.Holder, q.Name, q.Version, time.Now())
		}
		s.mu.Unlock()
		if err != nil {
			_ = r.Error("404", err.Error(), nil)
			return
		}
		_ = r.RespondJSON(t)
	}
}

func (s *Server) handleRelease(r micro.Request) {
	var q RefRequest
	if err := json.Unmarshal(r.Data(), &q); err != nil || q.Name == "" || q.Holder == "" {
		_ = r.Error("400", "expected JSON {holder, name, version}", nil)
		return
	}
	s.mu.Lock()
	s.reg.Release(q.Holder, q.Name, q.Version, time.Now())
	s.mu.Unlock()
	_ = r.RespondJSON(ControlReply{OK: true})
}

func (s *Server) handleList(r micro.Request) {
	s.mu.Lock()
	l := Listing{Node: s.cfg.Node, SearchPath: s.cfg.SearchPath, Components: s.reg.List(s.cfg.SearchPath)}
	s.mu.Unlock()
	_ = r.RespondJSON(l)
}
