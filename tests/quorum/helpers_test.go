// Package quorum runs quorum scenarios on multi-node clusters
// (tests/netcluster: each node in network namespaces of its own), asserted
// on every surviving node through corosync's real clients, and compares
// the tools' output on three corobus nodes with three corosync nodes.
//
// The corobus scenarios call t.Parallel(): each cluster is netcluster's,
// in namespaces held by its own processes with no global name, and most
// of a scenario is waiting for views and quorum to settle. What starts a
// real corosync is serial and runs first: corosync runs SCHED_RR 99 and
// would starve a scenario's deadlines. A scenario compared with corosync, or run on both engines,
// has its corosync half in TestOnCorosync (its subtests, corosync beside
// corosync, run at once) and its corobus half among the parallel tests
// (corosync_test.go).
package quorum

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// requireTools skips unless corosync's client tools are installed.
func requireTools(t testing.TB) {
	t.Helper()
	for _, c := range []string{"corosync-quorumtool", "corosync-cfgtool", "corosync-cmapctl", "corosync-cpgtool"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (apt-get install corosync; .ci/run does): skipping", c)
		}
	}
}

// quorumStatus is what corosync-quorumtool -s prints, parsed.
type quorumStatus struct {
	text                              string
	exit                              int
	quorate                           bool
	nodes, expected, total, quorumVal int
	flags                             string
}

// status runs corosync-quorumtool -s in node n.
func status(ctx context.Context, n *netcluster.Node) (quorumStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := n.Command(ctx, "corosync-quorumtool", "-s").CombinedOutput()
	st := quorumStatus{text: string(out)}
	if ee, ok := err.(*exec.ExitError); ok {
		st.exit = ee.ExitCode()
	} else if err != nil {
		return st, err
	}
	if st.exit != 0 && st.exit != 2 {
		return st, fmt.Errorf("corosync-quorumtool -s on node %d: exit %d\n%s", n.ID, st.exit, out)
	}
	sc := bufio.NewScanner(strings.NewReader(st.text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		num := func() int { var x int; fmt.Sscan(v, &x); return x }
		switch k {
		case "Quorate":
			st.quorate = v == "Yes"
		case "Nodes":
			st.nodes = num()
		case "Expected votes":
			st.expected = num()
		case "Total votes":
			st.total = num()
		case "Quorum":
			st.quorumVal = num()
		case "Flags":
			st.flags = v
		}
	}
	return st, nil
}

// waitStatus polls corosync-quorumtool -s in each node until ok accepts
// what it prints, and fails with every node's last status and log tail.
func waitStatus(t *testing.T, timeout time.Duration, what string, ok func(quorumStatus) bool, nodes ...*netcluster.Node) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for {
			st, err := status(ctx, n)
			if err == nil && ok(st) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: %s: not within %s\n%s\nerr: %v\nlog tail:\n%s", n.ID, what, timeout, st.text, err, n.LogTail(40))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// buildClient compiles tests/e2e/testdata/quorumclient.c.
func buildClient(t testing.TB) string {
	t.Helper()
	for _, h := range []string{"corosync/quorum.h", "corosync/votequorum.h", "corosync/cfg.h"} {
		if _, err := os.Stat(filepath.Join("/usr/include", h)); err != nil {
			t.Skipf("%s is missing (apt-get install libquorum-dev libvotequorum-dev libcfg-dev): skipping", h)
		}
	}
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "..", "e2e", "testdata", "quorumclient.c")
	out := filepath.Join(t.TempDir(), "quorumclient")
	if b, err := exec.Command("gcc", "-Wall", "-O2", "-o", out, src, "-lquorum", "-lvotequorum", "-lcfg").CombinedOutput(); err != nil {
		t.Fatalf("building the client: %v\n%s", err, b)
	}
	return out
}

// client is quorumclient running in a node, its output collected.
type client struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (c *client) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *client) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startClient runs the client in node n (timestamped lines) until the
// test ends, with env added to its environment (QC_MODEL0=1: libquorum's
// model v0), and waits until it registered and dispatched the current
// state its trackstarts are answered with.
func startClient(t *testing.T, n *netcluster.Node, path string, env ...string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{done: make(chan struct{})}
	c.cmd = n.Command(ctx, path)
	c.cmd.Env = append(append(c.cmd.Env, "QC_TIME=1"), env...)
	c.cmd.Stdout, c.cmd.Stderr = c, c
	if err := c.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting the client in node %d: %v", n.ID, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	// Both engines answer a trackstart with CS_TRACK_CHANGES by sending
	// the current state first (libquorum: the view, after the nodelist
	// with model v1; libvotequorum: the nodelist, then the quorum), and
	// the client dispatches it after printing "ready". A test that
	// counts the callbacks a step causes (linesSince) starts the step
	// once they are out: with "ready" alone, a loaded machine let the
	// first step's lines begin with the initial votequorum notification
	// (tests/quorum's TestLastManStandingRejoinMatchesCorosync, 1 run of
	// 2 with two busy loops beside the package).
	view := "quorum "
	if slices.Contains(env, "QC_MODEL0=1") {
		view = "quorum0 "
	}
	deadline := time.Now().Add(time.Minute)
	for !c.initialDispatched(view) {
		select {
		case <-c.done:
			t.Fatalf("the client in node %d ended before it registered:\n%s", n.ID, c.text())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client in node %d did not register and dispatch the current state:\n%s", n.ID, c.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// initialDispatched reports whether the client printed "ready", then
// libquorum's view notification (view: "quorum " or "quorum0 ") and
// libvotequorum's quorum notification.
func (c *client) initialDispatched(view string) bool {
	ready, gotView, gotVQ := false, false, false
	for _, l := range strings.Split(c.text(), "\n") {
		_, rest, _ := strings.Cut(l, " ") // the time stamp
		switch {
		case strings.HasPrefix(rest, "ready "):
			ready = true
		case ready && strings.HasPrefix(rest, view):
			gotView = true
		case ready && strings.HasPrefix(rest, "vq-quorum "):
			gotVQ = true
		}
	}
	return ready && gotView && gotVQ
}

// waitLine waits until the client printed, after time since (ms since the
// epoch), a line containing want, and returns that line's time.
func (c *client) waitLine(t *testing.T, since int64, want string, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range strings.Split(c.text(), "\n") {
			var ms int64
			if _, err := fmt.Sscan(l, &ms); err != nil || ms < since {
				continue
			}
			if strings.Contains(l, want) {
				return ms
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client printed no %q after %d:\n%s", want, since, c.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nowMS() int64 { return time.Now().UnixMilli() }

// linesSince returns the lines the client printed at or after since (ms
// since the epoch), without their times.
func (c *client) linesSince(since int64) []string {
	var out []string
	for _, l := range strings.Split(c.text(), "\n") {
		var ms int64
		if _, err := fmt.Sscan(l, &ms); err != nil || ms < since {
			continue
		}
		_, rest, _ := strings.Cut(l, " ")
		out = append(out, rest)
	}
	return out
}

// keepLogs writes every node's whole log into $QUORUM_TEST_LOGS/<test>/
// when the test fails (the harness prints only their tails).
func keepLogs(t *testing.T, c *netcluster.Cluster) {
	dir := os.Getenv("QUORUM_TEST_LOGS")
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		d := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
		_ = os.MkdirAll(d, 0o755)
		for _, n := range c.Nodes {
			_ = os.WriteFile(filepath.Join(d, fmt.Sprintf("node%d.log", n.ID)), []byte(n.LogText()), 0o644)
		}
		t.Logf("whole logs in %s", d)
	})
}
