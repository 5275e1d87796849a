package objdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/faultproxy"
)

// trackLog records a tracker's events as "kind key old->new" lines.
type trackLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *trackLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, describe(e))
}

func (l *trackLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.evs...)
}

// writeSeries writes key = 1..n (u32) through s, each value retried until
// acknowledged (a retried write of the same value changes nothing), and
// calls between(i) after value i.
func writeSeries(t *testing.T, s *Store, key string, n int, between func(i int)) {
	t.Helper()
	for i := 1; i <= n; i++ {
		v := mustValue(t, Uint32, strconv.Itoa(i))
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := s.Set(context.Background(), key, v)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d of %s: %v", i, key, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if between != nil {
			between(i)
		}
	}
}

// wantSeries checks that a tracker saw key go 1, 2, …, n: every write once,
// in order, none missing, none repeated.
func wantSeries(t *testing.T, name string, l *trackLog, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got []string
	for {
		got = l.snapshot()
		if len(got) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var want []string
	for i := 1; i <= n; i++ {
		if i == 1 {
			want = append(want, fmt.Sprintf("create %s <nil> -> 1", key))
			continue
		}
		want = append(want, fmt.Sprintf("modify %s %d -> %d", key, i-1, i))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: tracked %d events, want %d:\n%s", name, len(got), n, diffLines(want, got))
	}
}

func diffLines(want, got []string) string {
	var b strings.Builder
	for i := 0; i < max(len(want), len(got)); i++ {
		w, g := "", ""
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			fmt.Fprintf(&b, "  #%d: want %q, got %q\n", i, w, g)
		}
	}
	return b.String()
}

// A copy's cluster keys come through its node keeper's relay, whose
// consumer lives on one server of the stream. When that server dies, the
// keeper notices (nothing more arrives, not even heartbeats) and says its
// relay is behind; the copy says so too, follows the stream itself from
// the last revision it applied, and goes back to the relay once it is
// current again: a tracker sees every write once, in order.
func TestClusterFeedResumesWhenItsServerDies(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node JetStream cluster: skipped in -short")
	}
	cl := bustest.StartCluster(t, 3)
	// Find a copy whose keeper's consumer is on another node: that node
	// dies. JetStream places each keeper's consumer on a server of its
	// choosing (these keepers take it where it is): new keepers until
	// one is elsewhere.
	var watcher *Store
	var victim int
	for attempt := 0; watcher == nil; attempt++ {
		if attempt == 10 {
			t.Fatal("ten rounds of keepers, and every keeper's consumer was on its own server")
		}
		var stops []func()
		var stores []*Store
		for id := 1; id <= 3; id++ {
			stops = append(stops, startKeeperWith(t, cl.Conn(id), KeeperConfig{Node: uint32(id), Replicas: 3, LocalConsumerTries: -1}))
			stores = append(stores, openStore(t, cl.Conn(id), uint32(id), 3))
		}
		for i, s := range stores {
			until(t, 20*time.Second, func() bool { return s.State().Relayed },
				func() string {
					return fmt.Sprintf("copy of node %d does not follow its keeper's relay: %+v", i+1, s.State())
				})
			n, _ := strconv.Atoi(strings.TrimPrefix(s.State().Via, "node"))
			if watcher == nil && n != 0 && n != i+1 {
				watcher, victim = s, n
			}
		}
		if watcher == nil {
			for i := range stores {
				stores[i].Close()
				stops[i]()
			}
		}
	}
	writerNode := 6 - int(watcher.Node()) - victim
	writer := openStore(t, cl.Conn(writerNode), uint32(writerNode), 3)
	t.Logf("copy of node %d follows through node %d; node %d writes; node %d dies", watcher.Node(), victim, writerNode, victim)

	var log trackLog
	stop := watcher.Track("test.feed.", true, log.add)
	defer stop()
	var states trackLog
	stopStates := watcher.Track(CopyKeyState, false, states.add)
	defer stopStates()

	// Paced so that fewer than History writes fall in the time the feed
	// is lost (FeedTimeout and a new consumer): the stream still holds
	// them all when the copy resumes.
	const n = 120
	writeSeries(t, writer, "test.feed.v", n, func(i int) {
		if i == 40 {
			cl.Stop(victim)
			t.Logf("node %d stopped after write %d", victim, i)
		}
		time.Sleep(15 * time.Millisecond)
	})
	wantSeries(t, "copy of node "+strconv.Itoa(int(watcher.Node())), &log, "test.feed.v", n)
	if v, err := watcher.Get("test.feed.v"); err != nil || v.String() != strconv.Itoa(n) {
		t.Errorf("the copy reads %v (%v), want %d", v, err, n)
	}
	// It said it was behind, and is current again.
	got := states.snapshot()
	if len(got) < 2 || !strings.Contains(got[0], "current -> behind") || !strings.Contains(got[len(got)-1], "-> current") {
		t.Errorf("runtime.objdb.copy.state went %q; want current -> behind … -> current", got)
	}
	if st := watcher.State(); st.State != "current" || st.Via == "node"+strconv.Itoa(victim) {
		t.Errorf("after recovery: %+v", st)
	}
}

