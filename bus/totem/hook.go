package totem

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
)

// Hook is the bus-process hook (node.BusHooks) that runs the node's totem
// next to the server. cb's Member, when set, receives every membership
// event (the objdb wiring of runtime.members.<id>.*), its OlderConfig the
// node's out-of-date configuration version; they run under the node's
// lock and must hand work off rather than block. cb's Deliver and ConfChg
// are not used.
func Hook(cb Callbacks) func(ctx context.Context, srv *bus.Server, env layer.Env) error {
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
		n, err := New(nc, cfg, Callbacks{Member: cb.Member, OlderConfig: cb.OlderConfig})
		if err != nil {
			return err
		}
		return n.Run(ctx)
	}
}
