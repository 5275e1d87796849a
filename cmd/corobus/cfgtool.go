package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cswire"
)

// runCfg is corosync-cfgtool over the bus: the same command line, read
// the same way (getopt_long: the last action given wins, its long
// options), the same output, plus --json, as a client of the node's cfg
// service.
func runCfg(ctx context.Context, a *app, args []string) error {
	var q cfgFlags
	fs := newFlagSet(a, "cfg", "[-s [-b] | -n | -R | -L | -k NODEID | -a NODEID | -H [--force]] [--json] [-c FILE | --bus URL] [--node ID]",
		"Show links and nodes, reload the configuration, stop or kill nodes the way corosync-cfgtool\n"+
			"does: its command line (options and operands in any order, the last action given wins,\n"+
			"its long options --status, --kill N, …), output, messages and exit statuses.\n"+
			"-H asks the node's registered clients (Pacemaker) first; --force goes ahead anyway.\n"+
			"Unlike corosync-cfgtool, a command-line mistake is prefixed with `corobus cfg: `.")
	q.register(fs)
	_, err := parseTool(a, fs, args, q.take)
	if err != nil {
		return err
	}
	if q.action == "" {
		fs.SetOutput(a.stdout)
		fs.Usage()
		return nil
	}
	nc, err := a.connect(q.nodeFlags, "corobus-cfg", q.node)
	if err != nil {
		return err
	}
	defer nc.Close()
	if q.action == "events" {
		return followEvents(ctx, a, nc.nc, nc.subjects.CfgEvents())
	}
	s, err := openComponent(ctx, nc.nc, nc.subjects, nc.node, cfg.ComponentName)
	if err != nil {
		return toolFailure(a.stderr, "Could not initialize corosync configuration API: %v", err)
	}
	defer s.Close()
	t := &cfgTool{q: q, s: s, db: client.New(nc.nc, nc.subjects, nc.node)}
	switch q.action {
	case "s", "n":
		return t.linkStatus(ctx, a)
	case "R":
		return t.reload(ctx, a)
	case "L":
		return t.simple(ctx, a, cfg.ReqReopenLogFiles, "Could not reopen corosync logging files. Error %s\n")
	case "k":
		return t.killNode(ctx, a)
	case "H":
		return t.shutdown(ctx, a)
	}
	return t.showAddrs(ctx, a) // -a
}

type cfgFlags struct {
	nodeFlags
	json, brief, force bool
	node               uint
	killArg, addrArg   string
	iface              string
	// action is the last action given: s, n, R, L, k, a, H or events.
	action string
	// nodeID is -k's or -a's, whichever came last (one variable in the
	// tool too).
	nodeID uint32
}

func (q *cfgFlags) register(fs *flag.FlagSet) {
	q.nodeFlags.register(fs, true)
	fs.UintVar(&q.node, "node", 0, "ask this node `ID` through the bus instead of the configured local node")
	fs.BoolVar(&q.json, "json", false, "print JSON")
	fs.StringVar(&q.iface, "i", "", "accepted for corosync-cfgtool's sake (it ignores it too)")
	fs.StringVar(&q.iface, "if", "", "same as -i")
	fs.Bool("s", false, "display the status of the current links on this node")
	fs.Bool("status", false, "same as -s")
	fs.Bool("n", false, "display the status of the connected nodes and their links")
	fs.Bool("nodes", false, "same as -n")
	fs.BoolVar(&q.brief, "b", false, "with -s, the brief status")
	fs.BoolVar(&q.brief, "brief", false, "same as -b")
	fs.Bool("R", false, "tell every node of the cluster to reload its configuration")
	fs.Bool("reload", false, "same as -R")
	fs.Bool("L", false, "tell the node to reopen its log files")
	fs.Bool("reopen", false, "same as -L")
	fs.StringVar(&q.killArg, "k", "", "kill the node with this `nodeid`")
	fs.StringVar(&q.killArg, "kill", "", "same as -k")
	fs.StringVar(&q.addrArg, "a", "", "display the IP address(es) of the node with this `nodeid`")
	fs.StringVar(&q.addrArg, "address", "", "same as -a")
	// corosync-cfgtool's -h is no action: the usage only when no action
	// is given (-h -s and -s -h show the links), as a command line with
	// no action shows it.
	fs.Bool("h", false, "display this help (when no action is given)")
	fs.Bool("H", false, "shut the node down cleanly")
	fs.Bool("shutdown", false, "same as -H")
	fs.BoolVar(&q.force, "force", false, "with -H, shut down regardless of the registered clients' vetoes")
	fs.Bool("events", false, "print the cfg events of every node (<prefix>.cfg.*.>: shutdown steps, kills, reloads) until interrupted")
}