// A keeper that stops (its bus going down) stores what it has; the next
// one (a new epoch) loads it, and the copies reload from it: writes made
// meanwhile are read at once, reach the new keeper, and a tracker sees
// every write once, in order.
func TestNodeFeedSurvivesANewKeeper(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	subjects, _ := bus.NewSubjects("corobus.test")
	runKeeper := func() (stop func()) { return startTestKeeper(t, nc, subjects) }
	stopKeeper := runKeeper()
	s := openStore(t, nc, 1, 1)
	other := openStore(t, cl.Conn(1), 1, 1)
	var log, otherLog trackLog
	defer s.Track("runtime.feed.", true, log.add)()
	defer other.Track("runtime.feed.", true, otherLog.add)()

	const n = 150
	writeSeries(t, s, "runtime.feed.v", n, func(i int) {
		switch i {
		case 50:
			stopKeeper()
		case 70:
			stopKeeper = runKeeper()
		}
		// Read your own writes, keeper or not.
		if v, err := s.Get("runtime.feed.v"); err != nil || v.String() != strconv.Itoa(i) {
			t.Fatalf("after write %d the writer reads %v (%v)", i, v, err)
		}
		time.Sleep(2 * time.Millisecond)
	})
	defer func() { stopKeeper() }()
	wantSeries(t, "writer's copy", &log, "runtime.feed.v", n)
	wantSeries(t, "another copy", &otherLog, "runtime.feed.v", n)
	for _, c := range []*Store{s, other} {
		waitValue(t, c, "runtime.feed.v", strconv.Itoa(n))
		until(t, 10*time.Second, func() bool { return c.State().State == "current" && c.State().Pending == 0 },
			func() string { return fmt.Sprintf("copy not current: %+v", c.State()) })
	}
}

// Feed messages lost on a broken connection are fetched back: the copy
// sees the hole at the next record or heartbeat after it reconnects.
func TestNodeFeedFetchesWhatItMissed(t *testing.T) {
	nc, proxy, lossy := nodeBehindProxy(t, "lossy-copy")
	s := openStore(t, lossy, 1, 1)
	w := openStore(t, nc, 1, 1)
	var log trackLog
	defer s.Track("runtime.gap.", true, log.add)()
	const n = 60
	writeSeries(t, w, "runtime.gap.v", n, func(i int) {
		switch i {
		case 20:
			proxy.Refuse(true)
			proxy.Cut()
		case 30:
			proxy.Refuse(false)
		}
		time.Sleep(5 * time.Millisecond)
	})
	wantSeries(t, "copy behind a broken connection", &log, "runtime.gap.v", n)
}

