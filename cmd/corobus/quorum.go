package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/quorum"
	"github.com/corobus/corobus/services/votequorum"
)

// runQuorum is corosync-quorumtool over the bus: the same command line,
// read the same way (getopt: the last action given wins), but -o ORDER, so
// overrides are --override; the same output, plus --json. It is a client
// of the node's quorum, votequorum and cfg services, as the tool is
// through libquorum, libvotequorum and libcfg.
func runQuorum(ctx context.Context, a *app, args []string) error {
	var q quorumFlags
	fs := newFlagSet(a, "quorum", "[-s | -m | -l | -e EXPECTED | -v VOTES [-n NODEID] | -f] [-a] [-p] [-H] [-i] [-o a|n|i] [-V] [--json] [-c FILE | --bus URL] [--node ID]",
		"Show and change quorum the way corosync-quorumtool does: its command line (options and\n"+
			"operands in any order, the last action given wins), output, messages and exit statuses.\n"+
			"With no action, -s. -m follows <prefix>.quorum.<node>.state and prints the status on every change.\n"+
			"Exit status: 0, 2 when not quorate (-s), 1 on an error.\n"+
			"Unlike corosync-quorumtool: -o is the order only (overrides are --override), -V prints\n"+
			"corobus's version, and a command-line mistake is prefixed with `corobus quorum: `.")
	q.register(fs)
	q.command = "s"
	_, err := parseTool(a, fs, args, func(name string) error { return q.take(a, name) })
	if err != nil {
		var ge getoptError
		if errors.As(err, &ge) {
			// The tool prints its usage after getopt's complaint.
			fmt.Fprintf(a.stderr, "corobus quorum: %v\n", err)
			fs.SetOutput(a.stdout)
			fs.Usage()
			return exitStatus(1)
		}
		return err
	}
	nc, err := a.connect(q.nodeFlags, "corobus-quorum", q.node)
	if err != nil {
		return err
	}
	defer nc.Close()
	t, err := openQuorumTool(ctx, nc, a.stderr)
	if err != nil {
		return err
	}
	defer t.Close()
	t.q = q
	switch q.command {
	case "e":
		return t.setExpected(ctx, a)
	case "v":
		return t.setVotes(ctx, a)
	case "f":
		return t.unregisterDevice(ctx, a)
	case "l":
		return t.showNodes(ctx, a)
	case "m":
		return t.monitor(ctx, a, nc)
	}
	return t.showStatus(ctx, a)
}

type quorumFlags struct {
	nodeFlags
	json                    bool
	node                    uint
	allAddrs, parsable, hex bool
	ip                      bool
	expectedArg, votesArg   string
	nodeIDArg, order        string
	votes, expected         int
	nodeID                  uint32
	// command is the last action given: s, m, l, e, v or f.
	command string
}

func (q *quorumFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&q.file, "c", "", "configuration `file` of the node to ask; default: the embedded one-node default")
	fs.StringVar(&q.file, "config", "", "same as -c")
	fs.Var(&q.overrides, "override", "override a configuration key: `key=value` (repeatable; -o is the order here)")
	fs.StringVar(&q.busURL, "bus", "", "bus `URL` of any node (nats://TOKEN@host:port); overrides -c")
	fs.UintVar(&q.node, "node", 0, "ask this node `ID` through the bus instead of the configured local node")
	fs.BoolVar(&q.json, "json", false, "print JSON")
	fs.Bool("s", false, "show quorum status")
	fs.Bool("m", false, "constantly monitor quorum status")
	fs.Bool("l", false, "list nodes")
	fs.BoolVar(&q.allAddrs, "a", false, "show all names or addresses for each node")
	fs.BoolVar(&q.parsable, "p", false, "when used with -s or -l, generates machine parsable output")
	fs.StringVar(&q.votesArg, "v", "", "change the number of `votes` for a node")
	fs.StringVar(&q.nodeIDArg, "n", "", "optional `nodeid` of node for -v")
	fs.StringVar(&q.expectedArg, "e", "", "change `expected` votes for the cluster")
	fs.BoolVar(&q.hex, "H", false, "show nodeids in hexadecimal rather than decimal")
	fs.BoolVar(&q.ip, "i", false, "show node IP addresses instead of the resolved name")
	fs.StringVar(&q.order, "o", "a", "order by [a] IP address (default), [n] name, [i] nodeid")
	fs.Bool("f", false, "forcefully unregister a quorum device *DANGEROUS*")
	fs.Bool("V", false, "show version and exit")
}

