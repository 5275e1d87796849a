package netcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCorobusRing: three corobus nodes in their own namespaces form one
// ring, seen through corosync-cmapctl and `corobus status` in each; a
// killed node leaves it and comes back, a partition splits it, a heal
// joins it; nothing is left afterwards.
func TestCorobusRing(t *testing.T) {
	t.Parallel() // its cluster is its own: see TestMain
	exerciseRing(t, Corobus)
}

// TestCorosyncRing: the same, unchanged, against a real corosync.
func TestCorosyncRing(t *testing.T) {
	exerciseRing(t, Corosync)
}

func exerciseRing(t *testing.T, b Backend) {
	RequireBackend(t, b)
	var pids []int
	t.Run("ring", func(t *testing.T) {
		c := Start(t, Options{Nodes: 3, Backend: b})
		n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
		for _, n := range c.Nodes {
			pids = append(pids, n.h.pid())
			pids = append(pids, n.PIDs()...)
		}
		pids = append(pids, c.hub.pid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()

		// Each node's IPC is its own: the cmap it answers is its node's.
		for _, n := range c.Nodes {
			eventually(t, time.Minute, fmt.Sprintf("node %d's cmap names node %d", n.ID, n.ID), func() error {
				out, err := n.Run(ctx, "corosync-cmapctl", "-g", "runtime.votequorum.this_node_id")
				if b == Corobus {
					// corobus has no votequorum yet: the node's own
					// nodelist entry is what it can show.
					out, err = n.Run(ctx, "corosync-cmapctl", "-g", "nodelist.local_node_pos")
				}
				if err != nil {
					return err
				}
				want := fmt.Sprintf("= %d", n.ID)
				if b == Corobus {
					want = fmt.Sprintf("= %d", n.ID-1)
				}
				if !strings.Contains(out, want) {
					return fmt.Errorf("got %q, want %q", strings.TrimSpace(out), want)
				}
				return nil
			})
		}
		// What a corosync client sees agrees with the engine.
		if _, err := exec.LookPath("corosync-cmapctl"); err == nil {
			c.waitCmap(t, time.Minute, c.Nodes, []uint32{1, 2, 3})
		}
		if b == Corobus {
			for _, n := range c.Nodes {
				out, err := n.Corobus(ctx, "status", "--json")
				if err != nil {
					t.Fatal(err)
				}
				var st struct {
					Node uint32 `json:"node"`
				}
				if err := json.Unmarshal([]byte(out), &st); err != nil {
					t.Fatalf("status: %v\n%s", err, out)
				}
				if st.Node != n.ID {
					t.Fatalf("node %d's status is node %d's: %s", n.ID, st.Node, out)
				}
			}
		}

		timeout := 2 * time.Minute
		n3.Kill()
		if n3.Running() || len(n3.PIDs()) != 0 {
			t.Fatalf("node 3 killed but still running: %v", n3.PIDs())
		}
		c.WaitView(t, timeout, []*Node{n1, n2}, []uint32{1, 2})
		if err := n3.Start(); err != nil {
			t.Fatal(err)
		}
		c.WaitMembers(t, timeout)
		c.waitCmap(t, timeout, c.Nodes, []uint32{1, 2, 3})

		if err := c.Partition([]int{1, 2}); err != nil {
			t.Fatal(err)
		}
		c.WaitView(t, timeout, []*Node{n1, n2}, []uint32{1, 2})
		c.WaitView(t, timeout, []*Node{n3}, []uint32{3})
		if err := c.Heal(); err != nil {
			t.Fatal(err)
		}
		c.WaitMembers(t, timeout)

		n2.Freeze()
		c.WaitView(t, timeout, []*Node{n1, n3}, []uint32{1, 3})
		n2.Thaw()
		c.WaitMembers(t, timeout)

		if err := n1.Stop(); err != nil {
			t.Fatal(err)
		}
		if code := n1.ExitErr(); code != nil {
			t.Errorf("node 1 stopped with %v", code)
		}
		c.WaitView(t, timeout, []*Node{n2, n3}, []uint32{2, 3})
	})
	// The cluster's cleanup ran with the subtest: nothing it started runs.
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil && !zombie(p) {
			t.Errorf("process %d of the cluster survived its cleanup", p)
		}
	}
}

// waitCmap waits until corosync-cmapctl in each node lists want joined.
func (c *Cluster) waitCmap(t *testing.T, timeout time.Duration, nodes []*Node, want []uint32) {
	t.Helper()
	for _, n := range nodes {
		eventually(t, timeout, fmt.Sprintf("node %d's runtime.members", n.ID), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := n.CmapMembers(ctx)
			if err != nil {
				return err
			}
			if !equalIDs(got, want) {
				return fmt.Errorf("joined %v, want %v", got, want)
			}
			return nil
		})
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPartitionArguments: bad groups are refused before anything changes.
func TestPartitionArguments(t *testing.T) {
	t.Parallel() // its cluster is its own: see TestMain
	c := Start(t, Options{Nodes: 2, NoStart: true, Binary: "/bin/true"})
	if err := c.Partition([]int{1}, []int{1, 2}); err == nil {
		t.Error("a node in two groups was accepted")
	}
	if err := c.Partition([]int{3}); err == nil {
		t.Error("node 3 of 2 was accepted")
	}
	// Nodes cut off answer nobody; healed, they reach each other. The
	// listener and the dialer are this test binary, run in the nodes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := c.Node(2).Addr + ":7000"
	l := c.Node(2).Command(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	l.Env = append(l.Env, "NETCLUSTER_HELPER=listen "+addr)
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Process.Kill(); _ = l.Wait() }()
	dial := func() error {
		d := c.Node(1).Command(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
		d.Env = append(d.Env, "NETCLUSTER_HELPER=dial "+addr)
		out, err := d.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	eventually(t, 10*time.Second, "node 1 reaches node 2", dial)
	if err := c.Partition([]int{1}, []int{2}); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil {
		t.Fatal("node 1 reached node 2 across a partition")
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node 1 reaches node 2 after heal", dial)
	if err := c.Partition([]int{1, 2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node 1 reaches node 2 in one group", dial)
}

// TestHelperProcess is not a test: TestPartitionArguments runs this
// binary inside a node as a TCP listener or dialer.
func TestHelperProcess(t *testing.T) {
	verb, addr, ok := strings.Cut(os.Getenv("NETCLUSTER_HELPER"), " ")
	if !ok {
		return
	}
	switch verb {
	case "listen":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			conn, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			conn.Close()
		}
	case "dial":
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		conn.Close()
		os.Exit(0)
	}
}

// TestConf: the generated file has the defaults, the caller's keys and the
// nodelist with per-node keys.
func TestConf(t *testing.T) {
	c := &Cluster{opts: Options{Token: 1500 * time.Millisecond, Keys: map[string]string{
		"totem.join": "60", "quorum.expected_votes": "3", "logging.timestamp": "",
	}, NodeKeys: map[int]map[string]string{2: {"quorum_votes": "2"}}}}
	for id := 1; id <= 2; id++ {
		c.Nodes = append(c.Nodes, &Node{ID: uint32(id), Name: fmt.Sprintf("node%d", id), Addr: nodeAddr(id), stateInNode: "/s"})
	}
	got := c.conf(c.Nodes[0])
	for _, want := range []string{
		"\ttoken: 1500\n", "\tjoin: 60\n", "\texpected_votes: 3\n", "\tstate_dir: /s\n",
		"\t\tring0_addr: 172.30.0.2\n\t\tquorum_votes: 2\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "timestamp") {
		t.Errorf("an empty value did not remove the default:\n%s", got)
	}
}
