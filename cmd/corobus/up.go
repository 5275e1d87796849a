package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/logsys"
	"github.com/corobus/corobus/node"
	"github.com/corobus/corobus/node/priority"
	"github.com/corobus/corobus/node/procgov"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/ipc"
	"github.com/corobus/corobus/services/members"
	"github.com/corobus/corobus/services/svcmgr"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// layers are the layer processes of a node, in start order; `corobus up`
// stops them in the reverse order. The bus is not in the list: it is
// started first, on its own, because everything else connects to it.
func (a *app) layers() []layer.Layer {
	return []layer.Layer{
		objdb.Layer(),
		loader.Layer(),
		svcmgr.Layer(a.builtinLaunch()),
		syncsvc.Layer(),
		ipc.Layer(),
	}
}

// users are the node's bus users: one per layer and built-in service, with
// the grant each declares (docs/security.md).
func (a *app) users() (*bus.Users, error) {
	return node.Users(append(a.layers(), a.builtinServices()...)...)
}

// busHooks are what runs inside the bus process next to the server.
func (a *app) busHooks() node.BusHooks {
	rec := members.NewRecorder()
	guard := cmap.NewVersionGuard()
	return node.BusHooks{
		// Membership, ordered multicast and virtual synchrony run next
		// to the server whose routes they use.
		totem.Hook(totem.Callbacks{Member: rec.OnMember, OlderConfig: guard.OnOlder}),
		// The authority over the node's own keys (objdb's node keys),
		// one per node, living as long as the node's bus.
		objdb.KeeperHook,
		// runtime.members.<id>.* in objdb, as corosync keeps them.
		rec.Hook,
		// A node whose totem.config_version is older than the
		// cluster's stops, as corosync's cmap stops corosync.
		guard.Hook,
	}
}

