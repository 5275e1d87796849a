package procgov

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	cfg := Config{Busy: 4}.withDefaults()
	idle := state{procs: 1}
	if got := idle.next(cfg, 0.01, 0.01); got != idle {
		t.Errorf("quiet period at rest: %+v, want %+v", got, idle)
	}
	// Half a core with nothing waiting: a synchronous client's requests,
	// which a second processor would not speed up but would cost a
	// thread wake-up at each hand-off between goroutines.
	if got := idle.next(cfg, 0.5, 0.1); got != idle {
		t.Errorf("half a core, nothing waiting: %+v, want %+v", got, idle)
	}
	busy := idle.next(cfg, cfg.Rise, 0)
	if busy != (state{procs: 4}) {
		t.Errorf("busy CPU: %+v, want 4 processors", busy)
	}
	if got := idle.next(cfg, 0.01, cfg.RiseWait); got != busy {
		t.Errorf("work waiting for the one processor: %+v, want %+v", got, busy)
	}
	// Between the thresholds: neither quiet nor busy; it stays.
	if got := busy.next(cfg, (cfg.Rise+cfg.Fall)/2, 0); got != busy {
		t.Errorf("moderate period while busy: %+v, want %+v", got, busy)
	}
	s := busy
	for i := 1; i < cfg.Quiet; i++ {
		s = s.next(cfg, 0, 0)
		if s.procs != 4 {
			t.Fatalf("after %d quiet periods: %d processors, want 4 until %d", i, s.procs, cfg.Quiet)
		}
	}
	// A moderate period between quiet ones starts the count again.
	if got := s.next(cfg, (cfg.Rise+cfg.Fall)/2, 0); got != busy {
		t.Errorf("moderate period after quiet ones: %+v, want the count reset %+v", got, busy)
	}
	if got := s.next(cfg, 0, 0); got != idle {
		t.Errorf("after %d quiet periods: %+v, want %+v", cfg.Quiet, got, idle)
	}
}

// TestPeriod: the governor looks seldom while the process rests on one
// processor, often while it works or has more.
func TestPeriod(t *testing.T) {
	cfg := Config{Busy: 4}.withDefaults()
	idle, busy := state{procs: 1}, state{procs: 4}
	for _, c := range []struct {
		what string
		st   state
		cpu  float64
		want time.Duration
	}{
		{"at rest", idle, cfg.Rest / 2, cfg.RestEvery},
		{"working on one processor", idle, cfg.Rest * 2, cfg.Every},
		{"on more processors, quiet", busy, 0, cfg.Every},
		{"on more processors, busy", busy, 1.5, cfg.Every},
	} {
		if got := cfg.period(c.st, c.cpu); got != c.want {
			t.Errorf("%s: next look in %v, want %v", c.what, got, c.want)
		}
	}
}

// TestRun: the process runs on one processor at rest, on Busy while
// goroutines compete for it, on one again when they stop, and on Busy
// when the governor ends.
func TestRun(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	const busy = 3
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Busy: busy, Every: 50 * time.Millisecond, RestEvery: 50 * time.Millisecond})
	}()
	waitFor := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d processors after 20 s, want %d", what, runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("at rest", 1)

	// Four goroutines that never block: on one processor three of them
	// always wait for it, whatever CPU the machine gives the process.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				if n%1000 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	waitFor("working", busy)
	stop.Store(true)
	wg.Wait()
	waitFor("at rest again", 1)

	cancel()
	<-done
	if n := runtime.GOMAXPROCS(0); n != busy {
		t.Errorf("after the governor ended: %d processors, want %d", n, busy)
	}
}
