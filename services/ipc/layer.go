package ipc

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	objdbclient "github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/quorum"
	"github.com/corobus/corobus/services/svcmgr"
	"github.com/corobus/corobus/services/votequorum"
)

// Layer is `corobus ipc`.
func Layer() layer.Layer {
	return layer.Layer{Name: "ipc", Subsys: "IPC", Summary: "the IPC gateway: corosync clients over libqb IPC (shared memory or sockets)", Run: Run, Grant: Grant,
		// CPG's deliveries (colocated by default) arrive as bus messages,
		// each copied by the bus client into a buffer of its own: 64 KiB
		// messages made the collector run every few hundred of them.
		// cpg_tput 64 KiB on one node: 65-81 µs of this process's CPU
		// per message instead of 83-91, its peak heap 58-73 MB instead
		// of 34-39 (docs/architecture.md).
		GCPercent: 400}
}

// Grant is the gateway's bus grant: it calls every routed component (it
// alone opens client sessions, whose credentials components trust), follows
// the sync flag, reads uidgid.* for admission, and runs the instances of
// ipc.colocate with their own grants.
func Grant(a bus.Access) bus.Grant {
	g := bus.Merge(a.Process(layer.ServiceName("ipc")), a.IPCGateway(), a.LoaderClient(), a.ComponentCaller(),
		a.ObjdbClient(false), a.SyncFollower())
	if a.Config == nil {
		return g
	}
	// A colocated instance is the service in the gateway's process: its
	// grant comes along (and with it, what it may do).
	colocated := strings.Fields(a.Config.String("ipc.colocate"))
	if slices.Contains(colocated, cmap.ComponentName) {
		g = bus.Merge(g, cmap.Grant(a))
	}
	if slices.Contains(colocated, cpg.ComponentName) {
		g = bus.Merge(g, cpg.Grant(a))
	}
	return g
}

// DefaultRoutes are the libqb services a node's gateway serves.
func DefaultRoutes() []Route {
	routes := []Route{
		{Service: "cmap", Component: cmap.ComponentName, Version: cmap.ComponentVersion, ServiceID: cswire.ServiceCmap},
		{Service: "cpg", Component: cpg.ComponentName, Version: cpg.ComponentVersion, HeldDuringSync: cpg.HeldDuringSync, Async: cpg.Async,
			EventQueueHigh: cpg.EventQueueHigh, EventQueueMax: cpg.EventQueueMax, ServiceID: cswire.ServiceCPG},
		{Service: "quorum", Component: quorum.ComponentName, Version: quorum.ComponentVersion, ServiceID: cswire.ServiceQuorum},
		{Service: "votequorum", Component: votequorum.ComponentName, Version: votequorum.ComponentVersion, ServiceID: cswire.ServiceVotequorum},
		{Service: "cfg", Component: cfg.ComponentName, Version: cfg.ComponentVersion, HeldDuringSync: cfg.HeldDuringSync, ServiceID: cswire.ServiceCfg},
	}
	for i := range routes {
		routes[i].RequestIDs = cswire.RequestIDs(routes[i].ServiceID)
	}
	return routes
}