// take is one option of the command line, in order, checked as the tool
// checks it then.
func (q *quorumFlags) take(a *app, name string) error {
	switch name {
	case "s", "m", "l", "f":
		q.command = name
	case "e":
		n, ok := strtonum(q.expectedArg, 1, math.MaxInt32)
		if !ok {
			return usagef("New expected votes value was not valid, try a positive number")
		}
		q.expected, q.command = int(n), name
	case "v":
		n, ok := strtonum(q.votesArg, 0, math.MaxInt32)
		if !ok {
			return usagef("New votes value was not valid, try a positive number or zero")
		}
		q.votes, q.command = int(n), name
	case "n":
		n, ok := strtonum(q.nodeIDArg, 1, math.MaxUint32)
		if !ok {
			return usagef("The nodeid was not valid, try a positive number")
		}
		q.nodeID = uint32(n)
	case "o":
		switch q.order {
		case "a", "n", "i":
		default:
			return usagef("Invalid ordering option. valid orders are a(address), i(node ID) or n(name)")
		}
	case "V":
		fmt.Fprintf(a.stdout, "corobus quorum version: %s\n", a.version)
		return flag.ErrHelp
	}
	return nil
}

// quorumTool holds a verb's sessions and what the tool reads from cmap.
type quorumTool struct {
	q        quorumFlags
	stderr   io.Writer
	db       *client.Client
	quorum   *compSession
	vq       *compSession // nil unless votequorum is the provider
	cfg      *compSession
	provider string
	qtype    uint32
	ourID    uint32
}

func openQuorumTool(ctx context.Context, nc *nodeClient, stderr io.Writer) (*quorumTool, error) {
	t := &quorumTool{stderr: stderr, db: client.New(nc.nc, nc.subjects, nc.node)}
	var err error
	if t.quorum, err = openComponent(ctx, nc.nc, nc.subjects, nc.node, quorum.ComponentName); err != nil {
		return nil, toolFailure(t.stderr, "Cannot initialize QUORUM service: %v", err)
	}
	b, err := t.quorum.call(ctx, quorum.EncodeModelGetType(quorum.ModelV1))
	if err != nil {
		t.Close()
		return nil, toolFailure(t.stderr, "Cannot initialize QUORUM service: %v", err)
	}
	if len(b) >= 28 {
		t.qtype = cswire.U32(b, 24)
	}
	if t.cfg, err = openComponent(ctx, nc.nc, nc.subjects, nc.node, cfg.ComponentName); err != nil {
		t.Close()
		return nil, toolFailure(t.stderr, "Cannot initialise CFG service: %v", err)
	}
	if v, err := t.db.Get(ctx, "quorum.provider"); err == nil && t.qtype != quorum.TypeFree {
		t.provider = v.String()
	}
	t.ourID = nc.node
	if t.usingVotequorum() {
		if t.vq, err = openComponent(ctx, nc.nc, nc.subjects, nc.node, votequorum.ComponentName); err != nil {
			t.Close()
			return nil, toolFailure(t.stderr, "Cannot initialise VOTEQUORUM service: %v", err)
		}
		v, err := t.db.Get(ctx, "runtime.votequorum.this_node_id")
		if err != nil {
			t.Close()
			return nil, toolFailure(t.stderr, "Unable to retrieve this_node_id: %v", err)
		}
		n, _ := v.Int()
		t.ourID = uint32(n)
	}
	return t, nil
}

func (t *quorumTool) usingVotequorum() bool { return t.provider == votequorum.ProviderVotequorum }

func (t *quorumTool) Close() {
	for _, s := range []*compSession{t.quorum, t.vq, t.cfg} {
		if s != nil {
			s.Close()
		}
	}
}

func (t *quorumTool) setExpected(ctx context.Context, a *app) error {
	if !t.usingVotequorum() {
		return toolFailure(t.stderr, "You cannot change expected votes, corosync is not using votequorum")
	}
	code, err := t.status(ctx, votequorum.EncodeSetExpected(uint32(t.q.expected)))
	if err != nil {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Unable to set expected votes: %s\n", code)
		return exitStatus(1)
	}
	return nil
}

