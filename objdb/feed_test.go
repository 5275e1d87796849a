package objdb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	writeRange(t, s, key, 1, n, between)
}

// writeRange is writeSeries from value from to value to.
func writeRange(t *testing.T, s *Store, key string, from, to int, between func(i int)) {
	t.Helper()
	for i := from; i <= to; i++ {
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
//
// JetStream places the keeper's consumer where it likes, and the keeper
// makes it again whenever it counts it lost (on a loaded machine, a
// heartbeat late). The test does not take a placement it once saw for
// granted: it puts node 1's keeper's consumer on node 2 (removing it
// until JetStream makes the keeper's next one there), and stops node 2
// only once JetStream shows the consumer there, the copy names node 2 as
// its feed's server and has stayed on its relay since it was put there;
// a consumer that moved meanwhile is put back first. Node 3 writes.
// Once node 2 is stopped, the copy must say that its consumer on node 2
// was lost: a copy that follows through another server than it names,
// or does not notice the loss, fails whatever the timing.
func TestClusterFeedResumesWhenItsServerDies(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node JetStream cluster: skipped in -short")
	}
	const me, victim, writerNode = 1, 2, 3
	cl := bustest.StartCluster(t, 3)
	// This keeper takes its consumer where JetStream puts it.
	startKeeperWith(t, cl.Conn(me), KeeperConfig{Node: me, Replicas: 3, LocalConsumerTries: -1})
	startKeeper(t, cl.Conn(writerNode), writerNode, 3)
	watcher := openStore(t, cl.Conn(me), me, 3)
	writer := openStore(t, cl.Conn(writerNode), writerNode, 3)
	const key = "test.feed.v"
	var log, states, reasons trackLog
	defer watcher.Track(key, false, log.add)()
	defer watcher.Track(CopyKeyState, false, states.add)()
	defer watcher.Track(CopyKeyReason, false, reasons.add)()

	// Paced so that fewer than History writes fall in the time the feed
	// is lost (FeedTimeout and a new consumer): the stream still holds
	// them all when the copy resumes.
	pace := func(int) { time.Sleep(15 * time.Millisecond) }
	const chunk = 40
	written := 0
	var mark, rmark int
	for tries := 0; ; tries++ {
		if tries == 5 {
			t.Fatalf("node %d's keeper's consumer was put on node %d %d times and moved each time before node %d could be stopped", me, victim, tries, victim)
		}
		consumerOn(t, cl, watcher, victim)
		mark, rmark = settledStates(t, watcher, &states), len(reasons.snapshot())
		writeRange(t, writer, key, written+1, written+chunk, pace)
		written += chunk
		// Stopped only if nothing moved it since it was put there: the
		// copy stayed current on the relay (while the keeper makes a new
		// consumer its frames say it is behind, which takes the copy off
		// it), and JetStream still has it on the node.
		at, _ := keeperConsumer(t, cl, watcher)
		moved := states.snapshot()[mark:]
		if at == bus.ServerName(victim) && len(moved) == 0 {
			break
		}
		t.Logf("while %d values were written, the keeper's consumer went to %s (the copy's state %q): putting it on node %d again",
			chunk, at, moved, victim)
	}
	cl.Stop(victim)
	t.Logf("node %d stopped after write %d", victim, written)
	n := written + 2*chunk
	writeRange(t, writer, key, written+1, n, pace)

	wantSeries(t, "copy of node "+strconv.Itoa(me), &log, key, n)
	if v, err := watcher.Get(key); err != nil || v.String() != strconv.Itoa(n) {
		t.Errorf("the copy reads %v (%v), want %d", v, err, n)
	}
	// Current again, back on its keeper's relay, whose consumer is
	// elsewhere; it said it was behind, because its consumer on the
	// stopped node was lost.
	until(t, 30*time.Second, func() bool {
		st := watcher.State()
		return st.State == "current" && st.Relayed && st.Via != bus.ServerName(victim)
	}, func() string { return fmt.Sprintf("after recovery: %+v", watcher.State()) })
	settledStates(t, watcher, &states)
	got := states.snapshot()[mark:]
	if len(got) < 2 || !strings.Contains(got[0], "current -> behind") || !strings.Contains(got[len(got)-1], "-> current") {
		t.Errorf("runtime.objdb.copy.state went %q once node %d stopped; want current -> behind … -> current", got, victim)
	}
	lost := "consumer on " + bus.ServerName(victim)
	if why := reasons.snapshot()[rmark:]; !slices.ContainsFunc(why, func(r string) bool { return strings.Contains(r, lost) }) {
		t.Errorf("runtime.objdb.copy.reason went %q once node %d stopped; want a reason naming the %s", why, victim, lost)
	}
}

// consumerOn puts the relay consumer of the keeper that s follows on
// node's server: it removes the keeper's consumer until the keeper's next
// one is there (JetStream places each at random among the stream's
// servers), and until the keeper has had consumers on two servers at
// least. After each, the copy must name the server JetStream placed it
// on (keeperConsumer): a copy that kept naming the server of an earlier
// consumer fails here.
func consumerOn(t *testing.T, cl *bustest.Cluster, s *Store, node uint32) {
	t.Helper()
	js, err := jetstream.New(cl.Conn(int(s.Node())))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 40 {
		at, name := keeperConsumer(t, cl, s)
		seen[at] = true
		if at == bus.ServerName(node) && len(seen) > 1 {
			return
		}
		t.Logf("node %d's keeper's consumer is on %s: removing it", s.Node(), at)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := js.DeleteConsumer(ctx, "KV_objdb_test", name)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("removing consumer %s: %v", name, err)
		}
	}
	t.Fatalf("40 consumers of node %d's keeper, on %v, and not yet the last on node %d after another", s.Node(), slices.Collect(maps.Keys(seen)), node)
}

