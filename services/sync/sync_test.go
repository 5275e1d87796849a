package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// fakeService records its hook calls and needs two process calls.
type fakeService struct {
	mu    stdsync.Mutex
	calls []string
	procs int
}

func (f *fakeService) add(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }
func (f *fakeService) Init(r syncsvc.HookRequest) error {
	f.add(fmt.Sprintf("init %s %v", r.Ring, r.Members))
	f.mu.Lock()
	f.procs = 0
	f.mu.Unlock()
	return nil
}
func (f *fakeService) Process(r syncsvc.HookRequest) (bool, error) {
	f.mu.Lock()
	f.procs++
	done := f.procs >= 2
	f.mu.Unlock()
	f.add("process")
	return done, nil
}
func (f *fakeService) Activate(r syncsvc.HookRequest) error {
	f.add(fmt.Sprintf("activate %s", r.Ring))
	return nil
}
func (f *fakeService) Abort(syncsvc.HookRequest) { f.add("abort") }

func (f *fakeService) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func TestSyncRounds(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	ring := c.WaitView([]int{1, 2}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	svcs := map[int]*fakeService{}
	var watchers []*nats.Conn
	for id := 1; id <= 2; id++ {
		nc := c.Client(id)
		e := syncsvc.New(nc, syncsvc.Options{Node: uint32(id), Subjects: c.Subjects})
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.Run(ctx) }()
		svcs[id] = &fakeService{}
		stop, err := syncsvc.Serve(ctx, c.Client(id), c.Subjects, uint32(id), syncsvc.Registration{Name: "fake", ID: 3}, svcs[id])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		watchers = append(watchers, nc)
	}
	// The services registered after the first round: a membership
	// change starts one that includes them.
	c.Kill(2)
	ring2 := c.WaitView([]int{1}, 10*time.Second)
	waitFor(t, 10*time.Second, func() error {
		if got := svcs[1].last(); got != "activate "+ring2.String() {
			return fmt.Errorf("node 1's service: last call %q", got)
		}
		st, err := syncsvc.FetchState(watchers[0], c.Subjects, 1, time.Second)
		if err != nil {
			return err
		}
		if st.InProgress || st.Ring != ring2 {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	svcs[1].mu.Lock()
	t.Logf("ring %s then %s; node 1's service saw %v", ring, ring2, svcs[1].calls)
	svcs[1].mu.Unlock()
}

func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStuckRoundLogsAtABoundedRate: a member whose engine keeps sending
// builds for the current ring (restarting again and again, or twice
// started) and never a barrier holds node 1's round forever: it restarts
// the round each time, and that must cost a bounded number of log lines
// — the first few, then a summary with the count — not one per restart.
func TestStuckRoundLogsAtABoundedRate(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	ring := c.WaitView([]int{1, 2}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var cl *totem.Client
	logs := &lineCounter{}
	e := syncsvc.New(c.Client(1), syncsvc.Options{Node: 1, Subjects: c.Subjects, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	began := time.Now()
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.Run(ctx) }()
	// A service to synchronize: its round needs node 2's barrier.
	stop, err := syncsvc.Serve(ctx, c.Client(1), c.Subjects, 1, syncsvc.Registration{Name: "fake", ID: 3}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// Node 2's "engine": builds for the ring, never a barrier.
	cl, err = totem.NewClient(c.Client(2), c.Subjects, 2, totem.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Close() }()
	// Each build runs the ring's round again under a new epoch (as a
	// member whose services keep registering would), which node 1 adopts.
	const builds = 300
	for i := range builds {
		// The ring node 1 is in (a loaded machine may change views).
		if st, err := syncsvc.FetchState(c.Client(1), c.Subjects, 1, time.Second); err == nil && st.Ring != (totem.RingID{}) {
			ring = st.Ring
		}
		build, _ := json.Marshal(map[string]any{"type": "build", "ring": ring, "epoch": i + 1})
		if _, err := cl.Mcast(ctx, syncsvc.TotemService, build); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Second) // the last builds delivered
	st, err := syncsvc.FetchState(c.Client(1), c.Subjects, 1, time.Second)
	if err != nil || !st.InProgress {
		t.Fatalf("node 1's round completed without node 2's barrier: %+v %v", st, err)
	}
	cancel()
	wg.Wait() // Run's end flushes the summaries
	minutes := int(time.Since(began)/time.Minute) + 1
	per := logs.perCondition()
	for cond, n := range per {
		if n > (5+1)*minutes {
			t.Errorf("%q: %d lines in %d minute(s)", cond, n, minutes)
		}
	}
	// Every restart was counted, printed or summarized.
	restarts := per["sync round runs again"] - 1 + logs.repeated("sync round runs again")
	if restarts < builds/2 {
		t.Errorf("%d restarts accounted for after %d builds:\n%s", restarts, builds, logs.text())
	}
	t.Logf("%d builds: %d restarts in %d lines over %d minute(s): %v", builds, restarts, per["sync round runs again"], minutes, per)
}

// lineCounter counts slog text lines by message.
type lineCounter struct {
	mu  stdsync.Mutex
	n   map[string]int
	all strings.Builder
}

// repeated sums the repeated= counts of a message's summary lines.
func (l *lineCounter) repeated(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, line := range strings.Split(l.all.String(), "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		if _, r, ok := strings.Cut(line, "repeated="); ok {
			var n int
			fmt.Sscan(strings.Fields(r)[0], &n)
			total += n
		}
	}
	return total
}

func (l *lineCounter) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	if l.n == nil {
		l.n = map[string]int{}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		_, msg, _ := strings.Cut(line, "msg=")
		if strings.HasPrefix(msg, `"`) {
			msg = msg[1 : 1+strings.Index(msg[1:], `"`)]
		} else {
			msg, _, _ = strings.Cut(msg, " ")
		}
		// The throttle's condition: the message and its attributes'
		// shape (numbers aside). A view change on a loaded machine
		// (node 1 alone, then with node 2 again) is a condition of its
		// own, "members=[1]" beside "members=[1 2]", with its own
		// burst.
		if _, m, ok := strings.Cut(line, "members="); ok {
			m, _, _ = strings.Cut(m, "]")
			msg += " members=" + strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return -1
				}
				return r
			}, m) + "]"
		}
		l.n[msg]++
	}
	return len(p), nil
}

func (l *lineCounter) perCondition() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.n {
		out[k] = v
	}
	return out
}