func (t *quorumTool) setVotes(ctx context.Context, a *app) error {
	if !t.usingVotequorum() {
		return toolFailure(t.stderr, "You cannot change node votes, corosync is not using votequorum")
	}
	id := t.q.nodeID
	if id == 0 {
		id = t.ourID
	}
	code, err := t.status(ctx, votequorum.EncodeSetVotes(id, uint32(t.q.votes)))
	if err != nil {
		return err
	}
	if code != cswire.OK {
		fmt.Fprintf(a.stderr, "Unable to set votes %d for nodeid: %d: %s\n", t.q.votes, id, code)
		return exitStatus(1)
	}
	return nil
}

func (t *quorumTool) unregisterDevice(ctx context.Context, a *app) error {
	if !t.usingVotequorum() {
		return toolFailure(t.stderr, "You cannot unregister quorum device, corosync is not using votequorum")
	}
	in, code, err := t.getinfo(ctx, t.ourID)
	if err != nil || code != cswire.OK {
		return toolFailure(t.stderr, "Unable to get quorum device info: %s", codeOr(code, err))
	}
	if in.Flags&votequorum.InfoQdeviceRegistered == 0 {
		return nil
	}
	if code, err := t.status(ctx, votequorum.EncodeQdeviceName(votequorum.ReqQdeviceUnregister, in.QdeviceName)); err != nil || code != cswire.OK {
		return toolFailure(t.stderr, "Unable to unregister quorum device: %s", codeOr(code, err))
	}
	return nil
}

// toolFailure prints a corosync tool's message on stderr and ends the
// verb with status 1, as the tool does.
func toolFailure(w io.Writer, format string, args ...any) error {
	fmt.Fprintf(w, format+"\n", args...)
	return exitStatus(1)
}

func codeOr(code cswire.Error, err error) string {
	if err != nil {
		return err.Error()
	}
	return code.String()
}

func (t *quorumTool) status(ctx context.Context, msg []byte) (cswire.Error, error) {
	b, err := t.vq.call(ctx, msg)
	if err != nil {
		return 0, err
	}
	return votequorum.DecodeStatus(b)
}

func (t *quorumTool) getinfo(ctx context.Context, id uint32) (votequorum.Info, cswire.Error, error) {
	b, err := t.vq.call(ctx, votequorum.EncodeGetInfoRequest(id))
	if err != nil {
		return votequorum.Info{}, 0, err
	}
	return votequorum.DecodeGetInfo(b)
}

// view is what quorum_trackstart(CS_TRACK_CURRENT) tells: quorate, ring,
// members.
func (t *quorumTool) view(ctx context.Context) (quorum.Notification, error) {
	if _, err := t.quorum.call(ctx, quorum.EncodeTrackStart(quorum.TrackCurrent)); err != nil {
		return quorum.Notification{}, toolFailure(t.stderr, "Unable to start quorum status tracking: %v", err)
	}
	defer func() { _, _ = t.quorum.call(ctx, quorum.EncodeRequest(quorum.ReqTrackStop)) }()
	for {
		b, err := t.quorum.event(ctx, 10*time.Second)
		if err != nil {
			return quorum.Notification{}, toolFailure(t.stderr, "Unable to dispatch quorum status: %v", err)
		}
		n, err := quorum.DecodeNotification(b)
		if err != nil {
			return n, err
		}
		if n.ID == quorum.ResV1QuorumNotification {
			return n, nil
		}
	}
}

// member is one line of the membership table.
type member struct {
	NodeID  uint32 `json:"nodeid"`
	Votes   *int   `json:"votes,omitempty"`
	Qdevice string `json:"qdevice,omitempty"`
	Name    string `json:"name"`
	Local   bool   `json:"local"`
	info    votequorum.Info
}

// QuorumStatus is `corobus quorum --json`.
type QuorumStatus struct {
	Date       time.Time         `json:"date"`
	Provider   string            `json:"provider"`
	Nodes      int               `json:"nodes"`
	NodeID     uint32            `json:"node_id"`
	Ring       quorum.RingID     `json:"ring_id"`
	Quorate    bool              `json:"quorate"`
	Votequorum *votequorumStatus `json:"votequorum,omitempty"`
	Members    []member          `json:"members"`
	Device     *deviceStatus     `json:"qdevice,omitempty"`
}