// take is one option of the command line, in order, checked as the tool
// checks it then.
func (q *cfgFlags) take(name string) error {
	long := map[string]string{"status": "s", "nodes": "n", "reload": "R", "reopen": "L", "kill": "k", "address": "a", "shutdown": "H"}
	if short, ok := long[name]; ok {
		name = short
	}
	switch name {
	case "s", "n", "R", "L", "H", "events":
		q.action = name
	case "k", "a":
		arg := q.killArg
		if name == "a" {
			arg = q.addrArg
		}
		n, ok := strtonum(arg, 1, math.MaxUint32)
		if !ok {
			return usagef("The nodeid was not valid, try a positive number")
		}
		q.action, q.nodeID = name, uint32(n)
	}
	return nil
}

type cfgTool struct {
	q  cfgFlags
	s  *compSession
	db *client.Client
}

func (t *cfgTool) code(ctx context.Context, msg []byte) (cswire.Error, error) {
	b, err := t.s.call(ctx, msg)
	if err != nil {
		return 0, err
	}
	_, code, err := cswire.ParseResponse(b)
	return code, err
}

// jsonResult is the --json answer of the actions.
type jsonResult struct {
	Action string `json:"action"`
	Result string `json:"result"`
	OK     bool   `json:"ok"`
}

func (t *cfgTool) result(a *app, action string, code cswire.Error) error {
	if t.q.json {
		return printJSON(a.stdout, jsonResult{Action: action, Result: code.String(), OK: code == cswire.OK})
	}
	return nil
}

func (t *cfgTool) reload(ctx context.Context, a *app) error {
	if !t.q.json {
		fmt.Fprintln(a.stdout, "Reloading corosync.conf...")
	}
	code, err := t.code(ctx, cfg.EncodeRequest(cfg.ReqReloadConfig))
	if err != nil {
		return err
	}
	if err := t.result(a, "reload", code); err != nil || t.q.json {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Could not reload configuration. Error %s\n", code)
		return exitStatus(int(code))
	}
	fmt.Fprintln(a.stdout, "Done")
	return nil
}

func (t *cfgTool) simple(ctx context.Context, a *app, req int32, failure string) error {
	code, err := t.code(ctx, cfg.EncodeRequest(req))
	if err != nil {
		return err
	}
	if err := t.result(a, "reopen", code); err != nil || t.q.json {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, failure, code)
		return exitStatus(int(code))
	}
	return nil
}

func (t *cfgTool) killNode(ctx context.Context, a *app) error {
	if !t.q.json {
		fmt.Fprintf(a.stdout, "Killing node %d\n", t.q.nodeID)
	}
	code, err := t.code(ctx, cfg.EncodeKillNode(t.q.nodeID, "Killed by corosync-cfgtool"))
	if err != nil {
		return err
	}
	if err := t.result(a, "kill", code); err != nil || t.q.json {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Could not kill node (error = %s)\n", code)
		return exitStatus(1)
	}
	return nil
}

// shutdown is corosync-cfgtool -H: try_shutdown, again while the node
// answers CS_ERR_TRY_AGAIN (a synchronization runs), for up to 30 s.
func (t *cfgTool) shutdown(ctx context.Context, a *app) error {
	flags := uint32(cfg.ShutdownRequest)
	if t.q.force {
		flags = cfg.ShutdownRegardless
	}
	if !t.q.json {
		fmt.Fprintln(a.stdout, "Shutting down corosync")
	}
	var code cswire.Error
	for i := 0; i < 30; i++ {
		var err error
		if code, err = t.code(ctx, cfg.EncodeTryShutdown(flags)); err != nil {
			return err
		}
		if code != cswire.ErrTryAgain {
			break
		}
		time.Sleep(time.Second)
	}
	if err := t.result(a, "shutdown", code); err != nil || t.q.json {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Could not shutdown (error = %d)\n", int(code))
	}
	return nil
}