// An engine that starts after its peers built the ring's round (they wait
// for its build; it missed theirs) completes the round with them, and a
// service that registers in a running view gets a round of its own on
// every member.
func TestLateEngineAndLateService(t *testing.T) {
	c := harness.New(t, harness.Options{N: 3, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(id int) {
		e := syncsvc.New(c.Client(id), syncsvc.Options{Node: uint32(id), Subjects: c.Subjects})
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.Run(ctx) }()
	}
	// idle waits until every node has completed a round of one same
	// ring (a loaded machine may see views come and go meanwhile) and
	// returns that ring.
	idle := func(ids ...int) (ring totem.RingID) {
		t.Helper()
		waitFor(t, 30*time.Second, func() error {
			ring = totem.RingID{}
			for _, id := range ids {
				st, err := syncsvc.FetchState(c.Client(id), c.Subjects, uint32(id), time.Second)
				if err != nil {
					return err
				}
				if st.InProgress || st.Rounds == 0 || ring != (totem.RingID{}) && st.Ring != ring {
					return fmt.Errorf("node %d: %+v", id, st)
				}
				ring = st.Ring
			}
			return nil
		})
		return ring
	}
	start(1)
	start(2)
	time.Sleep(300 * time.Millisecond) // 1 and 2 have built and wait for 3
	start(3)
	idle(1, 2, 3)

	// serve starts the service "late" on node 3 and waits until a round
	// of the current view has activated it.
	serve := func(what string) (stop func()) {
		svc := &fakeService{}
		stop, err := syncsvc.Serve(ctx, c.Client(3), c.Subjects, 3, syncsvc.Registration{Name: "late", ID: 4}, svc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		waitFor(t, 30*time.Second, func() error {
			ring := idle(1, 2, 3)
			if got := svc.last(); got != "activate "+ring.String() {
				return fmt.Errorf("the %s service's last call: %q (ring %s)", what, got, ring)
			}
			return nil
		})
		return stop
	}
	stop := serve("late")

	// The service restarts (killed; svcmgr starts it again): the new
	// run knows nothing of the view and registers again. It gets a round
	// too, in the same view: without one, votequorum restarted kept
	// "waiting for all" and a two_node survivor lost quorum when its
	// peer died.
	stop()
	serve("restarted")
}

// A registration or a hook request that cannot be read is answered at
// once with the error headers of every request/reply subject (code 400),
// besides the error in the JSON reply; until 3 Dec only the JSON said it.
// A well-formed one is answered without them.
func TestMalformedRegistrationAndHookAreRefused(t *testing.T) {
	c := harness.New(t, harness.Options{N: 1, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	c.WaitView([]int{1}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	e := syncsvc.New(c.Client(1), syncsvc.Options{Node: 1, Subjects: c.Subjects})
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.Run(ctx) }()
	stop, err := syncsvc.Serve(ctx, c.Client(1), c.Subjects, 1, syncsvc.Registration{Name: "fake", ID: 3}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	nc := c.Client(1)
	for _, tc := range []struct {
		name, subject string
		req           []byte
		refused       bool
	}{
		{"registration garbage", c.Subjects.SyncRegister(1), []byte("garbage"), true},
		{"registration without a name", c.Subjects.SyncRegister(1), []byte(`{"id":4}`), true},
		{"registration", c.Subjects.SyncRegister(1), []byte(`{"name":"other","id":4,"instance":"x"}`), false},
		{"hook garbage", c.Subjects.SyncHook(1, "fake"), []byte("garbage"), true},
		{"hook with an unknown op", c.Subjects.SyncHook(1, "fake"), []byte(`{"op":"dance"}`), true},
		{"hook", c.Subjects.SyncHook(1, "fake"), []byte(`{"op":"abort"}`), false},
	} {
		var msg *nats.Msg
		waitFor(t, 10*time.Second, func() error {
			var err error
			msg, err = nc.Request(tc.subject, tc.req, 10*time.Second)
			return err
		})
		errText, code := msg.Header.Get(micro.ErrorHeader), msg.Header.Get(micro.ErrorCodeHeader)
		if (errText != "") != tc.refused || tc.refused && code != "400" {
			t.Errorf("%s: answered %q with error %q, code %q; want refused %v (code 400)", tc.name, msg.Data, errText, code, tc.refused)
		}
		var rep struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &rep); err != nil || (rep.Error != "") != tc.refused {
			t.Errorf("%s: the JSON reply %q does not say the error (%v)", tc.name, msg.Data, err)
		}
	}
}

// TestWaitingUntilSynchronized: a service that registers is listed in the
// state's Waiting as soon as its registration is answered, and leaves the
// list once a round that ran for it completes; a restart (a new instance)
// puts it back. The IPC gateway's start-up gate reads it: without it, a
// service announced right after registering looked synchronized between
// its registration and the round that runs for it (no round in progress
// yet), and the gateway let in clients that the round then answered
// CS_ERR_TRY_AGAIN.
func TestWaitingUntilSynchronized(t *testing.T) {
	c := harness.New(t, harness.Options{N: 1, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	c.WaitView([]int{1}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	nc := c.Client(1)
	e := syncsvc.New(nc, syncsvc.Options{Node: 1, Subjects: c.Subjects})
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.Run(ctx) }()
	// The engine's first round (nothing registered) completes.
	waitFor(t, 10*time.Second, func() error {
		st, err := syncsvc.FetchState(nc, c.Subjects, 1, time.Second)
		if err != nil {
			return err
		}
		if st.Rounds == 0 || st.InProgress {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	for i, inst := range []string{"first", "restarted"} {
		stop, err := syncsvc.Serve(ctx, nc, c.Subjects, 1, syncsvc.Registration{Name: "fake", ID: 3, Instance: inst}, &fakeService{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := syncsvc.FetchState(nc, c.Subjects, 1, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(st.Waiting, "fake") || !slices.Contains(st.Services, "fake") {
			t.Fatalf("registration %d (%s) answered, state %+v: want fake registered and waiting", i+1, inst, st)
		}
		waitFor(t, 10*time.Second, func() error {
			st, err := syncsvc.FetchState(nc, c.Subjects, 1, time.Second)
			if err != nil {
				return err
			}
			if st.InProgress || len(st.Waiting) > 0 || !slices.Contains(st.Services, "fake") {
				return fmt.Errorf("registration %d (%s): state %+v", i+1, inst, st)
			}
			return nil
		})
		stop()
	}
}