type votequorumStatus struct {
	ExpectedVotes   uint32   `json:"expected_votes"`
	HighestExpected uint32   `json:"highest_expected"`
	TotalVotes      uint32   `json:"total_votes"`
	Quorum          uint32   `json:"quorum"`
	Flags           []string `json:"flags"`
}

type deviceStatus struct {
	Name  string `json:"name"`
	Votes uint32 `json:"votes"`
}

// collect gathers what -s, -l and -m print: the view, votequorum's
// figures and, withNodes, each member's votes and name.
//
// decided, when not nil, is a decision the provider has just published:
// it is the view, rather than the quorum service's. The monitor is woken
// by that decision, and the quorum service follows the same subject in
// another process: asked at once, it may still answer with the view before
// (the monitor then printed a stale membership and nothing after it).
func (t *quorumTool) collect(ctx context.Context, withNodes bool, decided *quorum.Notification) (QuorumStatus, []string, error) {
	st := QuorumStatus{Date: time.Now(), Provider: t.provider, NodeID: t.ourID}
	var warnings []string
	n := decided
	if n == nil {
		v, err := t.view(ctx)
		if err != nil {
			return st, nil, err
		}
		n = &v
	}
	st.Quorate, st.Ring, st.Nodes = n.Quorate, n.Ring, len(n.Members)
	if decided == nil {
		if b, err := t.quorum.call(ctx, quorum.EncodeRequest(quorum.ReqGetQuorate)); err == nil {
			if q, code, err := quorum.DecodeGetQuorate(b); err == nil && code == cswire.OK {
				st.Quorate = q
			}
		}
	}
	if t.vq != nil {
		in, code, err := t.getinfo(ctx, t.ourID)
		if err == nil && (code == cswire.OK || code == cswire.ErrNotExist) {
			st.Votequorum = &votequorumStatus{ExpectedVotes: in.ExpectedVotes, HighestExpected: in.HighestExpected,
				TotalVotes: in.TotalVotes, Quorum: in.Quorum, Flags: infoFlags(in.Flags)}
		} else {
			warnings = append(warnings, fmt.Sprintf("Unable to get node info: %s", codeOr(code, err)))
		}
	}
	if !withNodes {
		return st, warnings, nil
	}
	for _, id := range n.Members {
		m := member{NodeID: id, Local: id == t.ourID}
		if t.vq != nil {
			in, code, err := t.getinfo(ctx, id)
			if err != nil || code != cswire.OK {
				warnings = append(warnings, fmt.Sprintf("Unable to get node %d info", id))
			}
			m.info = in
			v := int(in.Votes)
			m.Votes = &v
		}
		name, warn := t.nodeName(ctx, id)
		if warn != "" {
			warnings = append(warnings, warn)
		}
		m.Name = name
		st.Members = append(st.Members, m)
	}
	switch t.q.order {
	case "i":
		slices.SortStableFunc(st.Members, func(a, b member) int { return int(a.NodeID) - int(b.NodeID) })
	case "n":
		slices.SortStableFunc(st.Members, func(a, b member) int { return strings.Compare(a.Name, b.Name) })
	}
	device := false
	for _, m := range st.Members {
		if m.info.Flags&votequorum.InfoQdeviceRegistered != 0 {
			device = true
		}
	}
	for i := range st.Members {
		m := &st.Members[i]
		if t.vq != nil && (device || t.q.parsable) {
			m.Qdevice = "NR"
			if f := m.info.Flags; f&votequorum.InfoQdeviceRegistered != 0 {
				m.Qdevice = strings.Join([]string{pick(f&votequorum.InfoQdeviceAlive != 0, "A", "NA"),
					pick(f&votequorum.InfoQdeviceCastVote != 0, "V", "NV"), pick(f&votequorum.InfoQdeviceMasterWins != 0, "MW", "NMW")}, ",")
			}
		}
	}
	if device && len(st.Members) > 0 {
		st.Device = &deviceStatus{Name: st.Members[0].info.QdeviceName, Votes: st.Members[0].info.QdeviceVotes}
	}
	return st, warnings, nil
}

func pick(c bool, yes, no string) string {
	if c {
		return yes
	}
	return no
}

