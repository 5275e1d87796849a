package quorum

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/ipc/session"
	syncsvc "github.com/corobus/corobus/services/sync"
	"github.com/corobus/corobus/services/votequorum"
)

// Component names the service to the loader: corosync's "corosync_quorum".
const (
	ComponentName    = "quorum"
	ComponentVersion = 0
)

// SyncID is corosync's QUORUM_SERVICE id: the quorum service synchronizes
// before votequorum (5), so that a round's nodelist notification precedes
// its quorum notification, as with corosync.
const SyncID = 3

// Layer is `corobus service quorum`.
func Layer() layer.Layer {
	return layer.Layer{Name: ComponentName, Subsys: "QUORUM", Summary: "the quorum service: libquorum's view of the provider's decision", Run: Run,
		Procs: 1, // a view change now and then
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName(ComponentName)), a.Component(ComponentName, loader.LocalNamespace(a.Node)), a.SyncService(ComponentName), a.QuorumFollower())
		}}
}

// Subject is the component subject of node's quorum instances.
func Subject(s bus.Subjects, node uint32) string {
	return s.Component(loader.LocalNamespace(node), ComponentName, ComponentVersion)
}

// Run serves the quorum service for env's node until ctx ends.
func Run(ctx context.Context, env layer.Env) error {
	provider := env.Config.String("quorum.provider")
	if provider != "" && provider != votequorum.ProviderVotequorum {
		return fmt.Errorf("quorum.provider %q: invalid quorum provider (corobus provides %s)", provider, votequorum.ProviderVotequorum)
	}
	if provider != "" {
		env.Log.Info("using quorum provider " + provider)
	}
	// Announced first, as every layer process is ($SRV discovery,
	// `corobus status`): Serve waits for the sync engine.
	discovery, err := layer.NewService(env, ComponentName, Layer().Summary, time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the %s service: %w", ComponentName, err)
	}
	defer func() { _ = discovery.Stop() }()
	svc := NewService(provider != "", env.Log)
	return Serve(ctx, env, svc, provider != "")
}

// Serve runs svc as node's quorum component: following the provider's
// view, synchronizing with the sync engine, serving libquorum sessions.
func Serve(ctx context.Context, env layer.Env, svc *Service, follow bool) error {
	if follow {
		stop, err := followProvider(ctx, env, svc)
		if err != nil {
			return err
		}
		defer stop()
	}
	stopSync, err := syncsvc.Serve(ctx, env.Conn, env.Subjects, env.Node.ID, syncsvc.Registration{Name: ComponentName, ID: SyncID}, hooks{svc})
	if err != nil {
		return err
	}
	defer stopSync()
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			return session.ServeComponent(ctx, env.Conn, env.Subjects, env.Node.ID, loader.Component{
				Name: ComponentName, Version: ComponentVersion, Subject: Subject(env.Subjects, env.Node.ID),
			}, svc, env.Log)
		}, func(error) { cancel() })
	}
	return g.Run()
}

// followProvider takes votequorum's decisions from the node's quorum state
// subject, and asks for the current one at start (a restarted quorum
// service must not wait for the next change).
func followProvider(ctx context.Context, env layer.Env, svc *Service) (func(), error) {
	apply := func(data []byte) bool {
		var st votequorum.State
		if err := json.Unmarshal(data, &st); err != nil {
			env.Log.Warn("undecodable quorum state", "err", err)
			return false
		}
		if !st.Synced {
			return false // the provider has not decided yet
		}
		svc.SetView(View{Members: st.Members, Quorate: st.Quorate, Ring: RingID{NodeID: st.Ring.NodeID, Seq: st.Ring.Seq}})
		return true
	}
	var have atomic.Bool
	sub, err := env.Conn.Subscribe(env.Subjects.QuorumState(env.Node.ID), func(m *nats.Msg) {
		if apply(m.Data) {
			have.Store(true)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("quorum: following the provider: %w", err)
	}
	go func() {
		// Until the first decision arrives on the subject: after it, the
		// subject is the news and asking again would repeat it.
		for ctx.Err() == nil && !have.Load() {
			m, err := env.Conn.Request(env.Subjects.QuorumStateGet(env.Node.ID), nil, 2*time.Second)
			if err == nil && !have.Load() && apply(m.Data) {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return func() { _ = sub.Unsubscribe() }, nil
}

type hooks struct{ s *Service }

func (h hooks) Init(req syncsvc.HookRequest) error {
	h.s.SyncInit(req.Trans, req.Members, RingID{NodeID: req.Ring.Rep, Seq: req.Ring.Seq})
	return nil
}
func (h hooks) Process(syncsvc.HookRequest) (bool, error) { return true, nil }
func (h hooks) Activate(syncsvc.HookRequest) error {
	h.s.SyncActivate()
	return nil
}
func (h hooks) Abort(syncsvc.HookRequest) {}
