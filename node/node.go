package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/logsys"
	"github.com/corobus/corobus/node/procgov"
)

// BusHooks are the parts of the bus process that later layers of the stack
// hang on the running server (membership and ordered multicast run inside
// the bus process, next to the routes they use).
type BusHooks []func(ctx context.Context, srv *bus.Server, env layer.Env) error

// RunBus is the `corobus bus` process: the embedded nats-server, its status
// endpoint and discovery record, and the hooks, until ctx ends; then a
// graceful shutdown.
//
// users are the node's bus users (Users of its layers and services): each
// may connect with the permissions its role grants.
func RunBus(ctx context.Context, cfg *config.Config, ls *logsys.Logsys, version string, restarts int, users *bus.Users, hooks BusHooks, onReady func(*bus.Server)) error {
	log := logsys.For(ls.Logger(), "BUS")
	sc, err := bus.ServerConfigFrom(cfg, log)
	if err != nil {
		return err
	}
	sc.Users = users
	// Before the server's first store: nats-server's access-time ticker
	// would otherwise wake the bus 10 times a second (bus.SlowAccessTime).
	bus.SlowAccessTime(ctx, bus.AccessTimeTick)
	srv, err := bus.StartServer(ctx, sc)
	if err != nil {
		return err
	}
	defer srv.Shutdown(true)
	nc, err := srv.Connect("corobus-bus")
	if err != nil {
		return err
	}
	defer nc.Close()
	env, err := newEnv(cfg, nc, log, version, restarts)
	if err != nil {
		return err
	}
	detach, err := AttachLogging(nc, env.Subjects, env.Node.ID, ls, "bus")
	if err != nil {
		return err
	}
	defer detach()
	svc, err := layer.NewService(env, "bus", "embedded nats-server, membership and ordered multicast", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the bus service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := bus.StatusEndpoint(svc, srv, env.Subjects); err != nil {
		return fmt.Errorf("adding the bus status endpoint: %w", err)
	}
	log.Info("bus ready", "server", bus.ServerName(sc.NodeID), "client_url", srv.ClientURL(), "routes", len(sc.Routes))
	if onReady != nil {
		onReady(srv)
	}

	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	}
	for _, h := range hooks {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return h(ctx, srv, env) }, func(error) { cancel() })
	}
	return g.Run()
}

// RunLayer is a layer's own process (`corobus <layer>`): connect to the
// node's bus as the layer's own user, then serve until ctx ends. With no
// busURL the password comes from the node's token in its state directory;
// a busURL carrying the token is turned into the layer's user's URL, so a
// layer never holds the administrator's permissions.
func RunLayer(ctx context.Context, l layer.Layer, cfg *config.Config, busURL string, ls *logsys.Logsys, version string, restarts int) error {
	log := logsys.For(ls.Logger(), l.Subsys)
	if l.Grant == nil {
		return noGrant(l)
	}
	// RunLayer is the whole process's work (corobus <layer>): its
	// scheduler is the layer's to size.
	// A layer that does not pin its processor count (the gateway, objdb,
	// a service apart) has the bus's governor: one processor unless its
	// work waits for a second (package procgov).
	if os.Getenv("GOMAXPROCS") == "" {
		if l.Procs > 0 {
			runtime.GOMAXPROCS(l.Procs)
		} else {
			defer procgov.Start(ctx, procgov.Config{Log: log})()
		}
	}
	if l.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(l.GCPercent)
	}
	var err error
	if busURL == "" {
		busURL, err = bus.UserURL(cfg, l.Name)
	} else {
		busURL, err = bus.AsUser(busURL, l.Name)
	}
	if err != nil {
		return err
	}
	nc, err := bus.Dial(busURL, layer.ServiceName(l.Name), 30*time.Second, violationHandler(log, l.Name))
	if err != nil {
		return err
	}
	defer nc.Close()
	env, err := newEnv(cfg, nc, log, version, restarts)
	if err != nil {
		return err
	}
	detach, err := AttachLogging(nc, env.Subjects, env.Node.ID, ls, l.Name)
	if err != nil {
		return err
	}
	defer detach()
	err = l.Run(ctx, env)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	_ = nc.Drain()
	return err
}

func newEnv(cfg *config.Config, nc *nats.Conn, log *slog.Logger, version string, restarts int) (layer.Env, error) {
	local, err := cfg.LocalNode()
	if err != nil {
		return layer.Env{}, err
	}
	subjects, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		return layer.Env{}, err
	}
	return layer.Env{
		Config:   cfg,
		Node:     local,
		Conn:     nc,
		Subjects: subjects,
		Log:      log,
		Restarts: restarts,
		Version:  version,
	}, nil
}

// InProc runs a whole node in this process: the bus, then every layer as an
// actor of one run.Group with its own in-process connection as its own bus
// user. The code each layer runs is the code it runs as a child process.
// users must declare every layer (Users), and the services the layers
// start.
//
// When ctx ends (or an actor fails) the layers stop as up's children do:
// in reverse order, each completely before the next, the bus last — the
// service manager must unload its services while objdb, the loader and
// the bus still serve them; all at once, its service processes waited out
// their stop timeout and were killed, and left their keys in objdb.
func InProc(ctx context.Context, cfg *config.Config, busLog *logsys.Logsys, version string, users *bus.Users, hooks BusHooks, layers []layer.Layer, logFor func(l layer.Layer) *logsys.Logsys) error {
	for _, l := range layers {
		if l.Grant == nil {
			return noGrant(l)
		}
	}
	// Each actor runs under a context of its own, not derived from ctx:
	// stopAll ends them one by one.
	type actor struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var actors []actor
	newActor := func() (context.Context, actor) {
		actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		a := actor{cancel: cancel, done: make(chan struct{})}
		actors = append(actors, a)
		return actx, a
	}
	var stopOnce sync.Once
	stopAll := func(error) {
		stopOnce.Do(func() {
			for i := len(actors) - 1; i >= 0; i-- {
				actors[i].cancel()
				<-actors[i].done
			}
		})
	}
	ready := make(chan *bus.Server, 1)
	var g run.Group
	{
		// The node's life: until ctx ends or another actor returns.
		lctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			<-lctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	{
		actx, a := newActor()
		g.Add(func() error {
			defer close(a.done)
			return RunBus(actx, cfg, busLog, version, 0, users, hooks, func(s *bus.Server) { ready <- s })
		}, stopAll)
	}
	for _, l := range layers {
		actx, a := newActor()
		g.Add(func() error {
			defer close(a.done)
			var srv *bus.Server
			select {
			case srv = <-ready:
				ready <- srv // hand it on to the next layer
			case <-actx.Done():
				return nil
			}
			ls := logFor(l)
			nc, err := srv.ConnectAs(l.Name, layer.ServiceName(l.Name), violationHandler(logsys.For(ls.Logger(), l.Subsys), l.Name))
			if err != nil {
				return err
			}
			defer nc.Close()
			env, err := newEnv(cfg, nc, logsys.For(ls.Logger(), l.Subsys), version, 0)
			if err != nil {
				return err
			}
			detach, err := AttachLogging(nc, env.Subjects, env.Node.ID, ls, l.Name)
			if err != nil {
				return err
			}
			defer detach()
			err = l.Run(actx, env)
			if errors.Is(err, context.Canceled) || actx.Err() != nil {
				return nil
			}
			return fmt.Errorf("layer %s: %w", l.Name, err)
		}, stopAll)
	}
	return g.Run()
}
