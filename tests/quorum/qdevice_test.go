package quorum

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// Debian's corosync-qdevice, unmodified, registers with corobus's
// votequorum on both nodes of a two-node cluster, polls with the view's
// ring id and casts its vote (corosync-qnetd, algorithm ffsplit, runs in
// node 1's namespace): the quorum tool shows the device and its vote, and
// when node 2 is killed node 1 stays quorate with the device's vote.
//
// A parallel test: corosync-qdevice and corosync-qnetd, unlike corosync,
// ask for no real-time scheduling (neither calls sched_setscheduler), and
// both run in the cluster's own namespaces.
func TestQdeviceRegisters(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	for _, c := range []string{"corosync-qdevice", "corosync-qnetd"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (apt-get install corosync-qdevice corosync-qnetd): skipping", c)
		}
	}
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, MountNS: true, Keys: map[string]string{
		"quorum.device.model":         "net",
		"quorum.device.votes":         "1",
		"quorum.device.net.host":      "172.30.0.1",
		"quorum.device.net.tls":       "off",
		"quorum.device.net.algorithm": "ffsplit",
	}})
	keepLogs(t, c)
	n1, n2 := c.Node(1), c.Node(2)
	ctx, cancel := context.WithCancel(context.Background())
	var daemons []*exec.Cmd
	t.Cleanup(func() {
		cancel()
		for _, d := range daemons {
			_ = d.Wait()
		}
	})
	start := func(n *netcluster.Node, name string, args ...string) {
		t.Helper()
		if _, err := n.Run(ctx, "mkdir", "-p", "/run/corosync-qdevice", "/run/corosync-qnetd"); err != nil {
			t.Fatal(err)
		}
		d := n.Command(ctx, name, args...)
		var out strings.Builder
		d.Stdout, d.Stderr = &out, &out
		if err := d.Start(); err != nil {
			t.Fatalf("starting %s in node %d: %v", name, n.ID, err)
		}
		daemons = append(daemons, d)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s in node %d:\n%s", name, n.ID, out.String())
			}
		})
	}
	// The device's daemon reads its settings from cmap at start.
	waitStatus(t, settle, "the services serving", func(st quorumStatus) bool { return st.nodes == 2 && st.expected == 3 }, n1, n2)
	start(n1, "corosync-qnetd", "-f", "-s", "off")
	time.Sleep(time.Second)
	start(n1, "corosync-qdevice", "-f", "-d")
	start(n2, "corosync-qdevice", "-f", "-d")

	waitStatus(t, settle, "quorate with the device's vote", func(st quorumStatus) bool {
		return st.quorate && st.nodes == 2 && st.expected == 3 && st.total == 3 && strings.Contains(st.flags, "Qdevice") &&
			strings.Contains(st.text, "A,V,NMW node1") && strings.Contains(st.text, "         0          1            Qdevice")
	}, n1, n2)
	if err := n2.Kill(); err != nil {
		t.Fatal(err)
	}
	c.WaitView(t, settle, []*netcluster.Node{n1}, []uint32{1})
	waitStatus(t, settle, "node 1 alone, quorate with the device's vote", func(st quorumStatus) bool {
		return st.quorate && st.nodes == 1 && st.total == 2 && strings.Contains(st.flags, "Qdevice")
	}, n1)
}
