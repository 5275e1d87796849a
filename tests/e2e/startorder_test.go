package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestUpServesCmapWhateverTheStartOrder starts a real node again and
// again with its layers' start order disturbed from outside — the loader
// SIGKILLed as soon as it appears (the supervisor restarts it), or held
// stopped for a while (a late loader), or left alone — and finds cmap
// served to corosync-cmapctl every time (issue 15: 2 starts in 90 came up
// without cmap). svcmgr's own 60 starts with a disturbed loader are
// TestDefaultServiceLoadsWhateverTheStartOrder; this is the same through
// the real binary, fewer times.
func TestUpServesCmapWhateverTheStartOrder(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "corosync-cmapctl against restarted nodes", needs{commands: []string{"corosync-cmapctl"}})
	c := netcluster.Start(t, netcluster.Options{Nodes: 1, NoStart: true})
	n := c.Node(1)
	starts := 24
	if v, err := strconv.Atoi(os.Getenv("E2E_UP_STARTS")); err == nil && v > 0 {
		starts = v
	}
	for i := range starts {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		how := []string{"left alone", "loader killed at start", "loader held for 3 s"}[i%3]
		if i%3 != 0 {
			var pid int
			eventually(t, time.Minute, "the loader process", func() error {
				pid = layerPID(n.PIDs(), "loader")
				if pid == 0 {
					return fmt.Errorf("no loader among %v", n.PIDs())
				}
				return nil
			})
			if i%3 == 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			} else {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				time.Sleep(3 * time.Second)
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
		eventually(t, 2*time.Minute, fmt.Sprintf("start %d (%s): cmap served", i, how), func() error {
			if !n.Running() {
				return fatalError{fmt.Errorf("the node exited: %v\n%s", n.ExitErr(), n.LogTail(40))}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := n.Run(ctx, "corosync-cmapctl", "-g", "totem.cluster_name")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "netcluster") {
				return fmt.Errorf("got %q", out)
			}
			return nil
		})
		if err := n.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d starts of a real node, cmap served every time", starts)
}

// TestUnloadableServiceIsSaid: a node whose configured service cannot be
// loaded says so in `corobus status`, with why, and in its log once, and
// keeps trying; its other services run.
func TestUnloadableServiceIsSaid(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	c := netcluster.Start(t, netcluster.Options{Nodes: 1, Keys: map[string]string{"service.name": "nosuch"}})
	n := c.Node(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var status string
	eventually(t, time.Minute, "status says the service is not loaded", func() error {
		out, err := n.Corobus(ctx, "status")
		status = out
		if err != nil {
			return err
		}
		if !strings.Contains(out, "NOT LOADED nosuch") || !strings.Contains(out, "no component nosuch") {
			return fmt.Errorf("status:\n%s", out)
		}
		return nil
	})
	if !strings.Contains(status, "cmap ") {
		t.Errorf("cmap is not loaded beside the missing service:\n%s", status)
	}
	// Several retries later, the log said it once.
	time.Sleep(5 * time.Second)
	if k := strings.Count(n.LogText(), "service not loaded; retrying"); k != 1 {
		t.Errorf("the log says %d times that the service is not loaded, want once (then a summary a minute):\n%s", k, n.LogTail(40))
	}
	t.Logf("status:\n%s", status)
}

// layerPID is the pid of the `corobus <layer>` process among pids.
func layerPID(pids []int, layer string) int {
	for _, p := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "corobus" && args[1] == layer {
			return p
		}
	}
	return 0
}
