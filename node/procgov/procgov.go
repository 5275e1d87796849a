// Package procgov sizes the Go scheduler of a process whose work comes in
// bursts with long rests between them — the bus, the IPC gateway, objdb:
// one processor (GOMAXPROCS) until its work waits for a second one.
//
// Why: at rest every message or timer that wakes a process with two
// processors wakes two threads — the one that runs the goroutine and a
// second one the scheduler spins up for the other, idle, processor, which
// finds nothing and parks again — and keeps the runtime's monitor thread
// polling (every 20 µs) for as long as either processor is not idle. With
// one processor neither happens. An idle three-node cluster's bus process
// cost 1.2–1.3 % of a core with two processors and 0.7–0.8 % with one
// (GOMAXPROCS=1, 30 s per process, docs/architecture.md "A node at
// rest"); under load one processor would halve what the bus can carry.
//
// The same holds while the process works but one processor keeps up: a
// synchronous client's requests (cpg_lat, one cmap client) cross the
// gateway and the bus as chains of goroutine hand-offs, and with a second
// processor idle each hand-off wakes a thread on it — on a VM a halted
// vCPU, tens of microseconds. So the process goes to more processors only
// when one is nearly full or its goroutines wait for it, not at a fixed
// share of a core (docs/architecture.md, "One processor until the work
// waits").
package procgov

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	// DefaultEvery is how often the governor looks while the process
	// works: the longest a working process waits for more processors.
	DefaultEvery = 500 * time.Millisecond
	// DefaultRestEvery is how often it looks while the process rests
	// (one processor, under DefaultRest of a core in the last period):
	// the longest a process that starts working from rest runs on one
	// processor. A look wakes two threads — the one that runs the
	// governor's timer and its getrusage, and the runtime's monitor,
	// whose deep sleep ends at the next timer (strace of an idle
	// gateway) — and at 2 a second that cost an idle gateway or objdb
	// 0.07–0.09 % of a core on the test machine, as much as the rest of
	// its work.
	DefaultRestEvery = 2 * time.Second
	// DefaultRest is the share of one core under which a period on one
	// processor is rest. An idle bus uses about 1 %, an idle gateway
	// well under.
	DefaultRest = 0.03
	// DefaultRise is the share of one core used over a period from
	// which the process is busy: its one processor nearly full.
	DefaultRise = 0.9
	// DefaultRiseWait is the time its goroutines spent waiting for a
	// processor, summed over goroutines, as a share of the period, from
	// which the process is busy whatever its CPU: on a machine whose
	// other work starves the process's one thread, its CPU share stays
	// low while its work waits. At rest, on a loaded machine, a few
	// goroutines a second wait a few milliseconds each: well below 1.
	DefaultRiseWait = 1.0
	// DefaultFall and DefaultFallWait are the shares below which a
	// period is quiet.
	DefaultFall     = 0.5
	DefaultFallWait = 0.3
	// DefaultQuiet is how many quiet periods in a row return the
	// process to one processor: a pause between two bursts of work does
	// not.
	DefaultQuiet = 4
)

// Config tunes a Governor; zero values take the defaults.
type Config struct {
	// Busy is the processor count while busy: 0 takes
	// runtime.GOMAXPROCS(0) when Run starts.
	Busy             int
	Every, RestEvery time.Duration
	Rest             float64
	Rise, RiseWait   float64
	Fall, FallWait   float64
	Quiet            int
	Log              *slog.Logger
}

// Run governs the process's processor count until ctx ends, and leaves
// it at Busy. It starts on one processor. It does nothing when Busy is 1
// (one CPU, or GOMAXPROCS=1).
func Run(ctx context.Context, cfg Config) {
	cfg = cfg.withDefaults()
	if cfg.Busy <= 1 {
		return
	}
	defer runtime.GOMAXPROCS(cfg.Busy)
	s := newSampler()
	st := state{procs: 1}
	runtime.GOMAXPROCS(1)
	t := time.NewTimer(cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cpu, wait := s.sample()
		prev := st.procs
		st = st.next(cfg, cpu, wait)
		if st.procs != prev {
			runtime.GOMAXPROCS(st.procs)
			cfg.Log.Debug("processors", "procs", st.procs, "cpu_share", cpu, "wait_share", wait)
		}
		t.Reset(cfg.period(st, cpu))
	}
}

