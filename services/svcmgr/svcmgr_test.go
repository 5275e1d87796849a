package svcmgr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/internal/testlog"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/loadertest"
	"github.com/corobus/corobus/node"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/svcmgr"
)

// memRecorder stands in for objdb's client: the keys svcmgr records.
type memRecorder struct {
	mu   sync.Mutex
	keys map[string]objdb.Value
	// failing makes Set fail as objdb does before it serves; failed
	// counts those failures.
	failing bool
	failed  int
}

func (r *memRecorder) Set(_ context.Context, key string, v objdb.Value) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		r.failed++
		return fmt.Errorf("no objdb process serves node 1: %w", cswire.ErrTryAgain)
	}
	r.keys[key] = v
	return nil
}

func (r *memRecorder) DeletePrefix(_ context.Context, prefix string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k := range r.keys {
		if strings.HasPrefix(k, prefix) {
			delete(r.keys, k)
			n++
		}
	}
	return n, nil
}

func (r *memRecorder) get(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.keys[key]
	if !ok {
		return ""
	}
	return v.String()
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type fixture struct {
	t        *testing.T
	node     *bustest.Node
	nc       *nats.Conn
	subjects bus.Subjects
	compDir  string
	rec      *memRecorder
}

func newFixture(t *testing.T, names ...string) *fixture {
	f := &fixture{t: t, node: bustest.StartNode(t), compDir: t.TempDir(), rec: &memRecorder{keys: map[string]objdb.Value{}}}
	var err error
	if f.subjects, err = bus.NewSubjects("corobus.test"); err != nil {
		t.Fatal(err)
	}
	// The example component, built once and installed under each name.
	exe := filepath.Join(t.TempDir(), "example")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/corobus/corobus/examples/component").CombinedOutput(); err != nil {
		t.Fatalf("building the example component: %v\n%s", err, out)
	}
	for _, n := range names {
		if err := os.Link(exe, filepath.Join(f.compDir, n)); err != nil {
			t.Fatal(err)
		}
	}
	f.nc = f.conn()
	// The node's loader.
	lnc := f.conn()
	loadertest.Start(t, lnc, f.subjects, 1, "node1", "cluster")
	return f
}

func (f *fixture) conn() *nats.Conn {
	nc, err := f.node.Server.Connect("test")
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(nc.Close)
	return nc
}

// start runs a manager until the returned stop is called.
func (f *fixture) start(cfg svcmgr.Config) (*svcmgr.Manager, func()) {
	cfg.Conn = f.conn()
	cfg.Subjects = f.subjects
	cfg.Node = 1
	cfg.BusURL = f.node.Server.AdminURL()
	if cfg.Log == nil {
		cfg.Log = bustest.Logger(f.t)
	}
	cfg.ComponentDir = f.compDir
	cfg.Recorder = f.rec
	cfg.Backoff = node.Backoff{Min: 50 * time.Millisecond, Max: time.Second, Stable: 10 * time.Second}
	cfg.StatsInterval = 100 * time.Millisecond
	if cfg.Args == nil {
		cfg.Args = map[string][]string{}
	}
	if !testing.Verbose() {
		cfg.Out = discard{}
	}
	m, err := svcmgr.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	svc, err := micro.AddService(cfg.Conn, micro.Config{Name: "corobus-svcmgr", Version: "0.0.1"})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := m.AddEndpoints(svc); err != nil {
		f.t.Fatal(err)
	}
	if err := cfg.Conn.Flush(); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("svcmgr: %v", err)
			}
		})
	}
	f.t.Cleanup(stop)
	return m, stop
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestRestartAfterSIGKILL loads a configured service, kills its process
// with SIGKILL, and expects svcmgr to restart it and requests through the
// handle taken before the kill to work again once it is back.
func TestRestartAfterSIGKILL(t *testing.T) {
	f := newFixture(t, "example")
	m, _ := f.start(svcmgr.Config{
		Services: []svcmgr.Service{{Name: "example", Version: 1}},
		// Defaults that do not exist here are skipped, not fatal.
		Defaults: svcmgr.DefaultServices(),
		Args:     map[string][]string{"example": {"--interval", "100ms"}},
	})
	waitFor(t, "example to be loaded", 30*time.Second, func() bool { l := m.List(); return len(l) == 1 && l[0].State == "loaded" })
	if got := f.rec.get("internal_configuration.service.0.name"); got != "example" {
		t.Fatalf("internal_configuration.service.0.name = %q, want example", got)
	}
	if got := f.rec.get("internal_configuration.service.0.ver"); got != "1" {
		t.Fatalf("internal_configuration.service.0.ver = %q, want 1", got)
	}

	c, err := loader.NewClient(loader.ClientConfig{Conn: f.conn(), Subjects: f.subjects, Node: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Reference(context.Background(), "example", 1)
	if err != nil {
		t.Fatal(err)
	}
	pidOf := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r, err := c.Request(ctx, h, "whoami", nil)
		if err != nil {
			return 0, err
		}
		var who struct{ PID int }
		if err := json.Unmarshal(r.Data, &who); err != nil {
			return 0, err
		}
		return who.PID, nil
	}
	pid, err := pidOf()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Request(context.Background(), h, "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "runtime.services.example.echo.rx to be recorded", 10*time.Second, func() bool {
		return f.rec.get("runtime.services.example.echo.rx") == "1" && f.rec.get("runtime.services.example.echo.tx") == "1"
	})

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var newPID int
	waitFor(t, "requests through the old handle to reach a restarted instance", 30*time.Second, func() bool {
		p, err := pidOf()
		if err == nil && p != pid {
			newPID = p
			return true
		}
		return false
	})
	list := m.List()
	if len(list) != 1 || list[0].Restarts < 1 {
		t.Fatalf("list after the kill = %+v, want example with a restart", list)
	}
	t.Logf("killed pid %d; restarted as pid %d after %d restart(s)", pid, newPID, list[0].Restarts)
}