func (t *cfgTool) addrs(ctx context.Context, node uint32) ([]string, cswire.Error, error) {
	b, err := t.s.call(ctx, cfg.EncodeNodeID(cfg.ReqGetNodeAddrs, node))
	if err != nil {
		return nil, 0, err
	}
	ips, code, err := cfg.DecodeNodeAddrs(b)
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out, code, err
}

func (t *cfgTool) showAddrs(ctx context.Context, a *app) error {
	addrs, code, err := t.addrs(ctx, t.q.nodeID)
	if err != nil {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Could not get node address for nodeid %d\n", t.q.nodeID)
		return exitStatus(1)
	}
	if t.q.json {
		return printJSON(a.stdout, map[string]any{"nodeid": t.q.nodeID, "addrs": addrs})
	}
	fmt.Fprintln(a.stdout, strings.Join(addrs, " "))
	return nil
}

// LinkReport is `corobus cfg -s|-n --json`.
type LinkReport struct {
	LocalNodeID uint32       `json:"local_nodeid"`
	Transport   string       `json:"transport"`
	Nodes       []NodeReport `json:"nodes"`
}

// NodeReport is one node's status.
type NodeReport struct {
	NodeID    uint32       `json:"nodeid"`
	Local     bool         `json:"local"`
	Reachable bool         `json:"reachable"`
	Links     []LinkDetail `json:"links"`
}

// LinkDetail is one enabled link.
type LinkDetail struct {
	Link      int    `json:"link"`
	Transport string `json:"transport"`
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	Connected bool   `json:"connected"`
	MTU       uint32 `json:"mtu"`
}