// keeperConsumer asks JetStream for the relay consumer of the keeper that
// s follows — the one of that keeper's consumers with a subscriber (a
// removed one's may linger a moment) — and waits until the copy, current
// and on its keeper's relay, names its server as its feed's (Via): it
// returns that server and the consumer's name.
func keeperConsumer(t *testing.T, cl *bustest.Cluster, s *Store) (server, name string) {
	t.Helper()
	js, err := jetstream.New(cl.Conn(int(s.Node())))
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("keeper_%d_", s.Node())
	var bound []*jetstream.ConsumerInfo
	var lerr error
	until(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bound, lerr = nil, nil
		stream, err := js.Stream(ctx, "KV_objdb_test")
		if err != nil {
			lerr = err
			return false
		}
		l := stream.ListConsumers(ctx)
		for ci := range l.Info() {
			if strings.HasPrefix(ci.Name, prefix) && ci.PushBound && ci.Cluster != nil {
				bound = append(bound, ci)
			}
		}
		if lerr = l.Err(); lerr != nil || len(bound) != 1 {
			return false
		}
		st := s.State()
		return st.State == "current" && st.Relayed && st.Via == bound[0].Cluster.Leader
	}, func() string {
		var at []string
		for _, ci := range bound {
			at = append(at, ci.Name+" on "+ci.Cluster.Leader)
		}
		return fmt.Sprintf("node %d's keeper's consumers with a subscriber: %q (%v); want one, and the copy naming its server: %+v",
			s.Node(), at, lerr, s.State())
	})
	return bound[0].Cluster.Leader, bound[0].Name
}

// settledStates waits until a tracker of s's runtime.objdb.copy.state has
// caught up with a copy that is current (its last event, if any, ends in
// current) and returns how many events it has seen.
func settledStates(t *testing.T, s *Store, states *trackLog) int {
	t.Helper()
	var got []string
	until(t, 10*time.Second, func() bool {
		got = states.snapshot()
		return s.State().State == "current" && (len(got) == 0 || strings.HasSuffix(got[len(got)-1], "-> current"))
	}, func() string { return fmt.Sprintf("copy %+v, its state tracked as %q", s.State(), got) })
	return len(got)
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