// TestLoadUnloadByPriority loads two services at run time through the
// API, then stops the manager: the higher priority unloads first, after
// asking three times because it answers busy twice.
func TestLoadUnloadByPriority(t *testing.T) {
	f := newFixture(t, "low", "high", "extra")
	_, stop := f.start(svcmgr.Config{Args: map[string][]string{
		"low":   {"--name", "low", "--priority", "1", "--interval", "100ms"},
		"high":  {"--name", "high", "--priority", "5", "--exit-busy", "2", "--interval", "100ms"},
		"extra": {"--name", "extra", "--interval", "100ms"},
	}})
	var mu sync.Mutex
	var events []svcmgr.Event
	if _, err := f.nc.Subscribe(f.subjects.SvcmgrEvents(1), func(msg *nats.Msg) {
		var ev svcmgr.Event
		if json.Unmarshal(msg.Data, &ev) == nil {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	call := func(op string, q any) (*nats.Msg, error) {
		data, _ := json.Marshal(q)
		r, err := f.nc.Request(f.subjects.SvcmgrAPI(1, op), data, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if e := r.Header.Get(micro.ErrorHeader); e != "" {
			return r, fmt.Errorf("%s", e)
		}
		return r, nil
	}
	for _, name := range []string{"low", "high", "extra"} {
		if _, err := call("load", svcmgr.LoadRequest{Name: name, Version: 1}); err != nil {
			t.Fatalf("loading %s: %v", name, err)
		}
	}
	if _, err := call("load", svcmgr.LoadRequest{Name: "missing", Version: 1}); err == nil {
		t.Fatal("loading a service without a component succeeded")
	}
	if _, err := call("unload", svcmgr.UnloadRequest{Name: "extra"}); err != nil {
		t.Fatalf("unloading extra: %v", err)
	}
	r, err := call("list", nil)
	if err != nil {
		t.Fatal(err)
	}
	var list []svcmgr.ServiceInfo
	if err := json.Unmarshal(r.Data, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "low" || list[1].Name != "high" || list[1].Priority != 5 {
		t.Fatalf("list = %+v, want low (index 0) and high (priority 5)", list)
	}
	if got := f.rec.get("internal_configuration.service.2.name"); got != "" {
		t.Fatalf("extra's keys were not removed on unload: %q", got)
	}

	stop()
	var unloaded []svcmgr.Event
	waitFor(t, "two unload events", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		unloaded = nil
		for _, ev := range events {
			if ev.Op == "unloaded" && ev.Name != "extra" {
				unloaded = append(unloaded, ev)
			}
		}
		return len(unloaded) >= 2
	})
	if len(unloaded) != 2 || unloaded[0].Name != "high" || unloaded[1].Name != "low" {
		t.Fatalf("unload events %+v, want high then low", unloaded)
	}
	if unloaded[0].ExitAsks != 3 || unloaded[1].ExitAsks != 1 {
		t.Fatalf("exit asks: high %d (want 3: busy twice), low %d (want 1)", unloaded[0].ExitAsks, unloaded[1].ExitAsks)
	}
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	if len(f.rec.keys) != 0 {
		t.Fatalf("keys left after shutdown: %v", f.rec.keys)
	}
}

// TestHostedServiceListed: a corosync service this node serves from a
// process the manager did not start — cpg inside the IPC gateway — is
// listed as "hosted" under corosync's index, with that process's pid, for
// as long as it serves; a component of another name served the same way
// is not a service of the node's.
func TestHostedServiceListed(t *testing.T) {
	f := newFixture(t)
	m, _ := f.start(svcmgr.Config{})
	handler := func(context.Context, string, *nats.Msg) ([]byte, error) { return nil, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, name := range []string{"cpg", "notaservice"} {
		c := loader.Component{Name: name, Version: 0, Handler: handler, Interval: 100 * time.Millisecond}
		go func() { done <- c.Serve(ctx, f.conn(), f.subjects, 1) }()
	}
	hosted := func() []svcmgr.ServiceInfo {
		var out []svcmgr.ServiceInfo
		for _, s := range m.List() {
			if s.State == "hosted" {
				out = append(out, s)
			}
		}
		return out
	}
	waitFor(t, "cpg to be listed as hosted", 10*time.Second, func() bool { return len(hosted()) > 0 })
	l := hosted()
	if len(l) != 1 || l[0].Name != "cpg" || l[0].Index != 2 || len(l[0].PIDs) != 1 || l[0].PIDs[0] != os.Getpid() ||
		l[0].Target != f.subjects.Component("node1", "cpg", 0) {
		t.Fatalf("hosted services = %+v, want cpg, index 2, pid %d", l, os.Getpid())
	}
	// Recorded as corosync lists its services: internal_configuration
	// under corosync's index, and the service id.
	waitFor(t, "cpg's internal_configuration keys", 10*time.Second, func() bool {
		return f.rec.get("internal_configuration.service.2.name") != "" && f.rec.get("runtime.services.cpg.service_id") != ""
	})
	if n, v := f.rec.get("internal_configuration.service.2.name"), f.rec.get("runtime.services.cpg.service_id"); !strings.Contains(n, "corosync_cpg") || v != "2" {
		t.Fatalf("hosted cpg recorded as %q, service_id %q; want corosync_cpg and 2", n, v)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "cpg to leave the list once it stops serving", 10*time.Second, func() bool { return len(hosted()) == 0 })
}

// While objdb does not serve yet (every node's start, for seconds), the
// manager retries recording its services; it says so once, not at every
// retry (it said it three times a second per service), and records them
// once objdb serves.
func TestRecordRetriesAreSaidOnce(t *testing.T) {
	f := newFixture(t, "example")
	f.rec.mu.Lock()
	f.rec.failing = true
	f.rec.mu.Unlock()
	var logs testlog.Buffer
	f.start(svcmgr.Config{
		Services: []svcmgr.Service{{Name: "example", Version: 1}},
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	failed := func() int { f.rec.mu.Lock(); defer f.rec.mu.Unlock(); return f.rec.failed }
	for deadline := time.Now().Add(60 * time.Second); failed() < 10; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d recording attempts in 60 s, want 10", failed())
		}
	}
	if n := strings.Count(logs.String(), "recording a loaded service in objdb"); n != 1 {
		t.Errorf("%d failed attempts said %d times, want once:\n%s", failed(), n, logs.String())
	}
	f.rec.mu.Lock()
	f.rec.failing = false
	f.rec.mu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); f.rec.get("internal_configuration.service.0.name") != "example"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the service was not recorded once objdb served")
		}
	}
}