func infoFlags(f uint32) []string {
	var out []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{votequorum.InfoTwoNode, "2Node"}, {votequorum.InfoQuorate, "Quorate"}, {votequorum.InfoWaitForAll, "WaitForAll"},
		{votequorum.InfoLastManStanding, "LastManStanding"}, {votequorum.InfoAutoTieBreaker, "AutoTieBreaker"},
		{votequorum.InfoAllowDownscale, "AllowDownscale"}, {votequorum.InfoQdeviceRegistered, "Qdevice"}} {
		if f&x.bit != 0 {
			out = append(out, x.name)
		}
	}
	return out
}

// nodeName is quorumtool's node_name: the nodelist's name unless -i, then
// (all, with -a) the node's addresses, resolved unless -i.
func (t *quorumTool) nodeName(ctx context.Context, id uint32) (string, string) {
	var parts []string
	start := 0
	if !t.q.ip {
		if name := t.nodelistName(ctx, id); name != "" {
			parts, start = append(parts, name), 1
		}
	}
	b, err := t.cfg.call(ctx, cfg.EncodeNodeID(cfg.ReqGetNodeAddrs, id))
	if err != nil {
		return strings.Join(parts, ", "), fmt.Sprintf("Unable to get node address for nodeid %d: %v", id, err)
	}
	addrs, code, err := cfg.DecodeNodeAddrs(b)
	if err != nil || code != cswire.OK {
		return "", fmt.Sprintf("Unable to get node address for nodeid %d: %s", id, codeOr(code, err))
	}
	n := len(addrs)
	if !t.q.allAddrs {
		n = min(n, 1)
	}
	for i := start; i < n; i++ {
		s := addrs[i].String()
		if !t.q.ip {
			if names, err := net.DefaultResolver.LookupAddr(ctx, s); err == nil && len(names) > 0 {
				s = strings.TrimSuffix(names[0], ".")
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", "), ""
}

func (t *quorumTool) nodelistName(ctx context.Context, id uint32) string {
	entries, err := t.db.List(ctx, "nodelist.node.")
	if err != nil {
		return ""
	}
	for _, e := range entries {
		pos, ok := strings.CutSuffix(strings.TrimPrefix(e.Key, "nodelist.node."), ".nodeid")
		if !ok || e.Value != strconv.FormatUint(uint64(id), 10) {
			continue
		}
		for _, n := range entries {
			if n.Key == "nodelist.node."+pos+".name" {
				return n.Value
			}
		}
	}
	return ""
}

func (t *quorumTool) showStatus(ctx context.Context, a *app) error {
	st, warnings, err := t.collect(ctx, t.vq != nil, nil)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(a.stderr, w)
	}
	if t.q.json {
		if err := printJSON(a.stdout, st); err != nil {
			return err
		}
	} else {
		t.printStatus(a.stdout, st)
	}
	if !st.Quorate {
		return exitStatus(2)
	}
	return nil
}

func (t *quorumTool) showNodes(ctx context.Context, a *app) error {
	st, warnings, err := t.collect(ctx, true, nil)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(a.stderr, w)
	}
	if t.q.json {
		return printJSON(a.stdout, st.Members)
	}
	t.printNodes(a.stdout, st)
	return nil
}

