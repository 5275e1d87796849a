package cpgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// leavePath is one way node 3's CPG member can go; act makes it happen,
// given the member's pid on node 3.
type leavePath struct {
	name   string
	reason int // what node 1's member is told, as a real corosync 3.1.7 tells it
	act    func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int)
}

// The reason a libcpg member on node 1 is given when node 3's member goes,
// in every way it can go (docs/cpg.md): each path runs on three real
// corosync daemons first (the corosync subtests), which give exactly the
// reasons of the table, then on corobus, which must give the same. corobus
// gave PROCDOWN for corosync-cfgtool -k (the killed node stopped its
// layers in order, the bus last), and PROCDOWN or NODEDOWN for a kill -9
// of `corobus up` (its layers got SIGTERM).
//
// The corosync paths are TestLeaveReasonsOnCorosync's, a serial test: go
// test runs every serial test before any parallel one, so a real corosync
// (SCHED_RR 99, which would starve the corobus clusters) never runs beside
// them, and the paths of either engine, each on a cluster of its own, run
// at once.
func TestLeaveReasons(t *testing.T) {
	t.Parallel() // corobus only: after the serial tests' corosync ones
	leaveReasons(t, netcluster.Corobus)
}

// TestLeaveReasonsOnCorosync is TestLeaveReasons on three real corosync
// daemons: the reasons of the table are corosync 3.1.7's.
func TestLeaveReasonsOnCorosync(t *testing.T) {
	leaveReasons(t, netcluster.Corosync)
}

// leaveReasons runs every path on backend b, each on a cluster of its
// own, at once.
func leaveReasons(t *testing.T, b netcluster.Backend) {
	prog := BuildC(t, "cpgcheck")
	paths := []leavePath{
		{"process exits", 5, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			if err := syscall.Kill(member, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}},
		{"engine killed", 3, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			// `kill -9 $(pidof corosync)`: corosync, or corobus up,
			// whose layers are its children.
			if err := syscall.Kill(cl.Node(3).Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}},
		{"corosync-cfgtool -k 3", 3, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			if out, err := cl.Node(1).Run(ctx, "corosync-cfgtool", "-k", "3"); err != nil {
				t.Fatalf("corosync-cfgtool -k 3: %v\n%s", err, out)
			}
		}},
		{"corosync-cfgtool -H on node 3", 5, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			if out, err := cl.Node(3).Run(ctx, "corosync-cfgtool", "-H"); err != nil {
				t.Fatalf("corosync-cfgtool -H: %v\n%s", err, out)
			}
		}},
		{"SIGTERM to the engine", 5, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			if err := cl.Node(3).Stop(); err != nil {
				t.Fatal(err)
			}
		}},
		{"network cut", 3, func(t *testing.T, ctx context.Context, cl *netcluster.Cluster, member int) {
			if err := cl.Partition([]int{1, 2}, []int{3}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel() // a cluster of its own, of one engine: see TestLeaveReasons
			got := leaveReason(t, b, prog, p)
			t.Logf("%s, %s: node 1's member saw %s", b, p.name, got)
			if !strings.HasSuffix(got, fmt.Sprintf("/%d", p.reason)) {
				t.Errorf("%s, %s: node 1's member saw node 3's member leave as %s, want reason %d", b, p.name, got, p.reason)
			}
		})
	}
}

// leaveReason starts three nodes with one member each in one group, makes
// node 3's member go by path, and returns node 1's member's view of it
// (node/pid/reason, from the confchg's left list).
func leaveReason(t *testing.T, b netcluster.Backend, prog string, p leavePath) string {
	cl := netcluster.Start(t, netcluster.Options{Nodes: 3, Backend: b})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var pids []int
	for id := 1; id <= 3; id++ {
		cmd := cl.Node(id).Command(ctx, prog, "-g", "leave", "-n", "0", "-w", "3", "-l", "600",
			"-o", filepath.Join(dir, fmt.Sprintf("n%d.log", id)))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, cmd.Process.Pid)
	}
	log1 := filepath.Join(dir, "n1.log")
	read := func() string { b, _ := os.ReadFile(log1); return string(b) }
	// The nodes share the machine's pid namespace: the pids the members
	// log are the ones started here.
	three := regexp.MustCompile(`C m=[^ ,]+,[^ ,]+,[^ ,]+ `)
	deadline := time.Now().Add(2 * time.Minute)
	for !three.MatchString(read()) {
		if time.Now().After(deadline) {
			t.Fatalf("node 1's member never saw three members:\n%s", read())
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.act(t, ctx, cl, pids[2])
	re := regexp.MustCompile(`l=(3/` + fmt.Sprint(pids[2]) + `/\d+)`)
	deadline = time.Now().Add(time.Minute)
	for {
		if m := re.FindStringSubmatch(read()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1's member never saw node 3's member (pid %d) leave:\n%s\n--- node 3:\n%s", pids[2], read(), cl.Node(3).LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