func runUp(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var inproc bool
	var stopTimeout time.Duration
	fs := newFlagSet(a, "up", "[-c FILE] [-o key=value] [--inproc] [--stop-timeout DURATION]",
		"Start a whole node: the bus in its own process, then every layer as a supervised child\n"+
			"process (restarted with backoff, output prefixed with the layer's name). SIGINT or\n"+
			"SIGTERM stops the layers in reverse order and leaves no child behind.\n"+
			"With no -c it runs the embedded default: one node on 127.0.0.1.")
	nf.register(fs, false)
	fs.BoolVar(&inproc, "inproc", false, "run every layer as an actor of this process instead of as child processes")
	fs.DurationVar(&stopTimeout, "stop-timeout", 10*time.Second, "how long a layer has to stop after SIGTERM before SIGKILL")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	cfg, err := nf.load(a)
	if err != nil {
		return err
	}
	if err := checkTotem(cfg); err != nil {
		return err
	}
	if err := checkRouteSecurity(cfg); err != nil {
		return err
	}
	ls, err := a.logsysFor(cfg, "up")
	if err != nil {
		return err
	}
	defer ls.Close()
	log := logsys.For(ls.Logger(), "MAIN")
	local, err := cfg.LocalNode()
	if err != nil {
		return err
	}
	// Before any layer starts: they inherit it.
	if err := applyPriority(a, cfg, log); err != nil {
		return err
	}
	// One node per state directory. Leftover layers of a node whose up
	// was killed are waited for (they are stopping); a live owner is
	// refused at once.
	lock, err := node.LockStateDirWait(cfg.StateDir(), "up", stopTimeout+5*time.Second, func(e *node.InUseError) {
		log.Warn("waiting for the layer processes of a previous node to exit", "state_dir", e.Dir, "pid", e.Owner.PID)
	})
	if err != nil {
		return err
	}
	defer lock.Close()
	log.Info("starting node", "node", local.ID, "cluster", cfg.ClusterName(), "config", describeFile(cfg), "state_dir", cfg.StateDir(), "inproc", inproc)
	// Client verbs without -c find this node's file here, as corosync's
	// tools find corosync through its socket.
	wctx, stopWhereIs := context.WithCancel(ctx)
	defer stopWhereIs()
	go serveWhereIs(wctx, cfg, log)
	// The node owns its state directory: its token is made here at the
	// first start (clients and layers only read it).
	if _, err := bus.EnsureToken(cfg); err != nil {
		return err
	}
	url, err := bus.ClientURL(cfg)
	if err != nil {
		return err
	}
	subjects, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		return err
	}
	// The cfg service stops the node (corosync-cfgtool -H, a kill from
	// another node) by asking on NodeShutdown: the same as SIGTERM. With
	// the layers in their own processes, up's own logging follows the
	// node's as theirs does (a reload's logging section, a reopen); in
	// one process the bus's logging is up's, and the bus attaches it.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	upLogging := ls
	if inproc {
		upLogging = nil
	}
	// A kill from another node ends up with corosync's status (255), a
	// shutdown or a signal with 0.
	var exit atomic.Int32
	sup := node.NewSupervisor(log, a.stderr, node.DefaultBackoff(), stopTimeout)
	go serveShutdown(ctx, url, subjects, local.ID, log, upLogging, func(code int) {
		exit.CompareAndSwap(0, int32(code))
		if code == killedExitStatus && !inproc {
			// corosync exits at once when it is killed: its members
			// leave as NODEDOWN, its votequorum never says goodbye. The
			// bus goes first, so that nothing the layers say while they
			// stop leaves the node.
			log.Warn("killed by another node: crashing the bus before the other layers stop")
			sup.Crash("bus")
		}
		stop()
	})
	// stopped is how up ends once the node stopped without an error.
	stopped := func() error {
		if code := exit.Load(); code != 0 {
			log.Error("node stopped: killed by another node", "node", local.ID, "exit_status", code)
			return exitStatus(code)
		}
		log.Info("node stopped", "node", local.ID)
		return nil
	}
	go a.notifyWhenServing(ctx, url, subjects, local.ID, log)
	if inproc {
		users, err := a.users()
		if err != nil {
			return err
		}
		err = node.InProc(ctx, cfg, ls, a.version, users, a.busHooks(), a.layers(),
			func(l layer.Layer) *logsys.Logsys {
				lls, err := a.logsysFor(cfg, l.Name)
				if err != nil {
					return ls // the configuration is the same: it cannot fail here
				}
				return lls
			})
		if err != nil {
			return err
		}
		return stopped()
	}

	exe, err := node.Executable()
	if err != nil {
		return err
	}
	var common []string
	if nf.file != "" {
		common = append(common, "-c", nf.file)
	}
	for _, o := range nf.overrides {
		common = append(common, "-o", o)
	}
	// Every layer holds the state directory lock too (descriptor 3), so
	// that the directory stays owned until the last of them has exited.
	files, env := []*os.File{lock.File()}, []string{node.StateLockEnv + "=3"}
	children := []node.Child{{
		Name: "bus",
		Path: exe,
		Args: append([]string{"bus"}, common...),
		Ready: func(ctx context.Context) error {
			return waitBusReady(ctx, url, subjects, local.ID, 30*time.Second)
		},
		Files: files, Env: append(slices.Clip(env), busGodebug(os.Getenv("GODEBUG"))),
	}}
	for _, l := range a.layers() {
		children = append(children, node.Child{Name: l.Name, Path: exe, Args: append([]string{l.Name}, common...), Files: files, Env: env})
	}
	if err := sup.Run(ctx, children); err != nil {
		return err
	}
	return stopped()
}

