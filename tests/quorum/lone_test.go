package quorum

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestLoneNodeServesCmap: one node of a two_node cluster started alone
// (both were down; the other does not come back) has no JetStream quorum,
// yet serves its clients as corosync does: corosync-quorumtool -s shows it
// alone and not quorate, waiting for all ("Activity blocked", exit
// status 2), and its configuration reads through cmap. Before, its objdb
// waited for the bucket before serving anything, and the tool said
// "Cannot initialize CMAP service" (exit 1) for as long as the node ran.
// A cluster key cannot be written meanwhile (CS_ERR_TRY_AGAIN); once the
// other node is back the two are quorate, and a cluster key written on it
// reads on the first: the lone node took the cluster keys when the bucket
// opened.
func TestLoneNodeServesCmap(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, NoStart: true, Keys: map[string]string{"quorum.two_node": "1"}})
	keepLogs(t, c)
	n1 := c.Node(1)
	if err := n1.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(settle)
	var out string
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err = n1.Run(ctx, "corosync-quorumtool", "-s")
		cancel()
		if strings.Contains(out, "Activity blocked") || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("corosync-quorumtool -s on the lone node: %v, want exit status 2 (not quorate)\n%s\n%s", err, out, n1.LogTail(30))
	}
	for _, want := range []string{"Nodes:            1", "Quorate:          No", "Flags:            2Node WaitForAll", "Activity blocked"} {
		if !strings.Contains(out, want) {
			t.Errorf("corosync-quorumtool -s on the lone node lacks %q:\n%s", want, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if got, err := n1.Run(ctx, "corosync-cmapctl", "-g", "quorum.two_node"); err != nil || got != "quorum.two_node (u8) = 1\n" {
		t.Errorf("corosync-cmapctl -g quorum.two_node on the lone node = %q, %v", got, err)
	}
	// pacemakerd admits its group (hacluster's) this way as it starts:
	// a node key, as on corosync, so it needs no majority.
	if got, err := n1.Run(ctx, "corosync-cmapctl", "-s", "uidgid.gid.4242", "u8", "1"); err != nil {
		t.Errorf("corosync-cmapctl -s uidgid.gid.4242 u8 1 on the lone node: %q, %v", got, err)
	}
	if got, err := n1.Run(ctx, "corosync-cmapctl", "-s", "test.lone", "u32", "7"); err == nil || !strings.Contains(got+err.Error(), "CS_ERR_TRY_AGAIN") {
		t.Errorf("a cluster key written on the lone node: %q, %v; want CS_ERR_TRY_AGAIN", got, err)
	}

	if err := c.Node(2).Start(); err != nil {
		t.Fatal(err)
	}
	n2 := c.Node(2)
	waitStatus(t, settle, "two nodes, quorate", func(st quorumStatus) bool { return st.nodes == 2 && st.quorate }, n1, n2)
	for end := time.Now().Add(settle); ; time.Sleep(time.Second) {
		if _, err := n2.Run(ctx, "corosync-cmapctl", "-s", "test.lone", "u32", "7"); err == nil {
			break
		} else if time.Now().After(end) {
			t.Fatalf("a cluster key still cannot be written with both nodes up: %v\n%s", err, n2.LogTail(30))
		}
	}
	for end := time.Now().Add(settle); ; time.Sleep(200 * time.Millisecond) {
		got, err := n1.Run(ctx, "corosync-cmapctl", "-g", "test.lone")
		if err == nil && got == "test.lone (u32) = 7\n" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("node 1, once alone, reads test.lone (written on node 2) as %q, %v; want 7\n%s", got, err, n1.LogTail(30))
		}
	}
}

// TestLoneNodeHoldingTheBucketServesCmap: a two_node cluster whose objdb
// bucket (one replica on two nodes) is on node X's server. The other node
// stops; X runs on alone, its server still leading the bucket's stream,
// so a layer that opens its objdb copy now finds the bucket, but without
// the other node JetStream has no meta leader to make the consumer that
// loads the cluster keys. X's IPC gateway is killed and restarted by its
// supervisor, as any layer may be: corosync serves a lone node's cmap, and
// corobus's gateway waited for that load for ever, corosync-cmapctl
// failing with CS_ERR_LIBRARY for as long as X ran: what tests/quorum
// TestConfigVersionLoneOlderNodeStops hit one CI run in four, when the
// bucket was made in the moment both nodes ran and the second node's
// layers opened their copies as the first left. Which node holds the
// bucket is read from node 1's copies (a one-replica bucket's consumer
// is on its server); the other node is the one stopped.
func TestLoneNodeHoldingTheBucketServesCmap(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, Keys: map[string]string{"quorum.two_node": "1"}})
	keepLogs(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	type nodeStatus struct {
		Layers []struct {
			Layer string `json:"layer"`
			PID   int    `json:"pid"`
		} `json:"layers"`
		Copies []struct {
			State string `json:"state"`
			Via   string `json:"via"`
		} `json:"objdb_copies"`
	}
	statusOf := func(n *netcluster.Node) (nodeStatus, string, error) {
		var st nodeStatus
		out, err := n.Corobus(ctx, "status", "--json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &st)
		}
		return st, out, err
	}
	holder := 0
	for end := time.Now().Add(settle); holder == 0; time.Sleep(500 * time.Millisecond) {
		st, out, err := statusOf(c.Node(1))
		for _, cp := range st.Copies {
			if cp.State == "current" && (cp.Via == "node1" || cp.Via == "node2") {
				holder = int(cp.Via[4] - '0')
			}
		}
		if holder == 0 && time.Now().After(end) {
			t.Fatalf("node 1's objdb copies do not say which server holds the bucket: %v\n%s", err, out)
		}
	}
	other, lone := c.Node(3-holder), c.Node(holder)
	st, out, err := statusOf(lone)
	gateway := 0
	for _, l := range st.Layers {
		if l.Layer == "ipc" {
			gateway = l.PID
		}
	}
	if gateway == 0 {
		t.Fatalf("node %d's status lists no ipc layer: %v\n%s", lone.ID, err, out)
	}
	t.Logf("the bucket is on node %d; node %d stops, node %d's gateway (pid %d) is killed", holder, other.ID, lone.ID, gateway)
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, settle, "node alone", func(st quorumStatus) bool { return st.nodes == 1 }, lone)
	if out, err := lone.Run(ctx, "kill", "-KILL", strconv.Itoa(gateway)); err != nil {
		t.Fatalf("killing node %d's gateway: %v\n%s", lone.ID, err, out)
	}
	for end := time.Now().Add(settle); ; time.Sleep(time.Second) {
		got, err := lone.Run(ctx, "corosync-cmapctl", "-g", "quorum.two_node")
		if err == nil && got == "quorum.two_node (u8) = 1\n" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("corosync-cmapctl -g quorum.two_node on node %d, alone with the bucket, its gateway restarted: %q, %v\n%s", lone.ID, got, err, lone.LogTail(40))
		}
	}
}

