package votequorum

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/objdb"
	objdbclient "github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/internal/rtkeys"
	"github.com/corobus/corobus/services/ipc/session"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// Component names the service to the loader: corosync's
// "corosync_votequorum", version 0.
const (
	ComponentName    = "votequorum"
	ComponentVersion = 0
)

// Layer is `corobus service votequorum`.
func Layer() layer.Layer {
	return layer.Layer{Name: ComponentName, Subsys: "VOTEQ", Summary: "the votequorum service: votes, expected votes and quorum agreed over totem", Run: Run,
		Procs: 1, // a view change now and then
		// runtime.votequorum.* are its keys; it reads its configuration
		// keys and follows their changes.
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName(ComponentName)), a.Component(ComponentName, loader.LocalNamespace(a.Node)), a.SyncService(ComponentName),
				a.TotemClient(TotemService), a.ObjdbClient(true), a.QuorumProvider())
		}}
}

// Subject is the component subject of node's votequorum instances.
func Subject(s bus.Subjects, node uint32) string {
	return s.Component(loader.LocalNamespace(node), ComponentName, ComponentVersion)
}

// Run serves votequorum for env's node until ctx ends. When quorum.provider
// names no provider (or another one) it stays idle, unannounced, as
// corosync loads votequorum only as the quorum service's provider.
func Run(ctx context.Context, env layer.Env) error {
	st, err := ParseSettings(env.Config.Flat(), env.Node.Index)
	if err != nil {
		return err
	}
	// Announced first, as every layer process is ($SRV discovery,
	// `corobus status`), when it is not the provider too.
	discovery, err := layer.NewService(env, ComponentName, Layer().Summary, time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the %s service: %w", ComponentName, err)
	}
	defer func() { _ = discovery.Stop() }()
	if st.Provider != ProviderVotequorum {
		// Announced (the service manager waits for that) but refusing
		// every connection: corosync has no votequorum service then.
		env.Log.Info("votequorum is not the quorum provider; refusing connections", "quorum.provider", st.Provider)
		return session.ServeComponent(ctx, env.Conn, env.Subjects, env.Node.ID, loader.Component{
			Name: ComponentName, Version: ComponentVersion, Subject: Subject(env.Subjects, env.Node.ID),
		}, notProvider{}, env.Log)
	}
	db := objdbclient.New(env.Conn, env.Subjects, env.Node.ID)
	db.Internal = true
	keys := rtkeys.New(db, env.Log)
	svc, err := NewService(Config{Conn: env.Conn, Subjects: env.Subjects, Node: env.Node.ID, Settings: st,
		StateDir: env.Config.StateDir(), Log: env.Log, Keys: keys})
	if err != nil {
		return err
	}
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return keys.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return svc.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return watchConfig(ctx, db, keys, svc, env) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			return session.ServeComponent(ctx, env.Conn, env.Subjects, env.Node.ID, loader.Component{
				Name: ComponentName, Version: ComponentVersion, Subject: Subject(env.Subjects, env.Node.ID),
				Exit:     func() error { svc.Leaving(ctx); return nil },
				Counters: svc.Counters, CountersMoved: svc.CountersMoved(),
				// runtime.votequorum.* as a request changed them are in
				// the gateway's copy before the client has the answer.
			}, session.Settling(svc, db.Settle), env.Log)
		}, func(error) { cancel() })
	}
	return g.Run()
}

// notProvider refuses connections while another provider (or none) is
// configured.
type notProvider struct{}

func (notProvider) Open(*session.Conn) (session.Session, error) {
	return nil, fmt.Errorf("votequorum is not the quorum provider: %w", cswire.ErrAccess)
}

// hooks are votequorum's sync callbacks.
type hooks struct {
	ctx context.Context
	s   *Service
}

func ring(r totem.RingID) RingID { return RingID{NodeID: r.Rep, Seq: r.Seq} }

func (h hooks) Init(req syncsvc.HookRequest) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.core.SyncInit(req.Trans, req.Members, ring(req.Ring))
	return nil
}

// Process sends this node's state, then holds the round until those
// messages are ordered (so that they precede this node's barrier) and,
// with a quorum device, until it has polled.
func (h hooks) Process(syncsvc.HookRequest) (bool, error) {
	h.s.mu.Lock()
	done := h.s.core.SyncProcess()
	h.s.mu.Unlock()
	own := h.s.waitOwn(h.ctx, 200*time.Millisecond)
	if !done {
		time.Sleep(50 * time.Millisecond) // polling for the device: do not spin the engine
	}
	return done && own, nil
}

// Activate waits until this process has seen every nodeinfo ordered
// before the round's barriers, then decides.
func (h hooks) Activate(syncsvc.HookRequest) error {
	if err := h.s.caughtUp(h.ctx, 2*time.Second); err != nil && h.ctx.Err() == nil {
		h.s.log.Warn("activating before this process saw its mark come back", "err", err)
	}
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.core.SyncActivate()
	return nil
}

func (h hooks) Abort(syncsvc.HookRequest) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.core.SyncAbort()
}