// busGodebug is the bus process's GODEBUG: the caller's (user), after
// schedtrace=2147483647, which keeps the Go runtime's monitor thread
// (sysmon) out of its deep sleep. That sleep is taken whenever every P is
// idle, and every system call entered meanwhile wakes the monitor, which
// then polls every 20 µs for a millisecond: the embedded NATS server reads
// and writes its sockets through ordinary system calls, and a bus busy
// with cluster-key writes goes idle and busy again thousands of times a
// second, so the monitor's wake-ups and sleeps were about a sixth of the
// bus processes' CPU (docs/objdb.md, "Cluster keys"). With schedtrace
// set the monitor never takes the deep sleep and backs off to one wake-up
// every 10 ms. The trace itself is due every 2 147 483 647 ms, the
// largest period GODEBUG takes, counted from the machine's boot: a bus
// started on a machine up for more than 25 days prints one line of it
// (`SCHED …`) at its start and one every 25 days. A schedtrace of the
// user's own comes later and wins.
func busGodebug(user string) string {
	v := "schedtrace=2147483647"
	if user != "" {
		v += "," + user
	}
	return "GODEBUG=" + v
}

// serveShutdown answers Subjects.NodeShutdown(id) once the bus is up:
// the request is acknowledged, then stop stops the node as SIGTERM would.
// With ls, it also attaches up's logging to the node's (node.AttachLogging)
// on the same connection.
func serveShutdown(ctx context.Context, url string, subjects bus.Subjects, id uint32, log *slog.Logger, ls *logsys.Logsys, stop func(exit int)) {
	for ctx.Err() == nil {
		nc, err := bus.Dial(url, "corobus-up", 0)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
				continue
			}
		}
		sub, err := nc.Subscribe(subjects.NodeShutdown(id), func(m *nats.Msg) {
			var q cfg.StopRequest
			if err := json.Unmarshal(m.Data, &q); err != nil {
				// Not a stop request: refused at once (micro's error
				// headers, and the reply's JSON), the node left running.
				log.Warn("refusing a malformed node shutdown request", "err", err)
				why := "malformed node shutdown request: " + err.Error()
				b, _ := json.Marshal(cfg.StopReply{Error: why})
				_ = bus.RespondBadRequest(m, why, b)
				return
			}
			b, _ := json.Marshal(cfg.StopReply{OK: true})
			_ = m.Respond(b)
			log.Info("stopping the node on request", "reason", q.Reason)
			stop(q.Exit)
		})
		if err != nil {
			nc.Close()
			continue
		}
		detach, err := node.AttachLogging(nc, subjects, id, ls, "up")
		if err != nil {
			log.Warn("up's logging does not follow the node's reloads", "err", err)
			detach = func() {}
		}
		<-ctx.Done()
		detach()
		_ = sub.Unsubscribe()
		nc.Close()
		return
	}
}

// waitBusReady polls the bus until it answers its status with JetStream on.
func waitBusReady(ctx context.Context, url string, subjects bus.Subjects, nodeID uint32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		nc, err := bus.Dial(url, "corobus-up-probe", 0)
		if err == nil {
			st, err2 := bus.FetchStatus(nc, subjects, nodeID, time.Second)
			nc.Close()
			if err2 == nil && st.JetStream {
				return nil
			}
			last = err2
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus not ready: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func describeFile(cfg *config.Config) string {
	if cfg.Embedded() {
		return "embedded default"
	}
	return cfg.File()
}

func runBus(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var restarts int
	fs := newFlagSet(a, "bus", "[-c FILE] [-o key=value]",
		"Run a node's embedded nats-server (JetStream on, routes to the nodelist), its status\n"+
			"endpoint, membership and ordered multicast. `corobus up` starts it first.")
	nf.register(fs, false)
	fs.IntVar(&restarts, "restarts", 0, "restart count, set by the supervisor")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	cfg, err := nf.load(a)
	if err != nil {
		return err
	}
	if err := checkTotem(cfg); err != nil {
		return err
	}
	if err := checkRouteSecurity(cfg); err != nil {
		return err
	}
	ls, err := a.logsysFor(cfg, "bus")
	if err != nil {
		return err
	}
	defer ls.Close()
	if err := applyPriority(a, cfg, logsys.For(ls.Logger(), "MAIN")); err != nil {
		return err
	}
	// The bus writes the state directory: it holds its lock, handed by
	// up or taken here.
	lock, err := node.HoldStateDir(cfg.StateDir(), "bus", a.environ, true)
	if err != nil {
		return err
	}
	defer lock.Close()
	users, err := a.users()
	if err != nil {
		return err
	}
	// The bus is the node's process that works in bursts and rests in
	// between: one processor at rest, all of them at work (package
	// procgov), unless GOMAXPROCS says how many.
	if !slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		defer procgov.Start(ctx, procgov.Config{Log: logsys.For(ls.Logger(), "BUS")})()
	}
	return node.RunBus(ctx, cfg, ls, a.version, restarts, users, a.busHooks(), nil)
}

// checkTotem refuses totem timings that do not go together (totem.consensus
// below half of totem.token, …) before anything starts. The bus's totem
// would refuse them too, but only once its server runs, and up would
// restart the bus, refused again, forever.
func checkTotem(cfg *config.Config) error {
	subjects, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		return err
	}
	if _, err := totem.FromConfig(cfg, subjects); err != nil {
		return fmt.Errorf("%s: %w", describeFile(cfg), err)
	}
	// The crypto settings too: the bus would refuse them at its start
	// and up would restart it again and again.
	if _, err := bus.CryptoFrom(cfg); err != nil {
		return fmt.Errorf("%s: %w", describeFile(cfg), err)
	}
	return nil
}

