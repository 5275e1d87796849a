package loader_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/hdb"
	"github.com/corobus/corobus/loader/loadertest"
)

// buildComponent builds the example component into a temporary directory.
func buildComponent(t testing.TB) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "example")
	cmd := exec.Command("go", "build", "-o", exe, "github.com/corobus/corobus/examples/component")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the example component: %v\n%s", err, out)
	}
	return exe
}

func testSubjects(t testing.TB) bus.Subjects {
	s, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startLoader runs a loader for node on nc until the end of the test.
// loaderNode starts a one-node bus and a loader of node 1 on it with the
// given search path, and returns the bus, a connection and the subjects.
func loaderNode(t *testing.T, path ...string) (*bustest.Node, *nats.Conn, bus.Subjects) {
	t.Helper()
	cl := bustest.StartNode(t)
	nc, err := cl.Server.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subjects := testSubjects(t)
	startLoader(t, nc, subjects, 1, path...)
	return cl, nc, subjects
}

func startLoader(t testing.TB, nc *nats.Conn, subjects bus.Subjects, node uint32, path ...string) {
	t.Helper()
	loadertest.Start(t, nc, subjects, node, path...)
}

// proc is a running component process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startComponent(t testing.TB, exe, url string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(exe, append([]string{"--bus", url, "--prefix", "corobus.test", "--node", "1"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the component: %v", err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if testing.Verbose() {
				t.Logf("component %d: %s", cmd.Process.Pid, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { <-copied; p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newClient(t testing.TB, nc *nats.Conn, subjects bus.Subjects) *loader.Client {
	t.Helper()
	c, err := loader.NewClient(loader.ClientConfig{Conn: nc, Subjects: subjects, Node: 1, Log: bustest.Logger(t), HoldInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// reference polls Reference until the component is announced.
func reference(t testing.TB, c *loader.Client, name string, version uint32) hdb.Handle {
	t.Helper()
	var h hdb.Handle
	waitFor(t, fmt.Sprintf("%s version %d to be resolvable", name, version), 20*time.Second, func() bool {
		var err error
		h, err = c.Reference(context.Background(), name, version)
		return err == nil
	})
	return h
}

func list(t testing.TB, nc *nats.Conn, subjects bus.Subjects) loader.Listing {
	t.Helper()
	r, err := nc.Request(subjects.LcrAPI(1, loader.APIList), nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var l loader.Listing
	if err := json.Unmarshal(r.Data, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSearchPathAndReferences runs components in two namespaces and checks
// that references follow the search path, that a handle re-resolves when
// the first namespace's component leaves, and the reference counts.
func TestSearchPathAndReferences(t *testing.T) {
	exe := buildComponent(t)
	cl, nc, subjects := loaderNode(t, "node1", "cluster")
	clusterWide := startComponent(t, exe, cl.Server.AdminURL(), "--namespace", "cluster", "--interval", "100ms")
	c := newClient(t, nc, subjects)

	h := reference(t, c, "example", 1)
	if tg, _ := c.Target(h); tg.Namespace != "cluster" {
		t.Fatalf("resolved to %+v, want the cluster namespace", tg)
	}
	local := startComponent(t, exe, cl.Server.AdminURL(), "--interval", "100ms")
	// The node's own namespace comes first: the held handle moves to it.
	waitFor(t, "the handle to re-resolve to node1", 10*time.Second, func() bool {
		tg, _ := c.Target(h)
		return tg.Namespace == "node1"
	})
	r, err := c.Request(context.Background(), h, "whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(r.Data), fmt.Sprintf(`"pid":%d`, local.cmd.Process.Pid)) {
		t.Fatalf("served by %s, want the node-local instance (pid %d)", r.Data, local.cmd.Process.Pid)
	}
	// Version selection: there is no version 2.
	if _, err := c.Reference(context.Background(), "example", 2); !errors.Is(err, loader.ErrNotFound) {
		t.Fatalf("reference to version 2: %v, want ErrNotFound", err)
	}
	h2 := reference(t, c, "example", 1)
	waitFor(t, "2 references in the listing", 10*time.Second, func() bool {
		for _, ci := range list(t, nc, subjects).Components {
			if ci.Namespace == "node1" && ci.Refs == 2 {
				return true
			}
		}
		return false
	})
	if err := c.Release(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Request(context.Background(), h2, "echo", nil); !errors.Is(err, hdb.ErrStale) {
		t.Fatalf("request through a released handle: %v, want ErrStale", err)
	}
	// The local instance stops: the handle falls back to the cluster's.
	_ = local.cmd.Process.Signal(os.Interrupt)
	<-local.exited
	r, err = c.Request(context.Background(), h, "whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(r.Data), fmt.Sprintf(`"pid":%d`, clusterWide.cmd.Process.Pid)) {
		t.Fatalf("served by %s, want the cluster instance", r.Data)
	}
}

// TestLiveReplacement starts version 2 of a component that replaces
// version 1 while several clients keep sending requests through one held
// handle, and counts: every request answered once, served once, none lost.
func TestLiveReplacement(t *testing.T) {
	exe := buildComponent(t)
	cl := bustest.StartNode(t)
	conn := func() *nats.Conn {
		nc, err := cl.Server.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc := conn()
	subjects := testSubjects(t)
	startLoader(t, conn(), subjects, 1, "node1", "cluster")

	// Every serve is reported by the component; count them per request.
	const report = "test.served"
	var mu sync.Mutex
	servedBy := map[string][]string{} // request id → versions that served it
	rsub, err := conn().Subscribe(report, func(m *nats.Msg) {
		id, ver, _ := strings.Cut(string(m.Data), " ")
		mu.Lock()
		servedBy[id] = append(servedBy[id], ver)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	rsub.SetPendingLimits(-1, -1)
	var leaving sync.Map // version → last announcement
	if _, err := nc.Subscribe(subjects.LcrAnnounce("node1", "example"), func(m *nats.Msg) {
		var a loader.Announcement
		if json.Unmarshal(m.Data, &a) == nil && a.State == loader.Leaving {
			leaving.Store(a.Version, a)
		}
	}); err != nil {
		t.Fatal(err)
	}

	common := []string{"--interval", "100ms", "--work", "2ms", "--report", report}
	v1 := startComponent(t, exe, cl.Server.AdminURL(), append([]string{"--version", "1"}, common...)...)
	c := newClient(t, conn(), subjects)
	h := reference(t, c, "example", 1)

	const workers = 4
	var sent, answered, failed atomic.Int64
	var byVersion [3]atomic.Int64
	var wrong atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				m := nats.NewMsg("")
				m.Header.Set(loader.HdrReqID, id)
				m.Data = []byte(id)
				sent.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := c.RequestMsg(ctx, h, "echo", m)
				cancel()
				if err != nil {
					failed.Add(1)
					t.Errorf("request %s: %v", id, err)
					continue
				}
				answered.Add(1)
				if string(r.Data) != id {
					wrong.Add(1)
				}
				switch r.Header.Get(loader.HdrVersion) {
				case "1":
					byVersion[1].Add(1)
				case "2":
					byVersion[2].Add(1)
				}
			}
		}()
	}
	waitFor(t, "300 requests served by version 1", 30*time.Second, func() bool { return byVersion[1].Load() >= 300 })
	v2 := startComponent(t, exe, cl.Server.AdminURL(), append([]string{"--version", "2", "--replaces", "1"}, common...)...)
	waitFor(t, "version 1 to retire and exit", 30*time.Second, func() bool {
		select {
		case <-v1.exited:
			return true
		default:
			return false
		}
	})
	if v1.err != nil {
		t.Errorf("version 1 exited with %v, want a clean exit", v1.err)
	}
	after := byVersion[2].Load()
	waitFor(t, "300 more requests served by version 2", 30*time.Second, func() bool { return byVersion[2].Load() >= after+300 })
	close(stop)
	wg.Wait()

	waitFor(t, "every answered request to be reported served", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return int64(len(servedBy)) >= answered.Load()
	})
	mu.Lock()
	var dup, servedV1, servedV2 int
	for id, vs := range servedBy {
		if len(vs) != 1 {
			dup++
			t.Errorf("request %s served %d times (versions %v)", id, len(vs), vs)
		}
		for _, v := range vs {
			if v == "1" {
				servedV1++
			} else {
				servedV2++
			}
		}
	}
	reported := len(servedBy)
	mu.Unlock()
	var moved uint64
	if a, ok := leaving.Load(uint32(1)); ok {
		moved = a.(loader.Announcement).Moved
	}
	resolves, _ := c.Resolves(h)
	summary := fmt.Sprintf("live replacement: sent %d, answered %d, failed %d, wrong payload %d; served by v1 %d, by v2 %d, reported served %d (served twice: %d); v1 answered %d \"moved\"; handle re-resolved %d times",
		sent.Load(), answered.Load(), failed.Load(), wrong.Load(), servedV1, servedV2, reported, dup, moved, resolves)
	t.Log(summary)
	fmt.Println(summary)
	if sent.Load() != answered.Load() || failed.Load() != 0 || wrong.Load() != 0 {
		t.Errorf("lost or wrong requests: %s", summary)
	}
	if int64(reported) != answered.Load() || dup != 0 {
		t.Errorf("served set differs from answered set: %s", summary)
	}
	if int64(servedV1) != byVersion[1].Load() || int64(servedV2) != byVersion[2].Load() {
		t.Errorf("served per version (%d, %d) differ from answers per version (%d, %d)", servedV1, servedV2, byVersion[1].Load(), byVersion[2].Load())
	}
	_ = v2.cmd.Process.Signal(os.Interrupt)
	<-v2.exited
}

// TestRetiringAnswersMoved checks the other half of the protocol: a client
// that still sends to a retiring version gets "moved", not service, and a
// handle's request lands on the replacement.
func TestRetiringAnswersMoved(t *testing.T) {
	exe := buildComponent(t)
	cl, nc, subjects := loaderNode(t, "node1")
	// A long linger keeps the retiring v1 subscribed while we look.
	v1 := startComponent(t, exe, cl.Server.AdminURL(), "--version", "1", "--interval", "100ms", "--linger", "1m")
	c := newClient(t, nc, subjects)
	h := reference(t, c, "example", 1)
	startComponent(t, exe, cl.Server.AdminURL(), "--version", "2", "--replaces", "1", "--interval", "100ms")
	waitFor(t, "version 1 to be retiring", 10*time.Second, func() bool {
		for _, ci := range list(t, nc, subjects).Components {
			if ci.Version == 1 && len(ci.Instances) == 1 && ci.Instances[0].State == loader.Retiring {
				return true
			}
		}
		return false
	})
	r, err := nc.Request(subjects.Component("node1", "example", 1)+".echo", []byte("stale"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Get(loader.HdrStatus) != loader.StatusMoved || len(r.Data) != 0 {
		t.Fatalf("a retiring instance answered %q with headers %v, want an empty moved reply", r.Data, r.Header)
	}
	r, err = c.Request(context.Background(), h, "echo", []byte("through the handle"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Get(loader.HdrVersion) != "2" {
		t.Fatalf("served by version %s, want 2", r.Header.Get(loader.HdrVersion))
	}
	select {
	case <-v1.exited:
		t.Fatal("version 1 exited before its linger ended")
	default:
	}
}