// monitor prints the status now and whenever node's votequorum publishes
// a new decision on <prefix>.quorum.<node>.state.
func (t *quorumTool) monitor(ctx context.Context, a *app, nc *nodeClient) error {
	if t.qtype == quorum.TypeFree {
		fmt.Fprintln(a.stdout, "\nQuorum is not configured - cannot monitor")
		return t.showStatus(ctx, a)
	}
	// The newest decision only: a slow terminal skips to the latest.
	changes := make(chan quorum.Notification, 1)
	sub, err := nc.nc.Subscribe(nc.subjects.QuorumState(nc.node), func(m *nats.Msg) {
		var d votequorum.State
		if json.Unmarshal(m.Data, &d) != nil || !d.Synced {
			return // not a decision yet, as the quorum service judges it
		}
		n := quorum.Notification{Quorate: d.Quorate, Ring: quorum.RingID{NodeID: d.Ring.NodeID, Seq: d.Ring.Seq}, Members: d.Members}
		for {
			select {
			case changes <- n:
				return
			default:
			}
			select {
			case <-changes:
			default:
			}
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	var decided *quorum.Notification
	for {
		st, warnings, err := t.collect(ctx, t.vq != nil, decided)
		if err != nil {
			return err
		}
		for _, w := range warnings {
			fmt.Fprintln(a.stderr, w)
		}
		if t.q.json {
			b, _ := json.Marshal(st)
			fmt.Fprintf(a.stdout, "%s\n", b)
		} else {
			t.printStatus(a.stdout, st)
			fmt.Fprintln(a.stdout)
		}
		select {
		case <-ctx.Done():
			return nil
		case n := <-changes:
			decided = &n
		}
	}
}

func (t *quorumTool) id(w io.Writer, id uint32) {
	if t.q.hex {
		fmt.Fprintf(w, "0x%08x ", id)
		return
	}
	fmt.Fprintf(w, "%10d ", id)
}

func (t *quorumTool) printStatus(w io.Writer, st QuorumStatus) {
	fmt.Fprint(w, "Quorum information\n------------------\n")
	fmt.Fprintf(w, "Date:             %s\n", st.Date.Format("Mon Jan _2 15:04:05 2006"))
	provider := st.Provider
	if provider == "" {
		provider = "Not configured"
	}
	fmt.Fprintf(w, "Quorum provider:  %s\n", provider)
	fmt.Fprintf(w, "Nodes:            %d\n", st.Nodes)
	if t.q.hex {
		fmt.Fprintf(w, "Node ID:          0x%08x\n", st.NodeID)
	} else {
		fmt.Fprintf(w, "Node ID:          %d\n", st.NodeID)
	}
	if t.vq != nil {
		fmt.Fprintf(w, "Ring ID:          %x.%x\n", st.Ring.NodeID, st.Ring.Seq)
	} else {
		fmt.Fprintf(w, "Ring ID:          %x\n", st.Ring.Seq)
	}
	fmt.Fprintf(w, "Quorate:          %s\n", pick(st.Quorate, "Yes", "No"))
	if t.vq == nil {
		return
	}
	if v := st.Votequorum; v != nil {
		fmt.Fprint(w, "\nVotequorum information\n----------------------\n")
		fmt.Fprintf(w, "Expected votes:   %d\n", v.ExpectedVotes)
		fmt.Fprintf(w, "Highest expected: %d\n", v.HighestExpected)
		fmt.Fprintf(w, "Total votes:      %d\n", v.TotalVotes)
		fmt.Fprintf(w, "Quorum:           %d %s\n", v.Quorum, pick(slices.Contains(v.Flags, "Quorate"), " ", "Activity blocked"))
		fmt.Fprint(w, "Flags:            ")
		for _, f := range v.Flags {
			fmt.Fprintf(w, "%s ", f)
		}
		fmt.Fprintln(w)
	}
	t.printNodes(w, st)
}

func (t *quorumTool) printNodes(w io.Writer, st QuorumStatus) {
	fmt.Fprint(w, "\nMembership information\n----------------------\n")
	fmt.Fprintf(w, "%10s ", "Nodeid")
	qcol := t.vq != nil && (st.Device != nil || t.q.parsable)
	if t.vq != nil {
		fmt.Fprintf(w, "%10s ", "Votes")
		if qcol {
			fmt.Fprintf(w, "%10s ", "Qdevice")
		}
	}
	fmt.Fprintln(w, "Name")
	ourFlags := uint32(0)
	for _, m := range st.Members {
		t.id(w, m.NodeID)
		if t.vq != nil {
			fmt.Fprintf(w, "%10d ", *m.Votes)
			if qcol {
				fmt.Fprintf(w, "%10s ", m.Qdevice)
			}
		}
		fmt.Fprint(w, m.Name)
		if m.Local {
			fmt.Fprint(w, " (local)")
			ourFlags = m.info.Flags
		}
		fmt.Fprintln(w)
	}
	if d := st.Device; d != nil {
		t.id(w, votequorum.QdeviceNodeID)
		if ourFlags&votequorum.InfoQdeviceCastVote != 0 {
			fmt.Fprintf(w, "%10d ", d.Votes)
			fmt.Fprintf(w, "           %s\n", d.Name)
		} else {
			fmt.Fprintf(w, "%10d ", 0)
			fmt.Fprintf(w, "           %s (votes %d)\n", d.Name, d.Votes)
		}
	}
}
