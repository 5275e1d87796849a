package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taskVersion is the task the Taskfile names for machines without one.
const taskVersion = "github.com/go-task/task/v3/cmd/task@v3.54.0"

// TestLocalClusterFromTheTaskfile: `task local:up` starts the README's
// three-node cluster, each node in a network namespace of its own, with
// its state private to the test and its routes protected by a cluster key
// made into that state; corosync-cmapctl in each namespace talks
// to that namespace's node as soon as local:up returns, also when it runs
// again on the state it kept; idle, the nodes log no repeating line;
// `task local:down` leaves nothing running.
//
// The nodes run detached (setsid), outside the test binary's lifetime: the
// test's steps run in a budget that ends two minutes before go test's
// -timeout, so that a hung step fails the test while its cleanup — `task
// local:down`, then whatever of this cluster's state directory still
// runs — can still stop the cluster.
func TestLocalClusterFromTheTaskfile(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	if testing.Short() {
		t.Skip("three real nodes: skipped in -short")
	}
	cmapctl := requireRealClients(t, "the local cluster's namespaces", needs{commands: []string{"corosync-cmapctl", "ip"}})[0]
	if err := exec.Command("ip", "netns", "list").Run(); err != nil {
		t.Skipf("ip netns does not work here (%v): skipping", err)
	}
	task := []string{"task"}
	if _, err := exec.LookPath("task"); err != nil {
		// Installed once rather than `go run` per call: each go run links
		// the binary again, and the test calls it a dozen times.
		bin := t.TempDir()
		install := exec.Command("go", "install", taskVersion)
		install.Env = append(os.Environ(), "GOBIN="+bin)
		if out, err := install.CombinedOutput(); err != nil {
			t.Skipf("no task runner (go install %s: %v): skipping\n%s", taskVersion, err, out)
		}
		task = []string{filepath.Join(bin, "task")}
	}
	state := t.TempDir()
	env := append(os.Environ(), "LOCALCLUSTER_STATE="+state)
	run := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, task[0], append(append(task[1:], "--dir", repoFile()), args...)...)
		cmd.Env = env
		// task and the cluster.sh it runs, all of them, when ctx ends: a
		// cluster.sh left starting nodes would start them after the
		// cleanup's local:down. The nodes leave this group (setsid).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ctx, cancel := budget(t, 10*time.Minute, 2*time.Minute)
	defer cancel()
	if out, err := run(ctx, "--list"); err != nil {
		t.Skipf("no task runner (%s: %v): skipping\n%s", strings.Join(task, " "), err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := run(ctx, "local:down"); err != nil {
			t.Errorf("task local:down: %v\n%s", err, out)
		}
		// Only this test's: its nodes are the processes on its own state
		// directory, its namespaces those tagged with that directory.
		if out, _ := exec.Command("pgrep", "-f", "system.state_dir="+state+"/").Output(); len(out) > 0 {
			t.Errorf("processes of the local cluster left after local:down: %s", out)
			_ = exec.Command("pkill", "-KILL", "-f", "system.state_dir="+state+"/").Run()
		}
		tag := localTag(t, state)
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), tag) {
			t.Errorf("namespaces of the local cluster left after local:down:\n%s", out)
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], tag+"-") {
					_ = exec.Command("ip", "netns", "del", f[0]).Run()
				}
			}
		}
	})
	if out, err := run(ctx, "local:up"); err != nil {
		t.Fatalf("task local:up: %v\n%s", err, out)
	} else if !strings.Contains(out, "netns mode") {
		t.Fatalf("task local:up did not give each node a namespace:\n%s", out)
	}

	// Each namespace's corosync-cmapctl reaches its own node, at the first
	// try: local:up returns once every node serves its clients. Until 3
	// Dec it returned once the members agreed, and for about 4 s after a
	// local:up on the state of an earlier one every node's clients failed
	// (CS_ERR_LIBRARY: the gateway did not serve yet; seen on every try
	// by hand, and by the restart at the end of this test).
	firstTry := func(when string) {
		t.Helper()
		for n := 1; n <= 3; n++ {
			out, err := run(ctx, "local:exec", "--", fmt.Sprint(n), cmapctl, "-g", "nodelist.local_node_pos")
			if err != nil {
				t.Fatalf("cmapctl in node %d's namespace right after local:up (%s): %v\n%s", n, when, err, out)
			}
			if want := fmt.Sprintf("= %d", n-1); !strings.Contains(out, want) {
				t.Errorf("cmapctl in node %d's namespace (%s): got %q, want %q", n, when, out, want)
			}
			out, err = run(ctx, "local:exec", "--", fmt.Sprint(n), cmapctl, "runtime.members.")
			if err != nil || strings.Count(out, "= joined") != 3 {
				t.Errorf("members in node %d's namespace (%s): %v\n%s", n, when, err, out)
			}
		}
	}
	firstTry("a new cluster")

	// Crypto on, as deployed: the key was made once into the cluster's
	// private state directory, and every node's routes run TLS derived
	// from it, none plain.
	key := state + "/authkey"
	if fi, err := os.Stat(key); err != nil {
		t.Fatalf("the cluster key: %v", err)
	} else if fi.Mode().Perm() != 0o400 {
		t.Errorf("the cluster key %s has mode %v, want 0400", key, fi.Mode().Perm())
	}
	for n := 1; n <= 3; n++ {
		log := readLog(t, state, n)
		if strings.Contains(log, "neither authenticated nor encrypted") {
			t.Errorf("node %d runs plain routes:\n%s", n, log)
		}
		if !regexp.MustCompile(`routes protected .*derived from the cluster key.*` + regexp.QuoteMeta(key)).MatchString(log) {
			t.Errorf("node %d did not log routes protected by %s:\n%s", n, key, log)
		}
	}

	// Idle: no line repeats (a window after the start has settled; the
	// README's five minutes are for a person, see the report). The
	// floods this guards against repeated every 5 s or faster.
	sleep(t, ctx, 5*time.Second)
	before := make([]int, 4)
	for n := 1; n <= 3; n++ {
		before[n] = len(readLog(t, state, n))
	}
	const idle = 30 * time.Second
	sleep(t, ctx, idle)
	for n := 1; n <= 3; n++ {
		added := readLog(t, state, n)[before[n]:]
		seen := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(added), "\n") {
			if l == "" {
				continue
			}
			seen[condition(l)]++
		}
		for c, k := range seen {
			if k > 1 {
				t.Errorf("node %d logged %d times while idle: %s\nall it logged:\n%s", n, k, c, added)
			}
		}
		t.Logf("node %d idle for %v: %d lines", n, idle, len(seen))
	}

	// Down and up again on the state it keeps, as the README's cycle goes.
	if out, err := run(ctx, "local:down"); err != nil {
		t.Fatalf("task local:down: %v\n%s", err, out)
	}
	if out, err := run(ctx, "local:up"); err != nil {
		t.Fatalf("task local:up again: %v\n%s", err, out)
	}
	firstTry("again on the state of the first")
}

func readLog(t *testing.T, state string, n int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("%s/node%d.log", state, n))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// condition is a log line without its time, pid and numbers.
var (
	lineHead = regexp.MustCompile(`^(\S+\s+\| )*\w{3} \d+ [\d:.]+ \[\d+\] `)
	digits   = regexp.MustCompile(`[0-9]+`)
)

func condition(line string) string {
	return digits.ReplaceAllString(lineHead.ReplaceAllString(line, ""), "#")
}

// localTag is the namespace tag cluster.sh derives from the state path.
func localTag(t *testing.T, state string) string {
	out, err := exec.Command("bash", "-c", `printf %s "$1" | sha256sum | cut -c1-8`, "tag", state).Output()
	if err != nil {
		t.Fatal(err)
	}
	return "corobus-" + strings.TrimSpace(string(out))
}
