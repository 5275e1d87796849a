package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
)

// clientCommands are the verbs that talk to a running node.
func (a *app) clientCommands() []command {
	return []command{
		{name: "bench", summary: "measure a running node: bench cmap, bench totem", run: runBench},
		{name: "cmap", summary: "read, change and track the object database (corosync-cmapctl)", tool: true, run: runCmap},
		{name: "cpg", summary: "list the closed process groups and their members (corosync-cpgtool)", tool: true, run: runCpg},
		{name: "objctl", summary: "the object database as corosync 1.x's object tree (corosync-objctl)", tool: true, run: runObjctl},
		{name: "lcr", summary: "list components: versions, instances, reference counts (alias: components)", run: runLcr},
		{name: "components", summary: "same as lcr", run: runLcr},
		{name: "quorum", summary: "show and change quorum, votes, expected votes (corosync-quorumtool)", tool: true, run: runQuorum},
		{name: "cfg", summary: "links, nodes, reload, kill, shutdown (corosync-cfgtool)", tool: true, run: runCfg},
		{name: "sub", summary: "print the messages on the cluster's subjects, as the read-only subscriber user", run: runSub},
		{name: "svc", summary: "load, unload and list services: svc load NAME VER, svc unload NAME, svc list", run: runSvc},
	}
}

// nodeClient is a client verb's connection to one node: the bus
// connection, the node's configuration, its subjects and its id.
type nodeClient struct {
	nc       *nats.Conn
	cfg      *config.Config
	subjects bus.Subjects
	node     uint32
}

// connect connects a client verb to the node its flags name. node, when
// not zero, picks another node of the cluster than the configured local
// one (the bus is shared, so any node can be asked through any other).
func (a *app) connect(nf nodeFlags, name string, node uint) (*nodeClient, error) {
	cfg, err := nf.loadRunning(a)
	if err != nil {
		return nil, err
	}
	subjects, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		return nil, err
	}
	id := uint32(node)
	if id == 0 {
		local, err := cfg.LocalNode()
		if err != nil {
			return nil, err
		}
		id = local.ID
	}
	url := nf.busURL
	if url == "" {
		if url, err = bus.ClientURL(cfg); err != nil {
			return nil, err
		}
	}
	nc, err := bus.Dial(url, name, 0)
	if err != nil {
		return nil, dialHint(err, nf, cfg)
	}
	return &nodeClient{nc: nc, cfg: cfg, subjects: subjects, node: id}, nil
}

// dialHint says what to do about a failed connection: credentials the bus
// refused are not a node that is down.
func dialHint(err error, nf nodeFlags, cfg *config.Config) error {
	if !errors.Is(err, bus.ErrCredentials) {
		return fmt.Errorf("%w (is the node up? `corobus up` starts one)", err)
	}
	if nf.busURL != "" {
		return fmt.Errorf("%w: a node answers there, but --bus must carry its token, nats://TOKEN@host:port "+
			"(the node's <state_dir>/bus.token, or bus.token of its configuration), or a bus user and password", err)
	}
	return fmt.Errorf("%w: a node answers there, but not to the token in %s (bus.token_file; bus.token of the "+
		"configuration overrides it): give the -c FILE of that node, or --bus nats://TOKEN@host:port", err, bus.TokenFile(cfg))
}

// Close closes the bus connection.
func (c *nodeClient) Close() { c.nc.Close() }

// LayerStatus is one layer process as discovery reports it.
type LayerStatus struct {
	Layer    string    `json:"layer"`
	Node     uint32    `json:"node"`
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
	Uptime   string    `json:"uptime"`
	Restarts int       `json:"restarts"`
	ID       string    `json:"id"`
}

// NodeStatus is what `corobus status --json` prints.
type NodeStatus struct {
	Node uint32 `json:"node"`
	// Name is the node's name in the nodelist (config.Node.Name).
	Name    string        `json:"name,omitempty"`
	Cluster string        `json:"cluster"`
	Bus     bus.Status    `json:"bus"`
	Totem   *totem.Status `json:"totem,omitempty"`
	Layers  []LayerStatus `json:"layers"`
	// Services are what the node's service manager loaded.
	Services []ServiceStatus `json:"services,omitempty"`
	// Copies are the node's watched objdb copies and how fresh each is.
	Copies []objdb.CopyStatus `json:"objdb_copies,omitempty"`
	// Serving says whether the node serves corosync's clients yet, as
	// `corobus up` judges it before it tells systemd READY=1; absent when
	// the status is not about the node of this network namespace (--bus,
	// or --node another node), whose IPC gateway cannot be reached.
	Serving *ServingStatus `json:"serving,omitempty"`
}

