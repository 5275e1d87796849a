package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/services/svcmgr"
)

func runSvc(ctx context.Context, a *app, args []string) error {
	var q queryFlags
	fs := newFlagSet(a, "svc", "[-c FILE | --bus URL] [--node ID] load NAME VER | unload NAME | list [--json]",
		"Ask a node's service manager to load a service (start its component and reference it\n"+
			"through the loader), to unload one (ask it to exit, stop it, release it), or to list\n"+
			"the loaded services.")
	q.register(fs, "print JSON (list)", "ask this node's service manager instead of the local node's")
	// Flags may come before, between or after the verb's words
	// (`corobus svc list -c node.conf`).
	var rest []string
	for {
		if err := parseFlags(a, fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) == 0 {
		return usagef("expected load, unload or list")
	}
	var op string
	var payload any
	switch rest[0] {
	case "load":
		if len(rest) != 3 {
			return usagef("usage: svc load NAME VER")
		}
		ver, err := strconv.ParseUint(rest[2], 10, 32)
		if err != nil {
			return usagef("VER %q: expected an unsigned integer", rest[2])
		}
		op, payload = "load", svcmgr.LoadRequest{Name: rest[1], Version: uint32(ver)}
	case "unload":
		if len(rest) != 2 {
			return usagef("usage: svc unload NAME")
		}
		op, payload = "unload", svcmgr.UnloadRequest{Name: rest[1]}
	case "list":
		if len(rest) != 1 {
			return usagef("usage: svc list")
		}
		op = "list"
	default:
		return usagef("unknown svc verb %q (load, unload, list)", rest[0])
	}
	c, err := a.connect(q.nodeFlags, "corobus-svc", q.node)
	if err != nil {
		return err
	}
	defer c.Close()
	nc, subjects, id := c.nc, c.subjects, c.node
	if op == "list" {
		list, err := fetchServices(ctx, nc, subjects, id)
		if err != nil {
			return err
		}
		if q.json {
			return printJSON(a.stdout, list)
		}
		printServices(a.stdout, list)
		return nil
	}
	data, _ := json.Marshal(payload)
	// A load waits for the component's first announcement: allow for it.
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	r, err := nc.RequestWithContext(rctx, subjects.SvcmgrAPI(id, op), data)
	if err != nil {
		return fmt.Errorf("asking node %d's service manager: %w (is `corobus svcmgr` running?)", id, err)
	}
	if e := r.Header.Get(micro.ErrorHeader); e != "" {
		return fmt.Errorf("%s %s: %s", op, rest[1], e)
	}
	switch op {
	case "load":
		var si svcmgr.ServiceInfo
		_ = json.Unmarshal(r.Data, &si)
		fmt.Fprintf(a.stdout, "loaded %s version %d as service %d (serving version %d, pids %v)\n", si.Name, si.Version, si.Index, si.Serving, si.PIDs)
	case "unload":
		var ev svcmgr.Event
		_ = json.Unmarshal(r.Data, &ev)
		fmt.Fprintf(a.stdout, "unloaded %s version %d (asked to exit %d time(s))\n", ev.Name, ev.Version, ev.ExitAsks)
	}
	return nil
}

// fetchServices asks node's service manager what it loaded.
func fetchServices(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32) ([]svcmgr.ServiceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := nc.RequestWithContext(ctx, subjects.SvcmgrAPI(node, "list"), nil)
	if err != nil {
		return nil, fmt.Errorf("asking node %d's service manager: %w", node, err)
	}
	if e := r.Header.Get(micro.ErrorHeader); e != "" {
		return nil, fmt.Errorf("node %d's service manager: %s", node, e)
	}
	var list []svcmgr.ServiceInfo
	if err := json.Unmarshal(r.Data, &list); err != nil {
		return nil, fmt.Errorf("decoding the service list: %w", err)
	}
	return list, nil
}
