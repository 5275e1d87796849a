package quorum

import (
	"context"
	"encoding/json"
	"errors"
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