// ServingStatus is NodeStatus.Serving: ready, or what the node still
// waits for (a service loading, the first synchronization, the gateway).
type ServingStatus struct {
	Ready      bool   `json:"ready"`
	WaitingFor string `json:"waiting_for,omitempty"`
}

func runStatus(ctx context.Context, a *app, args []string) error {
	var q queryFlags
	fs := newFlagSet(a, "status", "[-c FILE | --bus URL] [--json] [--node ID]",
		"Show a node: id, cluster name, bus state (JetStream, routes, meta peers), totem's ring\n"+
			"and members, every layer process found through micro discovery (pid, version, uptime,\n"+
			"restarts), the services its service manager runs (SERVING: the version serving),\n"+
			"every copy of its objdb view (current or behind, and why), and, for the node of this\n"+
			"network namespace, whether it serves corosync's clients yet (Serving; \"serving\" in JSON).")
	q.register(fs, "print JSON", "show this node id instead of the configured local node")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	c, err := a.connect(q.nodeFlags, "corobus-status", q.node)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := nodeStatus(c.nc, c.subjects, c.cfg.ClusterName(), c.node)
	if err != nil {
		return notAnswering(err, c.cfg, c.node)
	}
	names := nodeNames(c.cfg)
	st.Name = names[bus.ServerName(c.node)]
	if local, err := c.cfg.LocalNode(); err == nil && q.busURL == "" && c.node == local.ID {
		// A node whose members agree may not serve its clients yet (its
		// services load, its first synchronization runs): the readiness
		// a script waits for before it runs a corosync client.
		st.Serving = &ServingStatus{Ready: true}
		if err := servingOn(ctx, c.nc, c.subjects, c.node); err != nil {
			st.Serving = &ServingStatus{WaitingFor: err.Error()}
		}
	}
	if q.json {
		return printJSON(a.stdout, st)
	}
	printStatus(a, st, names)
	return nil
}

// notAnswering says what to check when node's bus did not answer its
// status request (the bus itself answered the connection): a node the
// configuration does not know, or one whose bus is down or not routed to
// the one reached. nats' "no responders" alone names neither.
func notAnswering(err error, cfg *config.Config, node uint32) error {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	source := "the embedded default configuration"
	if f := cfg.File(); f != "" {
		source = f
	}
	nodes, nerr := cfg.Nodes()
	if nerr != nil {
		return fmt.Errorf("node %d is not answering (%w); and the nodelist of %s: %w", node, err, source, nerr)
	}
	var ids []string
	for _, n := range nodes {
		if n.ID == node {
			return fmt.Errorf("node %d is not answering: its bus is not running (is `corobus up` running on node %d?) "+
				"or has no route to the bus this command reached (`corobus status` without --node lists that bus's "+
				"routes) (%w)", node, node, err)
		}
		ids = append(ids, strconv.FormatUint(uint64(n.ID), 10))
	}
	return fmt.Errorf("node %d is not answering: it is not in the nodelist of %s (nodes %s); give --node one of them, "+
		"or -c the configuration of node %d's cluster (%w)", node, source, strings.Join(ids, ", "), node, err)
}

// nodeNames maps the bus's server names (bus.ServerName: "node2") to the
// nodelist's names of the nodes, where the two differ: the status names
// nodes as the configuration does, not as the bus does.
func nodeNames(cfg *config.Config) map[string]string {
	out := map[string]string{}
	nodes, err := cfg.Nodes()
	if err != nil {
		return out
	}
	for _, n := range nodes {
		out[bus.ServerName(n.ID)] = n.Name
	}
	return out
}

// named is server as the nodelist names it.
func named(names map[string]string, server string) string {
	if n, ok := names[server]; ok && n != "" {
		return n
	}
	return server
}

