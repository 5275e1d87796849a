package cmap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/services/cfg"
)

// VersionGuard stops the node when its totem finds the node's
// totem.config_version older than a member's (totem.Callbacks.OlderConfig):
// corosync's cmap service logs both versions and shuts corosync down the
// way corosync-cfgtool -H does, exit status 0. It runs in the bus process,
// where totem decides, rather than in `corobus service cmap`: the first
// view with the other nodes may be installed before the node's services
// have started.
type VersionGuard struct {
	older chan totem.OlderConfig
}

// NewVersionGuard makes a guard; wire OnOlder into the totem hook and Hook
// into the bus hooks.
func NewVersionGuard() *VersionGuard {
	return &VersionGuard{older: make(chan totem.OlderConfig, 1)}
}

// OnOlder is the totem callback: it never blocks (totem calls it under its
// lock, and at most once).
func (g *VersionGuard) OnOlder(o totem.OlderConfig) {
	select {
	case g.older <- o:
	default:
	}
}

// stopRetry bounds how long the guard asks for the stop while nothing
// answers: `corobus up` serves the request once the bus is up, and the
// first view may come before.
const stopRetry = 30 * time.Second

// Hook waits for the report, logs corosync's line and asks the node's
// supervisor to stop the node; then it waits for ctx like any bus hook
// (its return would stop the bus).
func (g *VersionGuard) Hook(ctx context.Context, srv *bus.Server, env layer.Env) error {
	var o totem.OlderConfig
	select {
	case <-ctx.Done():
		return nil
	case o = <-g.older:
	}
	log := env.Log.With("subsys", "CMAP")
	// corosync's words (cmap.c), which operators search their logs for.
	log.Error(fmt.Sprintf("Received config version (%d) is different than my config version (%d)! Exiting", o.Highest, o.Mine),
		"node", o.From, "ring", o.Ring)
	nc, err := srv.Connect("corobus-cfgversion")
	if err != nil {
		return err
	}
	defer nc.Close()
	env.Conn = nc
	req := cfg.StopRequest{Reason: fmt.Sprintf("totem.config_version %d is older than node %d's %d", o.Mine, o.From, o.Highest)}
	deadline := time.Now().Add(stopRetry)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cfg.StopNode(rctx, env, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			log.Error("nothing stops this node: it keeps running with an out-of-date configuration", "err", err)
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	<-ctx.Done()
	return nil
}