// checkRouteSecurity builds the node's route protection as its bus will
// (reading the cluster key when crypto is on), so that a missing or short
// key stops `corobus up` before anything starts, as it stops corosync,
// rather than a bus that exits at every restart.
func checkRouteSecurity(cfg *config.Config) error {
	local, err := cfg.LocalNode()
	if err != nil {
		return err
	}
	if _, err := bus.RouteSecurityFrom(cfg, local.ID); err != nil {
		return fmt.Errorf("%s: %w", describeFile(cfg), err)
	}
	return nil
}

// layerCommand is the subcommand that runs layer l as its own process,
// named verb: the layer's name ("objdb"), or "service NAME" for a built-in
// service, so that its --help gives the command line that runs it and
// says who starts it.
func layerCommand(l layer.Layer, verb, startedBy string) func(ctx context.Context, a *app, args []string) error {
	return func(ctx context.Context, a *app, args []string) error {
		var nf nodeFlags
		var restarts int
		fs := newFlagSet(a, verb, "[-c FILE] [-o key=value] [--bus URL]",
			capitalize(l.Summary)+".\nA layer process: "+startedBy+" starts it; run more of them to scale the layer.")
		nf.register(fs, true)
		fs.IntVar(&restarts, "restarts", 0, "restart count, set by the supervisor")
		if err := parse(a, fs, args); err != nil {
			return err
		}
		cfg, err := nf.load(a)
		if err != nil {
			return err
		}
		ls, err := a.logsysFor(cfg, l.Name)
		if err != nil {
			return err
		}
		defer ls.Close()
		if err := applyPriority(a, cfg, logsys.For(ls.Logger(), l.Subsys)); err != nil {
			return err
		}
		// Started by up: hold its state directory lock. Started by hand
		// to scale a layer: nothing to hold, it writes no state.
		lock, err := node.HoldStateDir(cfg.StateDir(), l.Name, a.environ, false)
		if err != nil {
			return err
		}
		defer lock.Close()
		return node.RunLayer(ctx, l, cfg, nf.busURL, ls, a.version, restarts)
	}
}

// applyPriority gives this process the node's scheduling priority
// (package priority: corosync's, as near as a Go process can have it).
// Under up, which applied it before starting this process, a refusal has
// been reported already.
func applyPriority(a *app, cfg *config.Config, log *slog.Logger) error {
	s, err := priority.FromConfig(cfg)
	if err != nil {
		return err
	}
	underUp := slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, node.StateLockEnv+"=") })
	priority.Apply(s, log, underUp)
	return nil
}

// killedExitStatus is the exit status of a node killed by another node
// (corosync-cfgtool -k); up's own variable cfg hides the package there.
const killedExitStatus = cfg.KilledExitStatus
