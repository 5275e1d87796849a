package quorum

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// olderLine is what corosync's cmap logs when it stops an out-of-date
// node (and corobus too), for config versions 2 against 1.
const olderLine = "Received config version (2) is different than my config version (1)! Exiting"

// TestConfigVersionOlderNodeStops: totem.config_version as corosync 3.1.7
// enforces it, the same scenario on three corosync nodes and on three
// corobus nodes. Nodes 1 and 2 run version 2; node 3 started with version
// 1 joins, logs corosync's line and stops with status 0, every process of
// the node gone, and the others show it as corosync's do: two nodes in
// corosync-quorumtool -s, runtime.members.3.status left with its
// config_version 1, its link disconnected in corosync-cfgtool -s. Started again without the key
// (version 0, unset) it stays. corobus compared no versions: node 3 ran on.
// A client sets node 3's totem.config_version to 7: node 1 lists it. Then
// node 1 reloads a file with version 5 (corosync-cfgtool -R): every
// node records runtime.members.1.config_version 5 and nobody stops; node 2
// restarted with its file (version 2) stops. corobus's heartbeats kept the
// version a node started with: the others still said 2.
//
// This is the corobus half; TestOnCorosync runs the same on corosync.
func TestConfigVersionOlderNodeStops(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	configVersionOlderNodeStops(t, netcluster.Corobus)
}

func configVersionOlderNodeStops(t *testing.T, b netcluster.Backend) {
	netcluster.RequireBackend(t, b)
	c := netcluster.Start(t, netcluster.Options{Nodes: 3, Backend: b, NoStart: true, FileKeys: map[int]map[string]string{
		1: {"totem.config_version": "2"}, 2: {"totem.config_version": "2"}, 3: {"totem.config_version": "1"}}})
	keepLogs(t, c)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	for _, n := range []*netcluster.Node{n1, n2} {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitView(t, settle, []*netcluster.Node{n1, n2}, []uint32{1, 2})
	if err := n3.Start(); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, n3)
	if err := n3.ExitErr(); err != nil {
		t.Errorf("node 3 with an older config_version exited with %v, want status 0", err)
	}
	if pids := n3.PIDs(); len(pids) > 0 {
		t.Errorf("processes left in node 3 once its %s exited: %v", b, pids)
	}
	if !strings.Contains(n3.LogText(), olderLine) {
		t.Errorf("node 3's log lacks %q:\n%s", olderLine, n3.LogTail(40))
	}
	for _, n := range []*netcluster.Node{n1, n2} {
		if !n.Running() {
			t.Fatalf("node %d (config_version 2) stopped: %v\n%s", n.ID, n.ExitErr(), n.LogTail(40))
		}
	}
	waitStatus(t, settle, "two nodes after node 3 left", func(st quorumStatus) bool { return st.nodes == 2 && st.quorate }, n1, n2)
	waitCmapctl(t, n1, "runtime.members.3.", "runtime.members.3.config_version (u64) = 1\n", "runtime.members.3.status (str) = left\n")
	waitCmd(t, n1, []string{"corosync-cfgtool", "-s"}, "nodeid:          3:\tdisconnected")

	// Unset: corosync compares nothing.
	if err := n3.SetFileKeys(map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if err := n3.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitView(t, settle, c.Nodes, []uint32{1, 2, 3})
	waitStatus(t, settle, "three nodes with node 3's config_version unset", func(st quorumStatus) bool { return st.nodes == 3 }, n3, n1)
	waitCmapctl(t, n1, "runtime.members.3.", "runtime.members.3.config_version (u64) = 0\n", "runtime.members.3.status (str) = joined\n")
	if !n3.Running() || strings.Count(n3.LogText(), "Received config version") != 1 {
		t.Errorf("node 3 without config_version: running %v, log:\n%s", n3.Running(), n3.LogTail(40))
	}

	// A client's write of the key is a new version too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n3.Run(ctx, "corosync-cmapctl", "-s", "totem.config_version", "u64", "7"); err != nil {
		t.Fatalf("corosync-cmapctl -s totem.config_version u64 7: %v\n%s", err, out)
	}
	waitCmapctl(t, n1, "runtime.members.3.", "runtime.members.3.config_version (u64) = 7\n", "runtime.members.3.status (str) = joined\n")

	// A reload to a newer version stops nobody; every node
	// records it. A node restarted with its older file then
	// stops.
	if err := n1.SetFileKeys(map[string]string{"totem.config_version": "5"}); err != nil {
		t.Fatal(err)
	}
	if out, err := n1.Run(ctx, "corosync-cfgtool", "-R"); err != nil || !strings.Contains(out, "Done") {
		t.Fatalf("corosync-cfgtool -R: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		waitCmapctl(t, n, "runtime.members.1.", "runtime.members.1.config_version (u64) = 5\n", "runtime.members.1.status (str) = joined\n")
	}
	waitStatus(t, settle, "three nodes after the reload", func(st quorumStatus) bool { return st.nodes == 3 }, n1, n2, n3)
	for _, n := range c.Nodes {
		if !n.Running() || strings.Count(n.LogText(), "Received config version") != map[uint32]int{3: 1}[n.ID] {
			t.Errorf("node %d after node 1's reload to a newer version: running %v, log:\n%s", n.ID, n.Running(), n.LogTail(40))
		}
	}
	if err := n2.Restart(); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, n2)
	if err := n2.ExitErr(); err != nil {
		t.Errorf("node 2 restarted with version 2 among a 5 exited with %v, want status 0", err)
	}
	if line := "Received config version (5) is different than my config version (2)! Exiting"; !strings.Contains(n2.LogText(), line) {
		t.Errorf("node 2's log lacks %q:\n%s", line, n2.LogTail(40))
	}
	waitCmapctl(t, n1, "runtime.members.2.", "runtime.members.2.status (str) = left\n")
}

