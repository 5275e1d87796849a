package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestSecondUpOnAStateDirIsRefused: a second `corobus up` on a state
// directory a node uses exits non-zero at once, naming the directory and
// the owner's pid, and the first node goes on as before: same layer
// processes, no restarts, its data, no complaint in its log. A node whose
// `corobus up` was SIGKILLed, or that was killed whole, starts again on
// the same directory.
func TestSecondUpOnAStateDirIsRefused(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	c := netcluster.Start(t, netcluster.Options{Nodes: 1})
	n := c.Node(1)
	bin := c.Options().Binary
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := n.Corobus(ctx, "cmap", "-s", "e2e.mark", "str", "first"); err != nil {
		t.Fatal(err)
	}
	// The node's service processes answer status once they run (its $SRV
	// record): wait for every layer a default node runs, so that the
	// snapshot is the node's whole, not one taken while svcmgr still
	// starts services.
	var before map[string]string
	eventually(t, time.Minute, "status lists every layer of the node", func() error {
		before = layerPIDs(t, ctx, n)
		for _, want := range []string{"bus", "objdb", "loader", "svcmgr", "sync", "ipc", "cfg", "quorum", "votequorum"} {
			if _, ok := before[want]; !ok {
				return fmt.Errorf("%s not listed: %v", want, before)
			}
		}
		return nil
	})
	logBefore := n.LogText()

	// Started as a user would: same file, same namespace.
	second := n.Command(ctx, bin, "up", "-c", n.ConfPath)
	var out bytes.Buffer
	second.Stdout, second.Stderr = &out, &out
	err := second.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("second up: %v, want a non-zero exit\n%s", err, out.String())
	}
	for _, want := range []string{n.StateDir, fmt.Sprintf("pid %d", n.Pid())} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("second up's message lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "starting node") {
		t.Errorf("second up started something:\n%s", out.String())
	}

	after := layerPIDs(t, ctx, n)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the first node's layers changed: %v, then %v", before, after)
	}
	if got, err := n.Corobus(ctx, "cmap", "-g", "e2e.mark"); err != nil || !strings.Contains(got, "first") {
		t.Errorf("the first node's data: %q %v", got, err)
	}
	if added := strings.TrimPrefix(n.LogText(), logBefore); strings.Contains(added, " error ") || strings.Contains(added, "restarting") {
		t.Errorf("the first node's log after the refused up:\n%s", added)
	}

	// kill -9 of up alone: its layers stop on their own (parent-death
	// signal), and a new up waits for them, then starts.
	if err := syscall.Kill(n.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, n)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(t, 2*time.Minute)
	if got, err := n.Corobus(ctx, "cmap", "-g", "e2e.mark"); err != nil || !strings.Contains(got, "first") {
		t.Errorf("after a restart on the directory: %q %v", got, err)
	}

	// The whole node SIGKILLed: no lock is left behind.
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(t, 2*time.Minute)
}

// layerPIDs is layer name → pid and restarts, from `corobus status`.
func layerPIDs(t *testing.T, ctx context.Context, n *netcluster.Node) map[string]string {
	t.Helper()
	out, err := n.Corobus(ctx, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st nodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := map[string]string{}
	for _, l := range st.Layers {
		m[l.Layer] = fmt.Sprintf("pid %d restarts %d", l.PID, l.Restarts)
	}
	if len(m) == 0 {
		t.Fatalf("no layers in status:\n%s", out)
	}
	return m
}

func waitGone(t *testing.T, n *netcluster.Node) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for n.Running() {
		if time.Now().After(deadline) {
			t.Fatal("corobus up still running a minute after SIGKILL")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
