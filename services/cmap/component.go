package cmap

import (
	"context"
	"fmt"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/ipc/session"
)

// Component names the cmap service to the loader: corosync's service
// engine "corosync_cmap", version 0.
const (
	ComponentName    = "cmap"
	ComponentVersion = 0
)

// Layer is `corobus service cmap`: the cmap service as a component of its
// own, started by the service manager and resolved through the loader by
// the IPC gateway, which carries each libcmap connection to it as a
// session.
func Layer() layer.Layer {
	return layer.Layer{Name: "cmap", Subsys: "CMAP", Summary: "the cmap service: libcmap's API over objdb", Run: Run,
		// Discovery as the process corobus-cmap: a colocated instance
		// (Grant alone, in the gateway) is the gateway's process.
		Grant: func(a bus.Access) bus.Grant { return bus.Merge(Grant(a), a.Process(layer.ServiceName(ComponentName))) }}
}

// Grant is the cmap component's bus grant: serving its sessions, the
// node's objdb view (written directly, read-only keys denied), and asking
// the node's IPC gateway and totem for their stats (and to reset them).
func Grant(a bus.Access) bus.Grant {
	return bus.Merge(a.Process(), a.Component(ComponentName, loader.LocalNamespace(a.Node)), a.ObjdbStore(false),
		bus.Grant{Pub: []string{a.Subjects.IPCStats(a.Node), a.Subjects.TotemStatus(a.Node),
			a.Subjects.IPCStatsClear(a.Node), a.Subjects.TotemStatsClear(a.Node)}})
}

// Run serves cmap sessions over this node's objdb view (a watched local
// copy: gets cost no objdb round trip) until ctx ends or a newer version
// retires this one.
func Run(ctx context.Context, env layer.Env) error {
	// Announced first, as every layer process is ($SRV discovery,
	// `corobus status`): the process is there while it waits for objdb.
	discovery, err := layer.NewService(env, ComponentName, Layer().Summary, time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the %s service: %w", ComponentName, err)
	}
	defer func() { _ = discovery.Stop() }()
	st, err := objdb.OpenFor(ctx, env)
	if err != nil {
		return err
	}
	defer st.Close()
	svc := NewService(NewObjdbStore(st), env.Log)
	svc.SetStats(MergeStats(BusStats(env.Conn, env.Subjects, env.Node.ID), TotemStats(env.Conn, env.Subjects, env.Node.ID)))
	svc.SetStatsClear(BusStatsClear(env.Conn, env.Subjects, env.Node.ID))
	return Serve(ctx, env, svc)
}

// Subject is the component subject of node's cmap instances.
func Subject(s bus.Subjects, node uint32) string {
	return s.Component(loader.LocalNamespace(node), ComponentName, ComponentVersion)
}

// Serve announces svc as the cmap component of env's node and serves its
// sessions.
func Serve(ctx context.Context, env layer.Env, svc *Service) error {
	return session.ServeComponent(ctx, env.Conn, env.Subjects, env.Node.ID,
		loader.Component{Name: ComponentName, Version: ComponentVersion, Subject: Subject(env.Subjects, env.Node.ID)}, svc, env.Log)
}
