package bus

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server/ats"
	"github.com/nats-io/nats.go/jetstream"
)

// The ats package's state is the process's, and other tests of this
// package start JetStream servers: the test runs in a process of its own.
const accessTimeChildEnv = "COROBUS_BUS_ACCESSTIME_CHILD"

func TestSlowAccessTime(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSlowAccessTimeChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), accessTimeChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSlowAccessTimeChild") {
		t.Fatalf("the test's process: %v\n%s", err, out)
	}
}

// natsTicker says whether nats-server's own access-time goroutine runs.
func natsTicker(t *testing.T) bool {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	return strings.Contains(b.String(), "server/ats.Register.func1")
}

// startStore starts a one-node bus with a stream on file storage (a
// store registered with ats) and returns its stop.
func startStore(t *testing.T) func() {
	t.Helper()
	subj, err := NewSubjects("corobus.atstest")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := StartServer(ctx, ServerConfig{NodeID: 1, ClusterName: "atstest", Listen: "127.0.0.1", ClientPort: -1, StoreDir: t.TempDir(), Subjects: subj})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Connect("atstest")
	if err != nil {
		s.Shutdown(false)
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ATSTEST", Subjects: []string{"atstest.>"}, Storage: jetstream.FileStorage})
	}
	if err != nil {
		nc.Close()
		s.Shutdown(false)
		t.Fatal(err)
	}
	return func() { nc.Close(); s.Shutdown(false) }
}

// waitFor polls cond for up to 20 s (the refreshes are every 50 ms here).
func waitFor(cond func() bool) bool {
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestSlowAccessTimeChild(t *testing.T) {
	if os.Getenv(accessTimeChildEnv) == "" {
		t.Skip("run by TestSlowAccessTime in a process of its own")
	}
	if n := atsRefs.Load(); n != 0 {
		t.Fatalf("ats references before any store: %d, want 0", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !SlowAccessTime(ctx, 50*time.Millisecond) {
		t.Fatal("SlowAccessTime did not take the first reference")
	}
	if SlowAccessTime(ctx, 50*time.Millisecond) {
		t.Error("a second SlowAccessTime took over again")
	}
	stop := startStore(t)
	if n := atsRefs.Load(); n < 2 {
		t.Errorf("ats references with a store: %d, want ours and the stores' (the linked variable is not ats's count)", n)
	}
	if natsTicker(t) {
		t.Error("nats-server's access-time ticker runs although SlowAccessTime held the first reference")
	}
	before := ats.AccessTime()
	if !waitFor(func() bool { return ats.AccessTime() > before }) {
		t.Errorf("ats.AccessTime stays at %d: SlowAccessTime does not refresh the time nats-server reads", before)
	}
	if got := atsUtime.Load(); got != ats.AccessTime() {
		t.Errorf("ats.AccessTime %d, the linked variable %d", ats.AccessTime(), got)
	}

	// ctx ends while the store is open: the refreshes go on, then stop
	// with the stores, and the reference goes back.
	cancel()
	mid := ats.AccessTime()
	if !waitFor(func() bool { return ats.AccessTime() > mid }) {
		t.Error("the refreshes stopped with ctx while a store was still open")
	}
	stop()
	if !waitFor(func() bool { return atsRefs.Load() == 0 }) {
		t.Fatalf("ats references after every store closed: %d, want 0", atsRefs.Load())
	}

	// With the reference back, a new store starts nats-server's ticker.
	stop = startStore(t)
	defer stop()
	if !natsTicker(t) {
		t.Error("a store after SlowAccessTime ended did not start nats-server's ticker")
	}
}