// Run serves the default routes until ctx ends, with the instances of
// ipc.colocate running inside the gateway.
func Run(ctx context.Context, env layer.Env) error {
	cfg := Config{
		Conn: env.Conn, Subjects: env.Subjects, Node: env.Node.ID, Log: env.Log,
		Routes: DefaultRoutes(), Admit: UIDGIDAdmission(objdbclient.New(env.Conn, env.Subjects, env.Node.ID)),
		Colocated: map[string]Colocated{},
	}
	// corosync's own key decides when corobus's is not set: an existing
	// corosync.conf gets the transport it asked for.
	transport := env.Config.String("ipc.transport")
	if transport == "" {
		transport = env.Config.String("system.qb_ipc_type")
		if transport == "native" {
			transport = "shm"
		}
	}
	if transport == "" {
		transport = "shm" // corosync's, on Linux
	}
	var err error
	if cfg.Transport, err = libqb.ParseTransport(transport); err != nil {
		return fmt.Errorf("ipc.transport: %w", err)
	}
	// 0 in the file means no limit; absent means the default.
	for key, dst := range map[string]*int{"ipc.max_connections": &cfg.MaxConns, "ipc.max_connections_per_uid": &cfg.MaxConnsPerUID} {
		n, err := env.Config.Uint(key, 0)
		if err != nil {
			return err
		}
		if env.Config.Exists(key) && n == 0 {
			n = math.MaxInt32
		}
		*dst = int(min(n, math.MaxInt32))
	}
	var grp run.Group
	// The colocated cmap reads the gateway's stats in process, once the
	// gateway exists (below).
	var colocatedCmap *cmap.Service
	for _, name := range slices.Compact(slices.Sorted(slices.Values(strings.Fields(env.Config.String("ipc.colocate"))))) {
		if name == "none" {
			continue
		}
		if name == cpg.ComponentName {
			svc := cpg.NewFor(env)
			cfg.Colocated[name] = Colocated{Subject: cpg.Subject(env.Subjects, env.Node.ID), Open: svc.OpenColocated}
			ctx, cancel := context.WithCancel(ctx)
			grp.Add(func() error { return cpg.Serve(ctx, env, svc) }, func(error) { cancel() })
			env.Log.Info("running a colocated instance", "component", name)
			continue
		}
		if name != cmap.ComponentName {
			return fmt.Errorf("ipc.colocate: %q cannot run in the gateway (known: %s, %s)", name, cmap.ComponentName, cpg.ComponentName)
		}
		st, err := objdb.OpenFor(ctx, env)
		if err != nil {
			return err
		}
		defer st.Close()
		svc := cmap.NewService(cmap.NewObjdbStore(st), env.Log)
		colocatedCmap = svc
		// The node's libcmap clients read from st: a request another
		// service answered waits for st to have its writes.
		cfg.Settle = st.WaitFor
		subject := cmap.Subject(env.Subjects, env.Node.ID)
		cfg.Colocated[name] = Colocated{Subject: subject, Open: func(c *libqb.Conn) (libqb.Session, error) {
			return svc.OpenConn(c, fmt.Sprintf("%s/%d pid %d", c.Service, c.ID, c.Creds.PID)), nil
		}}
		// The same instance serves the bus, so the loader knows it.
		ctx, cancel := context.WithCancel(ctx)
		grp.Add(func() error { return cmap.Serve(ctx, env, svc) }, func(error) { cancel() })
		env.Log.Info("running a colocated instance", "component", name, "subject", subject)
	}
	loaded, err := loadedServices(env.Config)
	if err != nil {
		return err
	}
	for i, r := range cfg.Routes {
		_, colocated := cfg.Colocated[r.Component]
		cfg.Routes[i].Loaded = colocated || loaded[r.Component]
		// The components that register with the sync engine: cpg and
		// quorum always, votequorum as the quorum provider only (it
		// stands by otherwise).
		switch r.Component {
		case cpg.ComponentName, quorum.ComponentName:
			cfg.Routes[i].SyncService = r.Component
		case votequorum.ComponentName:
			if env.Config.String("quorum.provider") == votequorum.ProviderVotequorum {
				cfg.Routes[i].SyncService = r.Component
			}
		}
	}
	// No connection before the node's services are loaded and
	// synchronized, as corosync (Config.AwaitStartup).
	cfg.AwaitStartup = true
	g, err := New(cfg)
	if err != nil {
		return err
	}
	if colocatedCmap != nil {
		colocatedCmap.SetStats(cmap.MergeStats(g.StatsEntries, cmap.TotemStats(env.Conn, env.Subjects, env.Node.ID)))
		reset := cmap.BusStatsClear(env.Conn, env.Subjects, env.Node.ID)
		reset.IPC = g.ClearStats
		colocatedCmap.SetStatsClear(reset)
	}
	svc, err := layer.NewService(env, "ipc", "corosync client gateway", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the ipc service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	{
		ctx, cancel := context.WithCancel(ctx)
		grp.Add(func() error { return g.Run(ctx) }, func(error) { cancel() })
	}
	return grp.Run()
}

// loadedServices are the components the node's service manager loads:
// the configuration's service blocks, and the default services unless
// loader.default_services is no (as svcmgr reads them).
func loadedServices(c *config.Config) (map[string]bool, error) {
	services, err := svcmgr.ConfiguredServices(c)
	if err != nil {
		return nil, err
	}
	if c.Bool("loader.default_services", true) {
		services = append(services, svcmgr.DefaultServices()...)
	}
	out := map[string]bool{}
	for _, s := range services {
		out[s.Name] = true
	}
	return out, nil
}

// UIDGIDAdmission admits as corosync does: root, the user corobus runs
// as, and the uids and gids listed under uidgid.* (from the configuration
// file's uidgid sections, or set at run time), read from objdb at each
// connection, so that a change applies to the next client.
func UIDGIDAdmission(db *objdbclient.Client) func(libqb.Creds) bool {
	return func(c libqb.Creds) bool {
		if c.UID == 0 || int(c.UID) == os.Geteuid() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, k := range []string{
			"uidgid.uid." + strconv.FormatUint(uint64(c.UID), 10),
			"uidgid.config.uid." + strconv.FormatUint(uint64(c.UID), 10),
			"uidgid.gid." + strconv.FormatUint(uint64(c.GID), 10),
			"uidgid.config.gid." + strconv.FormatUint(uint64(c.GID), 10),
		} {
			if _, err := db.Get(ctx, k); err == nil {
				return true
			}
		}
		return false
	}
}
