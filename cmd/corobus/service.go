package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/quorum"
	"github.com/corobus/corobus/services/votequorum"
)

// builtinServices are the corosync services built into this binary. The
// service manager starts each as `corobus service <name>`, a component
// process the loader resolves like any other.
func (a *app) builtinServices() []layer.Layer {
	return []layer.Layer{cmap.Layer(), cpg.Layer(), cfg.Layer(), quorum.Layer(), votequorum.Layer()}
}

// builtinNames lists the built-in services for the help: "cmap, cpg, …".
func (a *app) builtinNames() string {
	var names []string
	for _, l := range a.builtinServices() {
		names = append(names, l.Name)
	}
	return strings.Join(names, ", ")
}

// builtinLaunch is the service manager's map from service name to the
// arguments that run it.
func (a *app) builtinLaunch() map[string][]string {
	m := map[string][]string{}
	for _, l := range a.builtinServices() {
		m[l.Name] = []string{"service", l.Name}
	}
	return m
}

func runService(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		w := a.stdout
		fmt.Fprintln(w, "usage: corobus service <name> [-c FILE] [-o key=value] [--bus URL]")
		fmt.Fprintln(w, "\nRun a built-in service component. The service manager (`corobus svcmgr`) starts")
		fmt.Fprintln(w, "them; the IPC gateway reaches them through the loader. Built-in services:")
		for _, l := range a.builtinServices() {
			fmt.Fprintf(w, "  %-12s %s\n", l.Name, l.Summary)
		}
		if len(args) == 0 {
			return usagef("name a service")
		}
		return nil
	}
	for _, l := range a.builtinServices() {
		if l.Name == args[0] {
			return layerCommand(l, "service "+l.Name, "the service manager (`corobus svcmgr`)")(ctx, a, args[1:])
		}
	}
	return usagef("no built-in service %q (corobus service --help lists them)", args[0])
}
