// Package layer is what every corobus layer process has in common: the
// environment it is handed (configuration, bus connection, logger) and its
// discovery record on the bus. A layer is a function; whether it runs as a
// child process of `corobus up` or as an actor of one in-process run.Group
// is decided by the caller, and the layer's code is the same either way.
package layer

import (
	"context"
	"log/slog"
	"os"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
)

// Env is a layer's world.
type Env struct {
	Config   *config.Config
	Node     config.Node // this node
	Conn     *nats.Conn
	Subjects bus.Subjects
	Log      *slog.Logger
	// Restarts is how many times the supervisor restarted this layer.
	Restarts int
	Version  string
}

// Layer is one process of a node.
type Layer struct {
	// Name is the subcommand (`corobus <name>`) and the discovery name.
	Name string
	// Subsys is the corosync logging subsystem the layer logs as.
	Subsys string
	// Summary is one line for `corobus --help`.
	Summary string
	// Run serves until ctx ends or it fails.
	Run func(ctx context.Context, env Env) error
	// Grant is what the layer's bus user (its Name) may publish and
	// subscribe to: the Merge of the blocks of bus/grants.go for the
	// protocols it speaks. A layer without one cannot connect
	// (docs/security.md, "Declaring a layer's subjects").
	Grant bus.Role
	// Procs, when not zero, is the Go scheduler's processor count
	// (GOMAXPROCS) of the layer's own process, unless the environment
	// sets GOMAXPROCS. 1 suits a layer whose work is a trickle of small
	// messages: at rest one processor does it with half the thread
	// wake-ups (no other processor spun up and parked for each message).
	// 0: the process's count follows its load (package procgov: one
	// processor until its work waits for a second).
	Procs int
	// GCPercent, when not zero, is the garbage collector's target
	// percentage (GOGC, debug.SetGCPercent) of the layer's own process,
	// unless the environment sets GOGC. Above 100 suits a layer whose
	// heap is small but that allocates a buffer per large message it
	// carries (the bus client copies every message it receives): it
	// collects less often, for a higher peak heap.
	GCPercent int
}

// ServiceName is the micro service name a layer announces itself under;
// `corobus status` finds layers by it.
func ServiceName(layer string) string { return "corobus-" + layer }

// Metadata keys every layer's discovery record carries.
const (
	MetaCluster  = "cluster"
	MetaNode     = "node"
	MetaPID      = "pid"
	MetaRestarts = "restarts"
	MetaLayer    = "layer"
	MetaStarted  = "started"
)

// NewService registers a layer's micro service: it answers $SRV.PING, INFO
// and STATS with the layer's node, pid and restart count, and the layer adds
// its endpoints to it.
func NewService(env Env, layerName, description string, started string) (micro.Service, error) {
	return micro.AddService(env.Conn, micro.Config{
		Name:        ServiceName(layerName),
		Version:     semver(env.Version),
		Description: description,
		Metadata: map[string]string{
			MetaCluster:  env.Config.ClusterName(),
			MetaNode:     strconv.FormatUint(uint64(env.Node.ID), 10),
			MetaPID:      strconv.Itoa(os.Getpid()),
			MetaRestarts: strconv.Itoa(env.Restarts),
			MetaLayer:    layerName,
			MetaStarted:  started,
		},
	})
}

// semver keeps micro happy: it insists on a semantic version, and a
// development build's version is not one.
func semver(v string) string {
	if v == "" || v == "dev" {
		return "0.0.0-dev"
	}
	return v
}

// Bind starts the layer's context-aware work as an oklog/run actor pair.
func Bind(ctx context.Context, run func(context.Context) error) (execute func() error, interrupt func(error)) {
	ctx, cancel := context.WithCancel(ctx)
	return func() error { return run(ctx) }, func(error) { cancel() }
}
