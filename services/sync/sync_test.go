package sync_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	stdsync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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

// TestTwinEnginesLogAtABoundedRate: two engines for one node (a sync
// process started twice) restart each other's rounds forever; that must
// cost a bounded number of log lines, not one per restart.
func TestTwinEnginesLogAtABoundedRate(t *testing.T) {
	c := harness.New(t, harness.Options{N: 2, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	c.WaitView([]int{1, 2}, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg stdsync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var logs []*lineCounter
	began := time.Now()
	for _, id := range []int{1, 1, 2} {
		lc := &lineCounter{}
		logs = append(logs, lc)
		e := syncsvc.New(c.Client(id), syncsvc.Options{Node: uint32(id), Subjects: c.Subjects, Logger: slog.New(slog.NewTextHandler(lc, nil))})
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.Run(ctx) }()
	}
	// A ring change starts a round the twins then restart for each other.
	time.Sleep(time.Second)
	c.Kill(2)
	c.WaitView([]int{1}, 10*time.Second)
	// Count from here: one member set, one condition per message.
	for _, lc := range logs {
		lc.reset()
	}
	waitFor(t, time.Minute, func() error {
		if n := logs[0].restarts() + logs[1].restarts(); n < 5 {
			return fmt.Errorf("%d late-member restarts logged so far", n)
		}
		return nil
	})
	time.Sleep(5 * time.Second) // the loop goes on
	cancel()
	wg.Wait()
	minutes := int(time.Since(began)/time.Minute) + 1
	// Each engine, each distinct line: at most 5 and a summary per
	// minute begun, however many rounds were restarted.
	var per []map[string]int
	for i, lc := range logs {
		per = append(per, lc.perCondition())
		for cond, n := range per[i] {
			if n > (5+1)*minutes {
				t.Errorf("engine %d: %q: %d lines in %d minute(s)", i, cond, n, minutes)
			}
		}
	}
	t.Logf("lines per engine over %d minute(s): %v", minutes, per)
	// The restarts that were not printed were counted.
	if !strings.Contains(logs[0].text()+logs[1].text(), "repeated=") {
		t.Errorf("no summary of suppressed lines:\n%s\n%s", logs[0].text(), logs[1].text())
	}
}

// lineCounter counts slog text lines by message.
type lineCounter struct {
	mu  sync.Mutex
	n   map[string]int
	all strings.Builder
}

func (l *lineCounter) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n = map[string]int{}
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
		l.n[msg]++
	}
	return len(p), nil
}

func (l *lineCounter) restarts() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n["sync round restarts for a late member"]
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