// period is the time to the next look after a period in which the
// process, now in state st, used cpu (share of one core): RestEvery while
// it rests on one processor, Every otherwise.
func (c Config) period(st state, cpu float64) time.Duration {
	if st.procs == 1 && cpu < c.Rest {
		return c.RestEvery
	}
	return c.Every
}

// Start runs the governor (Run) beside the caller until ctx ends or stop
// is called: a process's whole work, sized for as long as it lasts.
func Start(ctx context.Context, cfg Config) (stop func()) {
	ctx, stop = context.WithCancel(ctx)
	go Run(ctx, cfg)
	return stop
}

func (c Config) withDefaults() Config {
	if c.Busy == 0 {
		c.Busy = runtime.GOMAXPROCS(0)
	}
	c.Every = positiveOr(c.Every, DefaultEvery)
	c.RestEvery = positiveOr(c.RestEvery, DefaultRestEvery)
	c.Rest = positiveOr(c.Rest, DefaultRest)
	c.Rise = positiveOr(c.Rise, DefaultRise)
	c.RiseWait = positiveOr(c.RiseWait, DefaultRiseWait)
	c.Fall = positiveOr(c.Fall, DefaultFall)
	c.FallWait = positiveOr(c.FallWait, DefaultFallWait)
	c.Quiet = positiveOr(c.Quiet, DefaultQuiet)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// positiveOr is v, or def when v is zero or negative (unset).
func positiveOr[T int | float64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// state is the governor's decision and its count of quiet periods.
type state struct {
	procs int
	quiet int
}

// next decides the processor count after a period in which the process
// used cpu (share of one core) and its goroutines waited wait (share of
// the period, summed over goroutines) for a processor. Busy at once on
// one busy period (the work is waiting); back to one processor only after
// cfg.Quiet quiet periods in a row.
func (s state) next(cfg Config, cpu, wait float64) state {
	switch {
	case cpu >= cfg.Rise || wait >= cfg.RiseWait:
		return state{procs: cfg.Busy}
	case s.procs == 1:
		return s
	case cpu < cfg.Fall && wait < cfg.FallWait:
		s.quiet++
		if s.quiet >= cfg.Quiet {
			return state{procs: 1}
		}
		return s
	default:
		return state{procs: s.procs}
	}
}

// sampler reads the process's CPU time (getrusage) and the time its
// goroutines spent runnable (the runtime's scheduling latency histogram)
// since its last sample.
type sampler struct {
	last     time.Time
	lastCPU  time.Duration
	lastWait float64
	ms       []metrics.Sample
}

const schedLatencies = "/sched/latencies:seconds"

func newSampler() *sampler {
	s := &sampler{ms: []metrics.Sample{{Name: schedLatencies}}}
	s.last, s.lastCPU, s.lastWait = time.Now(), cpuTime(), s.waited()
	return s
}

// sample returns the shares since the last sample.
func (s *sampler) sample() (cpu, wait float64) {
	now, c, w := time.Now(), cpuTime(), s.waited()
	if d := now.Sub(s.last); d > 0 {
		cpu = float64(c-s.lastCPU) / float64(d)
		wait = (w - s.lastWait) / d.Seconds()
	}
	s.last, s.lastCPU, s.lastWait = now, c, w
	return cpu, wait
}

// waited is the total time goroutines have spent runnable, in seconds,
// estimated from the histogram's buckets (each counted at its lower
// bound). The runtime records one goroutine wake-up in eight
// (gTrackingPeriod in runtime/proc.go), so the sum is scaled by eight.
func (s *sampler) waited() float64 {
	metrics.Read(s.ms)
	if s.ms[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := s.ms[0].Value.Float64Histogram()
	var sum float64
	for i, n := range h.Counts {
		if lo := h.Buckets[i]; n > 0 && lo > 0 {
			sum += float64(n) * lo
		}
	}
	return sum * trackingPeriod
}

// trackingPeriod is the runtime's sampling of scheduling latencies.
const trackingPeriod = 8

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
