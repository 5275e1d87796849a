package cfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	objdbclient "github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/ipc/session"
)

// Component names the service to the loader: corosync's "corosync_cfg".
const (
	ComponentName    = "cfg"
	ComponentVersion = 0
)

// Layer is `corobus service cfg`.
func Layer() layer.Layer {
	return layer.Layer{Name: ComponentName, Subsys: "CFG", Summary: "the cfg service: shutdown negotiation, kill, reload, node addresses and link status", Run: Run,
		Procs: 1, // an administrator's request now and then
		// A reload rewrites configuration keys, read-only ones included:
		// the internal write path.
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName(ComponentName)), a.Component(ComponentName, loader.LocalNamespace(a.Node)), a.TotemClient(TotemService),
				a.ObjdbClient(true), a.NodeControl(), a.CfgPeer())
		}}
}

// Subject is the component subject of node's cfg instances.
func Subject(s bus.Subjects, node uint32) string {
	return s.Component(loader.LocalNamespace(node), ComponentName, ComponentVersion)
}

// NodesOf lists the nodelist's ids and ringN_addr addresses.
func NodesOf(c *config.Config) ([]NodeAddrs, error) {
	nodes, err := c.Nodes()
	if err != nil {
		return nil, err
	}
	out := make([]NodeAddrs, 0, len(nodes))
	for _, n := range nodes {
		na := NodeAddrs{ID: n.ID}
		for link := 0; link < MaxLinks; link++ {
			if a := c.String(fmt.Sprintf("nodelist.node.%d.ring%d_addr", n.Index, link)); a != "" {
				na.Addrs = append(na.Addrs, a)
			}
		}
		out = append(out, na)
	}
	return out, nil
}

// StopRequest is the payload of Subjects.NodeShutdown.
type StopRequest struct {
	Reason string `json:"reason"`
	// Exit is the status `corobus up` exits with once the node stopped:
	// 0 for a shutdown (corosync-cfgtool -H), KilledExitStatus for a kill
	// from another node (corosync-cfgtool -k), as corosync exits.
	Exit int `json:"exit,omitempty"`
}

// KilledExitStatus is how a node killed by another node's
// corosync-cfgtool -k exits: corosync logs "exiting with status -1"
// (cfg.c) and exits 255, so that systemd marks corosync.service failed,
// not merely stopped.
const KilledExitStatus = 255

// StopReply answers it.
type StopReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Run serves cfg for env's node until ctx ends.
func Run(ctx context.Context, env layer.Env) error {
	nodes, err := NodesOf(env.Config)
	if err != nil {
		return err
	}
	// Announced first, as every layer process is ($SRV discovery,
	// `corobus status`).
	discovery, err := layer.NewService(env, ComponentName, Layer().Summary, time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the %s service: %w", ComponentName, err)
	}
	defer func() { _ = discovery.Stop() }()
	db := objdbclient.New(env.Conn, env.Subjects, env.Node.ID)
	db.Internal = true
	rl := &Reloader{DB: db, Log: env.Log, Load: func() (*config.Config, error) {
		return config.Load(config.Options{File: env.Config.File(), Environ: os.Environ(), Overrides: env.Config.Overrides(),
			UserStateDir: userStateDir(env.Config)})
	}, Applied: func(ctx context.Context) error {
		m, err := env.Conn.RequestWithContext(ctx, env.Subjects.QuorumRefresh(env.Node.ID), nil)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil // no votequorum on this node
		}
		if err != nil {
			return err
		}
		var rep struct{ Error string }
		if json.Unmarshal(m.Data, &rep) == nil && rep.Error != "" {
			return errors.New(rep.Error)
		}
		return nil
	}, Logging: func(ctx context.Context, section map[string]string) error {
		data, err := json.Marshal(section)
		if err != nil {
			return err
		}
		answered, failed, err := askLayers(env.Conn, env.Subjects.LogReconfigure(env.Node.ID), data)
		switch {
		case err != nil:
			return err
		case len(failed) > 0:
			return errors.New(strings.Join(failed, "; "))
		}
		env.Log.Info("logging section applied by the node's processes", "processes", answered)
		return nil
	}}
	instance := nuid.Next()
	svc := NewService(Config{
		Instance: instance,
		Conn:     env.Conn, Subjects: env.Subjects, Node: env.Node.ID, Log: env.Log, Nodes: nodes,
		Reload: rl.Reload,
		ShutdownTimeout: func(ctx context.Context) (time.Duration, error) {
			v, err := db.Get(ctx, "cfg.shutdown_timeout")
			if err != nil {
				return 0, err
			}
			n, _ := v.Int()
			return time.Duration(n) * time.Millisecond, nil
		},
		StopNode: func(ctx context.Context, req StopRequest) error { return StopNode(ctx, env, req) },
	})
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return svc.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			select {
			case <-svc.Ready():
			case <-ctx.Done():
				return nil
			}
			return session.ServeComponent(ctx, env.Conn, env.Subjects, env.Node.ID, loader.Component{
				Name: ComponentName, Version: ComponentVersion, Subject: Subject(env.Subjects, env.Node.ID),
				Counters: svc.Counters, CountersMoved: svc.CountersMoved(), Instance: instance,
				// A reload's keys (config.reload_status, the changed
				// configuration) are in the gateway's copy before the
				// client has the answer.
			}, session.Settling(svc, db.Settle), env.Log)
		}, func(error) { cancel() })
	}
	return g.Run()
}

// userStateDir keeps the embedded default's state directory on a reload.
func userStateDir(c *config.Config) string {
	if c.Embedded() {
		return c.StateDir()
	}
	return ""
}

// StopNode asks node's supervisor (`corobus up`) to stop the node.
func StopNode(ctx context.Context, env layer.Env, req StopRequest) error {
	b, _ := json.Marshal(req)
	m, err := env.Conn.RequestWithContext(ctx, env.Subjects.NodeShutdown(env.Node.ID), b)
	if err != nil {
		return fmt.Errorf("asking node %d's supervisor to stop: %w", env.Node.ID, err)
	}
	var rep StopReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return fmt.Errorf("the supervisor answered %q: %w", strings.TrimSpace(string(m.Data)), err)
	}
	if !rep.OK {
		return fmt.Errorf("the supervisor refused: %s", rep.Error)
	}
	return nil
}
