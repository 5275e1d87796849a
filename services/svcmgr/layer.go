package svcmgr

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/node"
	objdbclient "github.com/corobus/corobus/objdb/client"
)

// Layer is `corobus svcmgr`. builtin maps service names to the corobus
// subcommands that run them (a service implemented inside the corobus
// binary); other services are executables in loader.component_dir.
func Layer(builtin map[string][]string) layer.Layer {
	return layer.Layer{Name: "svcmgr", Subsys: "SERV", Summary: "the service manager: loads, supervises and unloads services",
		Run:   func(ctx context.Context, env layer.Env) error { return Run(ctx, env, builtin) },
		Procs: 1, // announcements and a few loads: a trickle
		// It records internal_configuration.service.* and
		// runtime.services.*, read-only keys: the internal write path.
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName("svcmgr")), a.SvcmgrServer(), a.LoaderClient(), a.ObjdbClient(true))
		}}
}

// ConfiguredServices reads the service.N.{name,ver} keys (corosync 1.x
// service blocks) in N order. A block without a name is an error, as it
// was for corosync; a missing ver is 0.
func ConfiguredServices(cfg *config.Config) ([]Service, error) {
	idx := map[int]bool{}
	for key := range cfg.Flat() {
		rest, ok := strings.CutPrefix(key, "service.")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		i, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("service.%s: expected a numeric index", n)
		}
		idx[i] = true
	}
	var out []Service
	for _, i := range slices.Sorted(maps.Keys(idx)) {
		p := fmt.Sprintf("service.%d.", i)
		name := cfg.String(p + "name")
		if name == "" {
			return nil, fmt.Errorf("%sname: service section without a name", p)
		}
		ver, err := cfg.Uint(p+"ver", 0)
		if err != nil {
			return nil, err
		}
		if ver > 0xffffffff {
			return nil, fmt.Errorf("%sver: %d is out of range", p, ver)
		}
		out = append(out, Service{Name: name, Version: uint32(ver)})
	}
	return out, nil
}

// Run is the svcmgr layer: a Manager configured from the node's
// configuration, its endpoints, objdb as its recorder.
func Run(ctx context.Context, env layer.Env, builtin map[string][]string) error {
	services, err := ConfiguredServices(env.Config)
	if err != nil {
		return err
	}
	var defaults []Service
	if env.Config.Bool("loader.default_services", true) {
		defaults = DefaultServices()
		// A service the IPC gateway runs in its own process
		// (ipc.colocate) is not started here too; the manager lists and
		// records it as hosted. A node runs one cpg instance (its
		// joinlist speaks for the node); a second cmap instance would
		// serve nobody — the gateway opens its connections on its own
		// instance, which serves the bus as well — and cost a whole
		// process at rest: its objdb copy's two feeds and JetStream
		// consumer, its announcements, its runtime.
		colocated := strings.Fields(env.Config.String("ipc.colocate"))
		defaults = slices.DeleteFunc(defaults, func(s Service) bool {
			return (s.Name == "cpg" || s.Name == "cmap") && slices.Contains(colocated, s.Name)
		})
	}
	url, err := bus.ClientURL(env.Config)
	if err != nil {
		return err
	}
	exe, err := node.Executable()
	if err != nil {
		return err
	}
	// Built-in services load the node's configuration as svcmgr did: the
	// same file and the same command-line overrides.
	var common []string
	if env.Config.File() != "" {
		common = append(common, "-c", env.Config.File())
	}
	for _, o := range env.Config.Overrides() {
		common = append(common, "-o", o)
	}
	withConfig := map[string][]string{}
	for name, args := range builtin {
		withConfig[name] = append(append([]string{}, args...), common...)
	}
	builtin = withConfig
	rec := objdbclient.New(env.Conn, env.Subjects, env.Node.ID)
	rec.Internal = true
	// A component executable connects as its own bus user
	// (component.<name>), never with the token.
	busURLFor := func(service string) string {
		u, err := bus.AsUser(url, bus.ComponentUser(service))
		if err != nil {
			return "" // no credentials rather than the token's
		}
		return u
	}
	m, err := New(Config{
		Conn: env.Conn, Subjects: env.Subjects, Node: env.Node.ID, BusURLFor: busURLFor, Log: env.Log, Out: os.Stderr,
		Services: services, Defaults: defaults, ComponentDir: env.Config.String("loader.component_dir"),
		Builtin: builtin, Executable: exe, Recorder: rec,
	})
	if err != nil {
		return err
	}
	svc, err := layer.NewService(env, "svcmgr", "corobus service manager", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the svcmgr service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := m.AddEndpoints(svc); err != nil {
		return err
	}
	env.Log.Info("service manager starting", "services", len(services), "defaults", len(defaults), "component_dir", env.Config.String("loader.component_dir"))
	return m.Run(ctx)
}
