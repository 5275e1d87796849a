package cpg

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	objdbclient "github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/session"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// Component names the cpg service to the loader: corosync's service
// engine "corosync_cpg", version 0.
const (
	ComponentName    = "cpg"
	ComponentVersion = 0
)

// Layer is `corobus service cpg`: the cpg service as a component of its
// own, started by the service manager and resolved through the loader by
// the IPC gateway, which carries each libcpg connection to it as a
// session.
func Layer() layer.Layer {
	return layer.Layer{Name: "cpg", Subsys: "CPG", Summary: "the cpg service: closed process groups over the ordered multicast", Run: Run,
		// Discovery as the process corobus-cpg: a colocated instance
		// (Grant alone, in the gateway) is the gateway's process.
		Grant: func(a bus.Access) bus.Grant { return bus.Merge(Grant(a), a.Process(layer.ServiceName(ComponentName))) },
		// Every delivery is a bus message the client copies: the
		// gateway's reason (services/ipc.Layer) when CPG runs apart.
		GCPercent: 400}
}

// Grant is the cpg component's bus grant, wherever it runs: its sessions,
// the totem and the sync engine it follows, its read-only keys
// (runtime.services.cpg.*) and the groups query.
func Grant(a bus.Access) bus.Grant {
	return bus.Merge(a.Process(), a.Component(ComponentName, loader.LocalNamespace(a.Node)), a.TotemClient(TotemService),
		a.SyncService(ComponentName), a.SyncFollower(), a.ObjdbClient(true), a.CPGService())
}

// Subject is the component subject of node's cpg instances.
func Subject(s bus.Subjects, node uint32) string {
	return s.Component(loader.LocalNamespace(node), ComponentName, ComponentVersion)
}

// NewFor makes the service of env's node.
func NewFor(env layer.Env) *Service {
	return New(Options{Node: env.Node.ID, Subjects: env.Subjects, Logger: env.Log})
}

// Run serves cpg on env's node until ctx ends — unless the node's IPC
// gateway runs cpg in its own process (ipc.colocate): a node has one cpg
// instance, whose joinlist speaks for the node, and this process then
// stands by.
func Run(ctx context.Context, env layer.Env) error {
	// Announced first, as every layer process is ($SRV discovery,
	// `corobus status`), the one standing by too: it is a process of the node.
	discovery, err := layer.NewService(env, ComponentName, Layer().Summary, time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the %s service: %w", ComponentName, err)
	}
	defer func() { _ = discovery.Stop() }()
	if Colocated(env) {
		env.Log.Info("cpg runs in the IPC gateway (ipc.colocate); this process stands by")
		<-ctx.Done()
		return nil
	}
	return Serve(ctx, env, NewFor(env))
}

// Colocated reports whether env's node runs cpg inside its IPC gateway.
func Colocated(env layer.Env) bool {
	return slices.Contains(strings.Fields(env.Config.String("ipc.colocate")), ComponentName)
}

// Serve runs svc as the cpg component of env's node: attached to the
// node's totem and sync engine, announced to the loader, serving sessions,
// the groups query and the counters.
func Serve(ctx context.Context, env layer.Env, svc *Service) error {
	rec := objdbclient.New(env.Conn, env.Subjects, env.Node.ID)
	rec.Internal = true
	return ServeWith(ctx, env.Conn, env.Subjects, env.Node.ID, svc, rec)
}

// ServeWith is Serve with its dependencies spelled out (tests run several
// nodes in one process); rec may be nil.
func ServeWith(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32, svc *Service, rec Recorder) error {
	if err := svc.Start(nc); err != nil {
		return err
	}
	defer svc.Stop()
	stopGroups, err := svc.ServeGroups(nc)
	if err != nil {
		return err
	}
	defer stopGroups()
	// The node's sync engine: CPG's clients wait while it runs, and its
	// "process" for CPG is done once this instance has synchronized the
	// groups in the view.
	engine, err := nc.Subscribe(subjects.SyncState(node), func(m *nats.Msg) { svc.onEngineState(m.Data) })
	if err != nil {
		return fmt.Errorf("cpg: following the sync engine: %w", err)
	}
	defer func() { _ = engine.Unsubscribe() }()
	if m, err := nc.Request(subjects.SyncStateGet(node), nil, 2*time.Second); err == nil {
		svc.onEngineState(m.Data)
	}

	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case f := <-svc.sends:
					f()
				}
			}
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			stop, err := syncsvc.Serve(ctx, nc, subjects, node, syncsvc.Registration{Name: ComponentName, ID: ServiceID}, syncHooks{svc})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			defer stop()
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	if rec != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { svc.Record(ctx, rec, 2*time.Second); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		comp := loader.Component{Name: ComponentName, Version: ComponentVersion, Subject: Subject(subjects, node)}
		g.Add(func() error {
			return session.ServeComponent(ctx, nc, subjects, node, comp, sessions{svc}, svc.log)
		}, func(error) { cancel() })
	}
	return g.Run()
}

func (s *Service) onEngineState(b []byte) {
	var st syncsvc.State
	if json.Unmarshal(b, &st) == nil {
		s.setEngineSync(st.InProgress)
	}
}

// sessions serves the gateway's sessions (services/ipc/session).
type sessions struct{ s *Service }

func (h sessions) Open(c *session.Conn) (session.Session, error) {
	conn, err := h.s.Open(Client{
		Events: c.SendEvent,
		Flow:   func(level int32) { _ = c.SetFlowControl(level) },
		PID:    c.PID, UID: c.UID, Label: c.ID,
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// OpenColocated opens a connection of a client the gateway of this
// process serves (ipc.colocate): callbacks, flow control and the requests
// held during a sync go straight to it.
func (s *Service) OpenColocated(c *libqb.Conn) (libqb.Session, error) {
	conn, err := s.Open(Client{
		Events:     c.SendEvent,
		Flow:       c.SetFlowControl,
		Overloaded: c.Overloaded,
		PID:        c.Creds.PID, UID: c.Creds.UID, Label: fmt.Sprintf("%s/%d pid %d", c.Service, c.ID, c.Creds.PID),
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// BorrowsRequests tells the gateway of this process (libqb.Borrower) that
// Request keeps nothing of a request once it returns — a multicast's data
// is copied into its totem message — so the request need not be copied
// first.
func (c *Conn) BorrowsRequests() bool { return true }

// syncHooks are CPG's part in the node's sync engine. The groups are
// synchronized over CPG's own stream (joinlists), where their activation
// has its place in the order; the engine's "process" waits for it, so
// that the node's sync (and with it the gateway's CS_ERR_TRY_AGAIN) ends
// only once CPG is synchronized too.
type syncHooks struct{ s *Service }

func (h syncHooks) Init(syncsvc.HookRequest) error { return nil }

func (h syncHooks) Process(req syncsvc.HookRequest) (bool, error) {
	return h.s.waitSynced(req.Ring, time.Second), nil
}

func (h syncHooks) Activate(syncsvc.HookRequest) error { return nil }
func (h syncHooks) Abort(syncsvc.HookRequest)          {}
