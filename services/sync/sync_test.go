package sync_test

import (
	"context"
	"fmt"
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
