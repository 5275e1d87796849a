package quorum

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestCfgtoolKillExitStatus: a node stopped by another node's
// `corosync-cfgtool -k` exits with status 255, as corosync does ("Corosync
// Cluster Engine exiting with status -1 at cfg.c"; systemd then marks
// corosync.service failed), while `corosync-cfgtool -H` stops a node with
// status 0. corobus's `up` exited 0 in both cases.
func TestCfgtoolKillExitStatus(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, Keys: map[string]string{"quorum.two_node": "1"}})
	keepLogs(t, c)
	n1, n2 := c.Node(1), c.Node(2)
	waitStatus(t, settle, "two nodes", func(st quorumStatus) bool { return st.nodes == 2 }, n1, n2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n1.Run(ctx, "corosync-cfgtool", "-k", "2"); err != nil {
		t.Fatalf("corosync-cfgtool -k 2: %v\n%s", err, out)
	}
	waitStopped(t, n2)
	var ee *exec.ExitError
	if err := n2.ExitErr(); !errors.As(err, &ee) || ee.ExitCode() != 255 {
		t.Errorf("node 2 killed by corosync-cfgtool -k exited with %v, want exit status 255 (corosync's)", err)
	}
	if out, err := n1.Run(ctx, "corosync-cfgtool", "-H"); err != nil {
		t.Fatalf("corosync-cfgtool -H: %v\n%s", err, out)
	}
	waitStopped(t, n1)
	if err := n1.ExitErr(); err != nil {
		t.Errorf("node 1 shut down by corosync-cfgtool -H exited with %v, want status 0", err)
	}
}

func waitStopped(t *testing.T, n *netcluster.Node) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for n.Running() {
		if time.Now().After(deadline) {
			t.Fatalf("node %d still runs %s after being stopped\n%s", n.ID, settle, n.LogTail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