// TestLoneNodeBusRestartKeepsCmap: node 2 of a two_node cluster is alone
// (node 1 stopped, so JetStream has no quorum and the objdb bucket cannot
// be read) and its bus process dies; the supervisor restarts it, as LCR's
// live replacement of the bus layer would, and the layers run on. corosync
// serves a lone node's cmap whatever the others do: a node key set before
// the restart still reads, one set after it reads through the node's
// other copy (the objdb layer's, which `corobus cmap -g` asks), and a
// gateway restarted after it reads both. Before, the copies refused the
// new bus's keeper (it could not load the node's stored keys), so the
// objdb layer never read the later write and a restarted gateway read
// only what was written since the bus restarted.
func TestLoneNodeBusRestartKeepsCmap(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, Keys: map[string]string{"quorum.two_node": "1"}})
	keepLogs(t, c)
	n1, n2 := c.Node(1), c.Node(2)
	waitStatus(t, settle, "two nodes, quorate", func(st quorumStatus) bool { return st.nodes == 2 && st.quorate }, n1, n2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*settle)
	defer cancel()
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, settle, "node 2 alone", func(st quorumStatus) bool { return st.nodes == 1 }, n2)
	// eventually runs cmd on node 2 until it prints want ("corobus"
	// runs one of its client verbs).
	eventually := func(what, want string, cmd ...string) {
		t.Helper()
		var got string
		var err error
		for end := time.Now().Add(settle); ; time.Sleep(500 * time.Millisecond) {
			if cmd[0] == "corobus" {
				got, err = n2.Corobus(ctx, cmd[1], cmd[2:]...)
			} else {
				got, err = n2.Run(ctx, cmd[0], cmd[1:]...)
			}
			if err == nil && strings.Contains(got, want) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: %s printed %q, %v; want %q\n%s", what, strings.Join(cmd, " "), got, err, want, n2.LogTail(40))
			}
		}
	}
	eventually("a node key set on the lone node", "", "corosync-cmapctl", "-s", "runtime.lonebus.before", "str", "b4")
	killLayer := func(name string) {
		t.Helper()
		pid := layerPID(t, n2, name)
		if out, err := n2.Run(ctx, "kill", "-KILL", strconv.Itoa(pid)); err != nil {
			t.Fatalf("killing node 2's %s (pid %d): %v\n%s", name, pid, err, out)
		}
		for end := time.Now().Add(settle); ; time.Sleep(200 * time.Millisecond) {
			if now := layerPIDOrZero(n2, name); now != 0 && now != pid {
				t.Logf("node 2's %s: pid %d killed, %d runs", name, pid, now)
				return
			}
			if time.Now().After(end) {
				t.Fatalf("node 2's %s was not restarted\n%s", name, n2.LogTail(40))
			}
		}
	}
	killLayer("bus")
	eventually("the key set before the bus restarted", "runtime.lonebus.before (str) = b4",
		"corosync-cmapctl", "-g", "runtime.lonebus.before")
	eventually("a node key set after the bus restarted", "", "corosync-cmapctl", "-s", "runtime.lonebus.after", "str", "af")
	eventually("the objdb layer's copy reading the key set after the bus restarted", "af",
		"corobus", "cmap", "-g", "runtime.lonebus.after")
	killLayer("ipc")
	for _, key := range []string{"runtime.lonebus.before (str) = b4", "runtime.lonebus.after (str) = af"} {
		k := strings.Fields(key)[0]
		eventually("a gateway restarted after the bus reading "+k, key, "corosync-cmapctl", "-g", k)
	}
}

// layerPID is the pid of node n's process running corobus's layer name
// (its first argument: "bus", "ipc", ...; no other process of a node has
// one of those).
func layerPID(t *testing.T, n *netcluster.Node, name string) int {
	t.Helper()
	pid := layerPIDOrZero(n, name)
	if pid == 0 {
		t.Fatalf("node %d runs no %s process\n%s", n.ID, name, n.LogTail(20))
	}
	return pid
}

func layerPIDOrZero(n *netcluster.Node, name string) int {
	for _, pid := range n.PIDs() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[1] == name {
			return pid
		}
	}
	return 0
}
