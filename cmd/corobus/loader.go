package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
)

func runLcr(ctx context.Context, a *app, args []string) error {
	var q queryFlags
	fs := newFlagSet(a, "lcr", "[-c FILE | --bus URL] [--json] [--node ID]",
		"List the components the loader knows (corosync's LCR), those of the namespaces on\n"+
			"the node's search path: name, version, namespace,\n"+
			"subject, priority, the versions each replaces, its instances (node, pid, state) and\n"+
			"how many references resolve to it along the node's search path.")
	q.register(fs, "print JSON", "ask this node's loader instead of the configured local node's")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	c, err := a.connect(q.nodeFlags, "corobus-lcr", q.node)
	if err != nil {
		return err
	}
	defer c.Close()
	nc, subjects, id := c.nc, c.subjects, c.node
	l, err := fetchListing(ctx, nc, subjects, id)
	if err != nil {
		return err
	}
	if q.json {
		return printJSON(a.stdout, l)
	}
	fmt.Fprintf(a.stdout, "Search path of node %d: %s\n", l.Node, strings.Join(l.SearchPath, " "))
	tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tVER\tNAMESPACE\tREPLACES\tPRIO\tREFS\tINSTANCES\tSUBJECT")
	for _, c := range l.Components {
		var inst []string
		for _, in := range c.Instances {
			inst = append(inst, fmt.Sprintf("n%d/pid %d/%s", in.Node, in.PID, in.State))
		}
		var reps []string
		for _, v := range c.Replaces {
			reps = append(reps, strconv.FormatUint(uint64(v), 10))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\n", c.Name, c.Version, c.Namespace, orDash(strings.Join(reps, ",")),
			c.Priority, c.Refs, strings.Join(inst, " "), c.Subject)
	}
	return tw.Flush()
}

// fetchListing asks node's loader for everything it knows.
func fetchListing(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32) (loader.Listing, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := nc.RequestWithContext(ctx, subjects.LcrAPI(node, loader.APIList), nil)
	if err != nil {
		return loader.Listing{}, fmt.Errorf("asking node %d's loader: %w (is `corobus loader` running?)", node, err)
	}
	if e := r.Header.Get(micro.ErrorHeader); e != "" {
		return loader.Listing{}, fmt.Errorf("node %d's loader: %s", node, e)
	}
	var l loader.Listing
	if err := json.Unmarshal(r.Data, &l); err != nil {
		return loader.Listing{}, fmt.Errorf("decoding the loader's listing: %w", err)
	}
	slices.SortFunc(l.Components, func(x, y loader.ComponentInfo) int {
		return strings.Compare(x.Name+"\x00"+x.Namespace, y.Name+"\x00"+y.Namespace)
	})
	return l, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