func nodeStatus(nc *nats.Conn, subjects bus.Subjects, cluster string, id uint32) (NodeStatus, error) {
	bst, err := bus.FetchStatus(nc, subjects, id, 2*time.Second)
	if err != nil {
		return NodeStatus{}, err
	}
	services := servicesStatus(nc, subjects, id)
	ours := func(in micro.Info) bool {
		return in.Metadata[layer.MetaCluster] == cluster && in.Metadata[layer.MetaNode] == strconv.FormatUint(uint64(id), 10)
	}
	// 300 ms is enough for every layer at rest; on a loaded machine a
	// process answers later, and the list lacked layers that run (the
	// bus that had just answered the status, the service processes the
	// service manager lists): those are waited for, up to 3 s.
	infos, err := layer.DiscoverUntil(nc, 300*time.Millisecond, 3*time.Second, func(infos []micro.Info) bool {
		seen := map[string]bool{}
		for _, in := range infos {
			if ours(in) {
				seen[in.Metadata[layer.MetaLayer]] = true
				seen["pid "+in.Metadata[layer.MetaPID]] = true
			}
		}
		if !seen["bus"] {
			return false
		}
		for _, s := range services {
			for _, pid := range s.PIDs {
				if !seen["pid "+strconv.Itoa(pid)] {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return NodeStatus{}, err
	}
	bst.Peers, bst.PeersFrom = bus.LeaderPeers(nc, subjects, bst, time.Second)
	var objdbPIDs []int
	for _, in := range infos {
		if ours(in) && in.Metadata[layer.MetaLayer] == "objdb" {
			if pid, err := strconv.Atoi(in.Metadata[layer.MetaPID]); err == nil {
				objdbPIDs = append(objdbPIDs, pid)
			}
		}
	}
	st := NodeStatus{Node: id, Cluster: cluster, Bus: bst, Totem: totemStatus(nc, subjects, id),
		Services: services, Copies: copiesStatus(nc, subjects, id, objdbPIDs)}
	for _, in := range infos {
		md := in.Metadata
		if !ours(in) {
			continue
		}
		ls := LayerStatus{Layer: md[layer.MetaLayer], Node: id, Version: in.Version, ID: in.ID}
		ls.PID, _ = strconv.Atoi(md[layer.MetaPID])
		ls.Restarts, _ = strconv.Atoi(md[layer.MetaRestarts])
		if t, err := time.Parse(time.RFC3339, md[layer.MetaStarted]); err == nil {
			ls.Started = t
			ls.Uptime = time.Since(t).Truncate(time.Second).String()
		}
		st.Layers = append(st.Layers, ls)
	}
	slices.SortFunc(st.Layers, func(a, b LayerStatus) int {
		return strings.Compare(a.Layer+a.ID, b.Layer+b.ID)
	})
	return st, nil
}

func printStatus(a *app, st NodeStatus, names map[string]string) {
	w := a.stdout
	fmt.Fprintf(w, "Node %d (%s) of cluster %q\n", st.Node, named(names, st.Bus.Server), st.Cluster)
	js := "off"
	if st.Bus.JetStream {
		js = "on"
	}
	fmt.Fprintf(w, "Bus:        %s, JetStream %s, meta leader %s, %d client connections\n",
		st.Bus.ClientURL, js, orNone(named(names, st.Bus.MetaLeader)), st.Bus.Connections)
	var routes []string
	for _, r := range st.Bus.Routes {
		routes = append(routes, named(names, r.Server)+" "+r.Addr)
	}
	fmt.Fprintf(w, "Routes:     %s\n", orNone(strings.Join(routes, ", ")))
	if len(st.Bus.Peers) > 0 {
		fmt.Fprintf(w, "JS peers:   %s\n", peersLine(st.Bus, names))
	}
	printTotemStatus(w, st.Totem)
	switch {
	case st.Serving == nil:
	case st.Serving.Ready:
		fmt.Fprintln(w, "Serving:    yes (services loaded, synchronized, cmap answers through the IPC gateway)")
	default:
		fmt.Fprintf(w, "Serving:    not yet: %s\n", st.Serving.WaitingFor)
	}
	fmt.Fprintln(w, "Layers:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  LAYER\tPID\tVERSION\tUPTIME\tRESTARTS")
	for _, l := range st.Layers {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%d\n", l.Layer, l.PID, l.Version, l.Uptime, l.Restarts)
	}
	_ = tw.Flush()
	printServices(w, st.Services)
	printCopies(w, st.Copies)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