// linkStatus is cfgtool's nodestatusget_do: -s (per link, -b brief) and
// -n (per reachable node).
func (t *cfgTool) linkStatus(ctx context.Context, a *app) error {
	transport := "knet"
	if v, err := t.db.Get(ctx, "totem.transport"); err == nil {
		transport = v.String()
	}
	b, err := t.s.call(ctx, cfg.EncodeRequest(cfg.ReqLocalGet))
	if err != nil {
		return err
	}
	local, code, err := cfg.DecodeLocalGet(b)
	if err != nil || code != cswire.OK {
		return toolFailure(a.stderr, "Could not get the local node id, the error is: %s", codeOr(code, err))
	}
	entries, err := t.db.List(ctx, "nodelist.node.")
	if err != nil {
		return toolFailure(a.stderr, "Could not get nodelist from cmap: %v", err)
	}
	var ids []uint32
	for _, e := range entries {
		rest := strings.TrimPrefix(e.Key, "nodelist.node.")
		if _, field, ok := strings.Cut(rest, "."); ok && field == "nodeid" {
			if n, err := strconv.ParseUint(e.Value, 10, 32); err == nil {
				ids = append(ids, uint32(n))
			}
		}
	}
	if len(ids) == 0 {
		return toolFailure(a.stderr, "No nodes found in nodelist")
	}
	slices.Sort(ids)
	linkTransport := [cfg.MaxLinks]string{}
	for i := range linkTransport {
		if transport == "knet" {
			linkTransport[i] = "udp"
		}
	}
	if ifs, err := t.db.List(ctx, "totem.interface."); err == nil {
		for _, e := range ifs {
			var link int
			if _, err := fmt.Sscanf(e.Key, "totem.interface.%d.knet_transport", &link); err == nil && link >= 0 && link < cfg.MaxLinks &&
				strings.HasSuffix(e.Key, ".knet_transport") {
				linkTransport[link] = e.Value
			}
		}
	}
	statuses := make([]cfg.NodeStatus, len(ids))
	localIdx, otherIdx := 0, 0
	for i, id := range ids {
		if id == local {
			localIdx = i
		} else {
			otherIdx = i
		}
		b, err := t.s.call(ctx, cfg.EncodeNodeStatusGet(id))
		if err != nil {
			return err
		}
		st, code, err := cfg.DecodeNodeStatus(b)
		if err != nil || code != cswire.OK {
			fmt.Fprintf(a.stderr, "Could not get the node status for nodeid %d, the error is: %d\n", id, int(codeOrLibrary(code, err)))
			continue
		}
		statuses[i] = st
	}
	if t.q.json {
		rep := LinkReport{LocalNodeID: local, Transport: transport}
		for i, st := range statuses {
			nr := NodeReport{NodeID: ids[i], Local: ids[i] == local, Reachable: st.Reachable}
			for l, ls := range st.Links {
				if ls.Enabled {
					nr.Links = append(nr.Links, LinkDetail{Link: l, Transport: linkTransport[l], Src: ls.Src, Dst: ls.Dst, Connected: ls.Connected, MTU: ls.MTU})
				}
			}
			rep.Nodes = append(rep.Nodes, nr)
		}
		return printJSON(a.stdout, rep)
	}
	w := a.stdout
	fmt.Fprintf(w, "Local node ID %d, transport %s\n", local, transport)
	if t.q.action == "n" {
		for _, st := range statuses {
			if !st.Reachable || st.NodeID == local {
				continue
			}
			fmt.Fprintf(w, "nodeid: %d reachable", st.NodeID)
			if st.Remote {
				fmt.Fprint(w, " remote")
			}
			if st.External {
				fmt.Fprint(w, " external")
			}
			fmt.Fprintln(w)
			for l, ls := range st.Links {
				if !ls.Enabled {
					continue
				}
				arrow := ""
				if transport == "knet" {
					arrow = "->"
				}
				fmt.Fprintf(w, "   LINK: %d %s (%s%s%s) enabled", l, linkTransport[l], ls.Src, arrow, ls.Dst)
				if ls.Connected {
					fmt.Fprint(w, " connected")
				}
				if ls.DynConnected {
					fmt.Fprint(w, " dynconnected")
				}
				fmt.Fprintf(w, " mtu: %d\n", ls.MTU)
			}
			fmt.Fprintln(w)
		}
		return nil
	}
	printLinks(w, ids, statuses, linkTransport, localIdx, otherIdx, t.q.brief)
	return nil
}

// followEvents prints each message on subject as "subject payload" until
// ctx ends.
func followEvents(ctx context.Context, a *app, nc *nats.Conn, subject string) error {
	lines := make(chan string, 1024)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		select {
		case lines <- m.Subject + " " + string(m.Data):
		default:
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			fmt.Fprintln(a.stdout, l)
		}
	}
}

func codeOrLibrary(code cswire.Error, err error) cswire.Error {
	if err != nil {
		return cswire.ErrLibrary
	}
	return code
}

func printLinks(w io.Writer, ids []uint32, statuses []cfg.NodeStatus, transport [cfg.MaxLinks]string, localIdx, otherIdx int, brief bool) {
	for l := 0; l < cfg.MaxLinks; l++ {
		if !statuses[otherIdx].Links[l].Enabled {
			continue
		}
		fmt.Fprintf(w, "LINK ID %d %s\n", l, transport[l])
		fmt.Fprintf(w, "\taddr\t= %s\n", statuses[otherIdx].Links[l].Src)
		if brief {
			fmt.Fprint(w, "\tstatus\t= ")
			for j := range ids {
				ls := statuses[j].Links[l]
				c := byte('0')
				if ls.Enabled {
					c++
				}
				if ls.Connected {
					c += 2
				}
				if j == localIdx {
					c = 'n'
				}
				fmt.Fprintf(w, "%c", c)
			}
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprint(w, "\tstatus:\n")
		for j, id := range ids {
			fmt.Fprintf(w, "\t\tnodeid: %10d:\t", id)
			switch {
			case j == localIdx:
				fmt.Fprint(w, "localhost")
			case statuses[j].Links[l].Connected:
				fmt.Fprint(w, "connected")
			default:
				fmt.Fprint(w, "disconnected")
			}
			fmt.Fprintln(w)
		}
	}
}