// A writer cannot run further ahead of its keeper than maxUnconfirmed
// writes: with the keeper gone, the writes up to the bound are taken at
// once (and read back), the next waits WriteTimeout and fails with
// TRY_AGAIN having changed nothing; once a keeper serves again every
// taken write is confirmed and writes are taken again.
func TestNodeWritesWaitForALaggingKeeper(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	subjects, _ := bus.NewSubjects("corobus.test")
	runKeeper := func() (stop func()) { return startTestKeeper(t, nc, subjects) }
	stopKeeper := runKeeper()
	s := openStore(t, nc, 1, 1)
	ctx := context.Background()
	stopKeeper()
	for i := range maxUnconfirmed {
		if err := s.Set(ctx, "runtime.lag."+strconv.Itoa(i%16), mustValue(t, Uint32, strconv.Itoa(i))); err != nil {
			t.Fatalf("write %d with the keeper gone: %v", i, err)
		}
	}
	if v, err := s.Get("runtime.lag.15"); err != nil || v.String() != strconv.Itoa(maxUnconfirmed-1) {
		t.Fatalf("the writer reads %v (%v), want its last write", v, err)
	}
	err := s.Set(ctx, "runtime.lag.over", mustValue(t, Uint32, "1"))
	if !errors.Is(err, ErrTryAgain) {
		t.Fatalf("write past %d unconfirmed: %v, want TRY_AGAIN", maxUnconfirmed, err)
	}
	if _, err := s.Get("runtime.lag.over"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("a refused write was applied: %v", err)
	}
	stopKeeper = runKeeper()
	defer func() { stopKeeper() }()
	until(t, 20*time.Second, func() bool { return s.State().Pending == 0 },
		func() string { return fmt.Sprintf("the new keeper did not confirm the writes: %+v", s.State()) })
	if err := s.Set(ctx, "runtime.lag.over", mustValue(t, Uint32, "2")); err != nil {
		t.Fatalf("write once the keeper serves again: %v", err)
	}
	other := openStore(t, nc, 1, 1)
	waitValue(t, other, "runtime.lag.15", strconv.Itoa(maxUnconfirmed-1))
	waitValue(t, other, "runtime.lag.over", "2")
}

// startTestKeeper runs node 1's keeper of bucket objdb_test on nc until
// the returned stop is called (which waits for it to finish).
func startTestKeeper(t *testing.T, nc *nats.Conn, subjects bus.Subjects) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = RunKeeper(ctx, nc, KeeperConfig{Node: 1, Bucket: "objdb_test", Replicas: 1, Subjects: subjects,
			Log: bustest.Logger(t).With("keeper", 1), Heartbeat: 50 * time.Millisecond})
	}()
	return func() { cancel(); <-done }
}

// A copy at rest hears from its keeper (its node feed and its relay of
// the cluster keys) only every few seconds (KeeperIdleHeartbeat): the
// loss of its connection to the bus — the keeper's process, the
// consumer's server — is told by the connection itself. The copy says it is behind because
// it was disconnected (not because a feed went silent), and is current
// again, with the writes made meanwhile, once it is back — and back on
// its keeper's relay.
func TestCopyBehindWhenDisconnected(t *testing.T) {
	nc, proxy, far := nodeBehindProxy(t, "far-copy")
	s := openStore(t, far, 1, 1)
	w := openStore(t, nc, 1, 1)
	var reasons trackLog
	defer s.Track(CopyKeyReason, false, reasons.add)()
	// Its cluster keys come through the keeper's relay, as at rest.
	until(t, 30*time.Second, func() bool { return s.State().Relayed },
		func() string { return fmt.Sprintf("copy not on its keeper's relay: %+v", s.State()) })

	proxy.Refuse(true)
	proxy.Cut()
	for _, k := range []string{"runtime.meanwhile", "test.meanwhile"} {
		if err := w.Set(context.Background(), k, mustValue(t, String, "set")); err != nil {
			t.Fatal(err)
		}
	}
	until(t, 30*time.Second, func() bool {
		return strings.Contains(strings.Join(reasons.snapshot(), "\n"), "disconnected from the bus")
	},
		func() string { return fmt.Sprintf("no disconnection among the copy's reasons: %q", reasons.snapshot()) })
	proxy.Refuse(false)
	for _, k := range []string{"runtime.meanwhile", "test.meanwhile"} {
		waitValue(t, s, k, "set")
	}
	until(t, 30*time.Second, func() bool { return s.State().State == "current" },
		func() string { return fmt.Sprintf("copy not current again: %+v", s.State()) })
	// Back on the relay once a frame joins on to what it caught up.
	until(t, 30*time.Second, func() bool { return s.State().Relayed },
		func() string { return fmt.Sprintf("copy not back on its keeper's relay: %+v", s.State()) })
	if err := w.Set(context.Background(), "test.after", mustValue(t, String, "relayed")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, s, "test.after", "relayed")
}