// TestConfigVersionLoneOlderNodeStops: the rule is about a node's first
// view with others, not about who was there first. Node 1 (version 1)
// runs alone; node 2 (version 2) starts, and node 1 — which had never
// been in a view with another node — stops, as corosync's does; node 2
// runs on.
//
// This is the corobus half; TestOnCorosync runs the same on corosync.
func TestConfigVersionLoneOlderNodeStops(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	configVersionLoneOlderNodeStops(t, netcluster.Corobus)
}

func configVersionLoneOlderNodeStops(t *testing.T, b netcluster.Backend) {
	netcluster.RequireBackend(t, b)
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, Backend: b, NoStart: true, Keys: map[string]string{"quorum.two_node": "1"},
		FileKeys: map[int]map[string]string{1: {"totem.config_version": "1"}, 2: {"totem.config_version": "2"}}})
	keepLogs(t, c)
	n1, n2 := c.Node(1), c.Node(2)
	if err := n1.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitView(t, settle, []*netcluster.Node{n1}, []uint32{1})
	if err := n2.Start(); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, n1)
	if err := n1.ExitErr(); err != nil {
		t.Errorf("node 1 exited with %v, want status 0", err)
	}
	if !strings.Contains(n1.LogText(), olderLine) {
		t.Errorf("node 1's log lacks %q:\n%s", olderLine, n1.LogTail(40))
	}
	waitCmapctl(t, n2, "runtime.members.1.", "runtime.members.1.status (str) = left\n")
	if !n2.Running() {
		t.Errorf("node 2 (the newer) stopped: %v\n%s", n2.ExitErr(), n2.LogTail(40))
	}
}

// waitCmapctl polls `corosync-cmapctl prefix` in n until it prints every
// line of want.
func waitCmapctl(t *testing.T, n *netcluster.Node, prefix string, want ...string) {
	t.Helper()
	waitCmd(t, n, []string{"corosync-cmapctl", prefix}, want...)
}

// waitCmd polls a command in n until its output holds every string of want.
func waitCmd(t *testing.T, n *netcluster.Node, args []string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := n.Run(ctx, args[0], args[1:]...)
		cancel()
		ok := err == nil
		for _, w := range want {
			ok = ok && strings.Contains(out, w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: %s: not %q within %s:\n%s\nerr: %v", n.ID, strings.Join(args, " "), want, settle, out, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestConfigVersionColdStart: three nodes started together, node 3's file
// behind (version 1 against 2). corosync's nodes each form a ring of
// their own first, then merge; corobus's form one first view together.
// Either way node 3 stops, with corosync's line, and nodes 1 and 2 run on
// in a view of their own.
//
// This is the corobus half; TestOnCorosync runs the same on corosync.
func TestConfigVersionColdStart(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	configVersionColdStart(t, netcluster.Corobus)
}

func configVersionColdStart(t *testing.T, b netcluster.Backend) {
	netcluster.RequireBackend(t, b)
	c := netcluster.Start(t, netcluster.Options{Nodes: 3, Backend: b, NoWait: true, FileKeys: map[int]map[string]string{
		1: {"totem.config_version": "2"}, 2: {"totem.config_version": "2"}, 3: {"totem.config_version": "1"}}})
	keepLogs(t, c)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	waitStopped(t, n3)
	if err := n3.ExitErr(); err != nil {
		t.Errorf("node 3 exited with %v, want status 0", err)
	}
	if !strings.Contains(n3.LogText(), olderLine) {
		t.Errorf("node 3's log lacks %q:\n%s", olderLine, n3.LogTail(40))
	}
	c.WaitView(t, settle, []*netcluster.Node{n1, n2}, []uint32{1, 2})
	waitStatus(t, settle, "two nodes", func(st quorumStatus) bool { return st.nodes == 2 && st.quorate }, n1, n2)
	for _, n := range []*netcluster.Node{n1, n2} {
		if strings.Contains(n.LogText(), "Received config version") {
			t.Errorf("node %d (version 2) logged a version mismatch:\n%s", n.ID, n.LogTail(40))
		}
	}
}
