// Command corobus is the corosync cluster engine rebuilt as small processes
// over an embedded NATS bus. One binary: a subcommand per layer process
// (bus, objdb, loader, …), `up` to run a whole node, and the client verbs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/corobus/corobus/bus"
)

// app is what every subcommand is handed: its output streams and the
// environment, passed explicitly so that tests run commands in-process.
type app struct {
	stdout, stderr io.Writer
	environ        []string
	version        string
}

type command struct {
	name    string
	summary string
	// layer marks the subcommands that are layer processes, listed apart
	// in the help.
	layer bool
	// tool marks the verbs that are a corosync tool over the bus
	// (corosync-cmapctl, -cfgtool, -cpgtool, -quorumtool, -objctl): a
	// command-line mistake exits 1, as the tool's does, not 2 (which
	// corosync-quorumtool uses for "not quorate"), so that scripts written
	// for the tool read corobus's status the same way.
	tool bool
	run  func(ctx context.Context, a *app, args []string) error
}

func main() {
	// Before anything runs: both are process-wide settings of the
	// nats-server package, which every process links (one binary).
	bus.StopProcSampler()
	bus.SlowUsageResend()
	a := &app{stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ(), version: buildVersion()}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := a.main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func (a *app) commands() []command {
	cmds := []command{
		{name: "up", summary: "start a whole node: the bus and every layer, supervised", run: runUp},
		{name: "status", summary: "show this node's bus, members and layer processes", run: runStatus},
		{name: "blackbox", summary: "dump the flight recorders of a node's layer processes", run: runBlackbox},
		{name: "config", summary: "check a configuration and print its keys, or list known keys", run: runConfig},
		{name: "keygen", summary: "write a cluster key for totem crypto, as corosync-keygen does", run: runKeygen},
		{name: "version", summary: "print the version", run: runVersion},
		{name: "bus", summary: "the embedded nats-server of a node (layer process)", layer: true, run: runBus},
		{name: "service", summary: "a built-in service component, started by svcmgr: " + a.builtinNames() + " (layer process)", layer: true, run: runService},
	}
	for _, l := range a.layers() {
		cmds = append(cmds, command{name: l.Name, summary: l.Summary + " (layer process)", layer: true, run: layerCommand(l, l.Name, "`corobus up`")})
	}
	cmds = append(cmds, a.clientCommands()...)
	return cmds
}

func (a *app) main(ctx context.Context, args []string) int {
	if len(args) > 1 && args[0] == "help" {
		// corobus help cmap is corobus cmap --help (corobus help bench
		// totem, bench totem's), as go help and git help answer.
		return a.main(ctx, append(append([]string(nil), args[1:]...), "--help"))
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		a.usage(a.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range a.commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, a, args[1:])
		if err == nil {
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var st exitStatus
		if errors.As(err, &st) {
			return int(st) // the verb printed what it had to say
		}
		var ue usageError
		if errors.As(err, &ue) && !c.tool {
			fmt.Fprintf(a.stderr, "corobus %s: %v\n", c.name, err)
			return 2
		}
		fmt.Fprintf(a.stderr, "corobus %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(a.stderr, "corobus: unknown command %q (corobus --help lists them)\n", args[0])
	return 2
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintf(w, "corobus %s — the corosync cluster engine over an embedded NATS bus\n\n", a.version)
	fmt.Fprintln(w, "usage: corobus <command> [flags]   (corobus <command> --help, or corobus help <command>, for its flags)")
	cmds := a.commands()
	sort.SliceStable(cmds, func(i, j int) bool { return !cmds[i].layer && cmds[j].layer })
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range cmds {
		if !c.layer {
			fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nlayer processes (started by `corobus up`; run alone to scale a layer):")
	for _, c := range cmds {
		if c.layer {
			fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
		}
	}
}

// exitStatus ends a verb with a status of its own and nothing more to
// print (corosync-quorumtool's 2 for "not quorate").
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a mistake on the command line: exit status 2 (1 for the
// verbs that are a corosync tool, as the tool exits).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "0.1.0-dev"
}

func runVersion(_ context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "version", "", "Print the version of this corobus binary.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(a.stdout, a.version)
	return nil
}