func syncServe(ctx context.Context, s *Service) (func(), error) {
	return syncsvc.Serve(ctx, s.cfg.Conn, s.cfg.Subjects, s.cfg.Node, syncsvc.Registration{Name: ComponentName, ID: SyncID}, hooks{ctx: ctx, s: s})
}

// watchConfig re-reads votequorum's keys when quorum.* or nodelist.*
// change in the node's objdb (a cmap write), as corosync's votequorum
// tracks icmap, and when the cfg service's reload asks it to
// (Subjects.QuorumRefresh). While a reload is in progress the changes it
// writes are left for the reload's own request.
func watchConfig(ctx context.Context, db *objdbclient.Client, keys *rtkeys.Writer, svc *Service, env layer.Env) error {
	refresh := func(ctx context.Context, duringReload bool) error {
		flat, pos, reloading, err := readKeys(ctx, db)
		if err != nil {
			return fmt.Errorf("reading the configuration keys: %w", err)
		}
		if reloading && !duringReload {
			return nil
		}
		st, err := ParseSettings(flat, pos)
		if err != nil {
			return fmt.Errorf("the configuration is not valid, not applied: %w", err)
		}
		if st.CancelWaitForAll {
			v, _ := objdb.ParseValue(objdb.Uint8, "0")
			if err := db.Set(ctx, "quorum.cancel_wait_for_all", v); err != nil {
				env.Log.Warn("votequorum: quorum.cancel_wait_for_all not reset", "err", err)
			}
		}
		svc.Refresh(st)
		return nil
	}
	sub, err := env.Conn.Subscribe(env.Subjects.QuorumRefresh(env.Node.ID), func(m *nats.Msg) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rep := []byte(`{"ok":true}`)
		if err := refresh(ctx, true); err != nil {
			env.Log.Error("votequorum: configuration refresh", "err", err)
			rep, _ = json.Marshal(map[string]string{"error": err.Error()})
		} else {
			_ = keys.Flush(ctx)
		}
		_ = m.Respond(rep)
	})
	if err != nil {
		return fmt.Errorf("votequorum: serving refresh requests: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	changed := make(chan struct{}, 1)
	echoes := newLoadEchoes(env.Config.Flat(), env.Node.Index)
	poke := func(ch objdbclient.Change) {
		if echoes.echo(ch) {
			return
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for _, prefix := range []string{"quorum.", "nodelist."} {
		stop, err := db.Track(prefix, true, poke)
		if err != nil {
			return err
		}
		defer stop()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		// Let a burst of writes settle.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		select {
		case <-changed:
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := refresh(cctx, false); err != nil {
			env.Log.Error("votequorum: configuration change", "err", err)
		}
		cancel()
	}
}

// loadEchoes recognises the creations of the keys votequorum started from.
// It reads its settings from the node's file at start; the objdb layer
// loads the same file into the node's keys at its own pace, which on a
// cluster's first start (JetStream electing its leaders) is often after
// votequorum follows them. Those creations change nothing: corosync's
// votequorum starts after icmap holds the file and never sees them, so
// they must not run a refresh (whose side effects are corosync's for a
// real change: runtime.votequorum.atb_type written, nodeinfo sent again).
// Only a key's first event can be its echo.
type loadEchoes struct {
	mu   sync.Mutex
	file map[string]string // quorum.* and nodelist.* as read at start
}

func newLoadEchoes(flat map[string]string, localPos int) *loadEchoes {
	e := &loadEchoes{file: map[string]string{}}
	for k, v := range flat {
		if strings.HasPrefix(k, "quorum.") || strings.HasPrefix(k, "nodelist.") {
			e.file[k] = v
		}
	}
	// The objdb layer writes the node's position in the nodelist too.
	e.file["nodelist.local_node_pos"] = strconv.Itoa(localPos)
	return e
}

// echo reports whether ch is the creation of a key with the value
// votequorum started from.
func (e *loadEchoes) echo(ch objdbclient.Change) bool {
	e.mu.Lock()
	want, ok := e.file[ch.Key]
	delete(e.file, ch.Key)
	e.mu.Unlock()
	if !ok || ch.Kind != objdb.EventAdd.String() || ch.Old != nil || ch.New == nil {
		return false
	}
	v, err := objdb.ParseValue(ch.New.Type, want)
	return err == nil && v.String() == ch.New.String()
}

// readKeys lists the node's quorum.* and nodelist.* keys.
func readKeys(ctx context.Context, db *objdbclient.Client) (flat map[string]string, pos int, reloading bool, err error) {
	flat = map[string]string{}
	for _, p := range []string{"quorum.", "nodelist."} {
		entries, err := db.List(ctx, p)
		if err != nil {
			return nil, 0, false, err
		}
		for _, e := range entries {
			flat[e.Key] = e.Value
		}
	}
	pos = -1
	if v, ok := flat["nodelist.local_node_pos"]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			pos = n
		}
	}
	if v, err := db.Get(ctx, "config.totemconfig_reload_in_progress"); err == nil {
		if n, ok := v.Int(); ok && n != 0 {
			reloading = true
		}
	}
	return flat, pos, reloading, nil
}
