// Package e2e runs the real corobus binary: `go build` once, then nodes
// started with `corobus up` as a user would, driven through the client
// verbs. Nothing here reaches into a process; it only uses what the README
// shows.
//
// A test that owns everything it touches — its processes in network (and
// mount) namespaces of its own, its state in t.TempDir, /dev/shm entries
// told apart by its gateway's pid — calls t.Parallel(): most of its time
// is spent waiting (a node forming, a client's track window, an idle
// window), and running two at once is what keeps the package's wall time
// down. A test stays serial when it listens on the root namespace's ports
// (deploy/local's fixed ones, or ports picked free and then released) or
// starts a real corosync, which runs SCHED_RR 99 and would starve the
// others' timeouts; serial tests all run before the parallel ones. A test
// whose nodes need only a loopback runs them in a network namespace of
// their own where the machine can make one (ownNetwork), and is parallel
// there.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/internal/testlog"
	"github.com/corobus/corobus/tests/netcluster"
)

// binary is the corobus executable built for this test run, and where it
// runs: the root network namespace, or net's (ownNetwork).
type binary struct {
	path string
	net  *netcluster.Node
}

func buildBinary(t testing.TB) binary {
	t.Helper()
	return binary{path: netcluster.Build(t)}
}

// ownNetwork runs b's processes — `corobus up` and the client verbs — in
// a network namespace of their own (a one-node netcluster's, loopback up,
// its node never started) and makes t a parallel test, when the machine
// can make one: their ports and the gateway's abstract socket names are
// then the test's alone, and it need not wait for the serial tests. Where
// it cannot (not root, -short, no namespaces), b stays in the root
// namespace and t serial, as before.
func ownNetwork(t *testing.T, b binary) binary {
	t.Helper()
	if testing.Short() || netcluster.Available() != nil {
		return b
	}
	t.Parallel()
	b.net = netcluster.Start(t, netcluster.Options{Nodes: 1, NoStart: true, Binary: b.path}).Node(1)
	return b
}

// command is `corobus args…` where b runs; ctx kills it.
func (b binary) command(ctx context.Context, args ...string) *exec.Cmd {
	if b.net != nil {
		return b.net.Command(ctx, b.path, args...)
	}
	return exec.CommandContext(ctx, b.path, args...)
}

// budget is a context for a test's processes that ends at most limit from
// now and in any case margin before go test's -timeout (t.Deadline), which
// panics the test binary past every cleanup: a test whose processes would
// outlive the binary (a cluster started detached, a script in a process
// group of its own) ends them at this context's end, while its cleanups
// can still run. margin covers the cleanups.
func budget(t testing.TB, limit, margin time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(limit)
	if tt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := tt.Deadline(); ok && d.Add(-margin).Before(deadline) {
			deadline = d.Add(-margin)
		}
	}
	return context.WithDeadline(context.Background(), deadline)
}

// sleep waits d, or fails the test when ctx ends first.
func sleep(t testing.TB, ctx context.Context, d time.Duration) {
	t.Helper()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		t.Fatalf("the test's time is up (%v): go test's -timeout is near", context.Cause(ctx))
	}
}

// repoFile is a path inside the repository.
func repoFile(parts ...string) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(here), "..", ".."}, parts...)...)
}

// run runs a client verb and returns its stdout; stderr is in the error.
func (b binary) run(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := b.command(ctx, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("corobus %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// upProcess is a running `corobus up`.
type upProcess struct {
	cmd  *exec.Cmd
	out  *testlog.Buffer
	done chan error
}

// up starts `corobus up args…`; the node is stopped at the end of the test
// if the test did not stop it.
func (b binary) up(t testing.TB, env []string, args ...string) *upProcess {
	t.Helper()
	cmd := b.command(context.Background(), append([]string{"up"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Killed with the test binary (go test's -timeout panics past the
	// cleanup below); its layers follow it (their own parent-death
	// signal). Pdeathsig follows the forking thread, which the Go runtime
	// keeps unless a goroutine locked to it exits: none here does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting corobus up: %v", err)
	}
	p := &upProcess{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
			}
		}
		// Every node an e2e test runs checks least privilege on the bus
		// too: a layer that used a subject outside its grant is a bug (the
		// layer says so; a test's own refused client does not count).
		for _, line := range strings.Split(p.out.String(), "\n") {
			if strings.Contains(line, "the layer used a subject outside its grant") {
				t.Errorf("a layer used a subject outside its bus grant: %s", line)
			}
		}
		if t.Failed() {
			t.Logf("corobus up %s output:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// exited reports an unexpected exit of the node, so that a test waiting
// for a condition fails at once with the node's output instead of timing out.
func (p *upProcess) exited() error {
	select {
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("corobus up exited (%v):\n%s", err, p.out.String())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for the exit status.
func (p *upProcess) stop(t testing.TB) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling corobus up: %v", err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("corobus up did not exit 30 s after SIGTERM\n%s", p.out.String())
		return nil
	}
}

// nodeStatus is the subset of `corobus status --json` the tests read.
type nodeStatus struct {
	Node uint32 `json:"node"`
	Bus  struct {
		JetStream  bool   `json:"jetstream"`
		MetaLeader string `json:"meta_leader"`
		Routes     []struct {
			Server string `json:"server"`
		} `json:"routes"`
		Peers []struct {
			Server  string `json:"server"`
			Offline bool   `json:"offline"`
			Current bool   `json:"current"`
		} `json:"peers"`
	} `json:"bus"`
	Totem *struct {
		Members []uint32 `json:"members"`
		Ring    struct {
			Rep uint32 `json:"rep"`
		} `json:"ring"`
	} `json:"totem"`
	Layers []struct {
		Layer    string `json:"layer"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
	} `json:"layers"`
}

func (b binary) status(t testing.TB, env []string, args ...string) (nodeStatus, error) {
	t.Helper()
	out, err := b.run(t, env, append([]string{"status", "--json"}, args...)...)
	if err != nil {
		return nodeStatus{}, err
	}
	var st nodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nodeStatus{}, fmt.Errorf("decoding status: %w\n%s", err, out)
	}
	return st, nil
}

// eventually polls cond until it returns nil or the deadline passes:
// every 100 ms for the first second, then half as often again each time,
// up to twice a second. A cond often runs processes (`corobus status`:
// some 60 ms of CPU each, per node), and the package's parallel tests
// polling at once every 100 ms for as long as they waited kept a 2-vCPU
// machine busy looking.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	pause := 100 * time.Millisecond
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		var fatal fatalError
		if errors.As(err, &fatal) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(pause)
		if time.Since(start) > time.Second {
			pause = min(pause*3/2, 500*time.Millisecond)
		}
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

// fatalError stops eventually at once: waiting longer cannot help.
type fatalError struct{ error }

// checkAlive turns an exited node into a fatalError.
func checkAlive(procs ...*upProcess) error {
	for _, p := range procs {
		if p == nil {
			continue
		}
		if err := p.exited(); err != nil {
			return fatalError{err}
		}
	}
	return nil
}

// descendants lists the pids whose parent chain reaches pid.
func descendants(pid int) []int {
	parents := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces; fields resume after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parents[p] = pp
	}
	var out []int
	for p := range parents {
		for q := parents[p]; q > 1; q = parents[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; only its parent has not reaped it yet.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}
