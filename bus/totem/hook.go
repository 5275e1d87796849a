package totem

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
)

// Hook is the bus-process hook (node.BusHooks) that runs the node's totem
// next to the server. onMember, when set, receives every membership event
// (the objdb wiring of runtime.members.<id>.*); it runs under the node's
// lock and must hand work off rather than block.
func Hook(onMember func(MemberEvent)) func(ctx context.Context, srv *bus.Server, env layer.Env) error {
	return func(ctx context.Context, srv *bus.Server, env layer.Env) error {
		cfg, err := FromConfig(env.Config, env.Subjects)
		if err != nil {
			return fmt.Errorf("totem configuration: %w", err)
		}
		cfg.Logger = env.Log.With("subsys", "TOTEM")
		// Its own connection, without echo: the node takes its own
		// frames in directly.
		nc, err := srv.Connect("corobus-totem", nats.NoEcho())
		if err != nil {
			return err
		}
		defer nc.Close()
		n, err := New(nc, cfg, Callbacks{Member: onMember})
		if err != nil {
			return err
		}
		return n.Run(ctx)
	}
}