// nodeBehindProxy starts a one-node bus with its keeper and returns a
// direct connection to it, and a connection named name that goes through
// a proxy the test can cut or make refuse.
func nodeBehindProxy(t *testing.T, name string) (direct *nats.Conn, proxy *faultproxy.Proxy, far *nats.Conn) {
	t.Helper()
	cl := bustest.StartCluster(t, 1)
	direct = cl.Conn(1)
	startKeeper(t, direct, 1, 1)
	proxy, err := faultproxy.Start(strings.TrimPrefix(cl.URL(1), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	far, err = bus.Dial(cl.AdminURL(1, proxy.Addr()), name, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	return direct, proxy, far
}

// until polls cond every 20 ms until it holds; after timeout the test
// fails with what.
func until(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node's first keeper (its bus started with the node, not restarted
// under running layers) does not load the runtime.* keys a previous run
// stored, and removes them from the bucket: a restarted node showed
// runtime.members.3.status "joined" for a node that was down and had not
// joined since, where corosync starts with no runtime.* keys. Its other
// keys are loaded, and a keeper restarted later loads what it has.
func TestFirstKeeperDropsThePreviousRunsRuntimeKeys(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	ctx := context.Background()
	stop := startKeeperWith(t, nc, KeeperConfig{Node: 1, Replicas: 1, FirstStart: true})
	s := openStore(t, nc, 1, 1)
	for _, key := range []string{"runtime.members.3.status", "test.kept"} {
		if err := s.SetLocal(ctx, key, mustValue(t, String, "joined")); err != nil {
			t.Fatal(err)
		}
	}
	// Applied by the keeper (another copy reads them from its feed)
	// before it stops and stores what it has.
	other := openStore(t, nc, 1, 1)
	waitValue(t, other, "runtime.members.3.status", "joined")
	waitValue(t, other, "test.kept", "joined")
	other.Close()
	stop()
	s.Close()

	for i, first := range []bool{true, false} {
		stop = startKeeperWith(t, nc, KeeperConfig{Node: 1, Replicas: 1, FirstStart: first})
		s = openStore(t, nc, 1, 1)
		waitValue(t, s, "test.kept", "joined")
		if v, err := s.Get("runtime.members.3.status"); !errors.Is(err, ErrNotExist) {
			t.Errorf("keeper %d (first start %v): the previous run's runtime.members.3.status is %v (%v), want none", i+2, first, v, err)
		}
		if first {
			// This run's own runtime keys are kept across a restart of
			// the bus.
			if err := s.SetLocal(ctx, "runtime.members.1.status", mustValue(t, String, "joined")); err != nil {
				t.Fatal(err)
			}
			other := openStore(t, nc, 1, 1)
			waitValue(t, other, "runtime.members.1.status", "joined")
			other.Close()
		} else {
			waitValue(t, s, "runtime.members.1.status", "joined")
		}
		stop()
		s.Close()
	}
}
