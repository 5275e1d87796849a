package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/beat"
)

// Handler serves one request to function fn and returns the reply payload.
// An error is sent back as HdrError.
type Handler func(ctx context.Context, fn string, m *nats.Msg) ([]byte, error)

// Component describes a component a Go process serves with Serve.
type Component struct {
	Name    string
	Version uint32
	// Namespace defaults to LocalNamespace(node).
	Namespace string
	// Subject defaults to Subjects.Component(Namespace, Name, Version).
	Subject      string
	Interfaces   []string
	Priority     int
	Dependencies []string
	Replaces     []uint32
	// Interval is the heartbeat period (the loader drops an instance
	// silent for 3 of them); default DefaultInterval.
	Interval time.Duration
	// StatsEvery is how often the instance looks whether its counters
	// changed, and announces them if so (at most that often); default
	// 1s, or Interval if shorter. An instance whose counters do not
	// change announces once per Interval only. It looks only while they
	// move: a request served (or answered "moved") starts the looks,
	// and a look that finds nothing new ends them until the next one —
	// unless Counters is set without CountersMoved, when it looks every
	// StatsEvery all along.
	StatsEvery time.Duration
	// Linger is how long a retiring instance keeps answering "moved"
	// after the last request that reached it before it unsubscribes;
	// default 2 s, or 2 intervals if shorter. It saves clients that have
	// not heard of the replacement yet a no-responders round.
	Linger time.Duration
	// Concurrency bounds the requests served at once; default 64.
	Concurrency int
	Handler     Handler
	// Exit is asked before the service manager stops the instance
	// (corosync's exec_exit_fn): ErrBusy asks for more time. Nil: yes.
	Exit func() error
	// Quiet tells whether a retiring instance may leave: a component
	// whose clients hold state in it (sessions of corosync clients) stays
	// until they are gone, as an LCR interface stayed loaded while
	// referenced. Nil: as soon as requests stop reaching it.
	Quiet func() bool
	// Counters are counters the component keeps itself (corosync's exec
	// messages, by number), announced with the functions' counters: the
	// service manager records them as runtime.services.<service>.<N>.*.
	Counters func() map[string]FnStats
	// CountersMoved, set with Counters, receives (a send that does not
	// block: a channel of one) whenever Counters may have changed: the
	// instance then looks at its counters as after a request, and does
	// not wake every StatsEvery at rest to look.
	CountersMoved <-chan struct{}
	Log           *slog.Logger
	// Instance, when set, is the instance's id (default: a fresh nuid):
	// a component whose instances talk to each other (cfg's shutdown
	// negotiation) knows itself in the loader's listing by it. It must
	// be unique.
	Instance string
}

// Moved tells a component instance that its counters may have changed
// (Component.CountersMoved): Poke never blocks, and pokes made while one
// waits count once.
type Moved chan struct{}

// NewMoved makes a Moved.
func NewMoved() Moved { return make(Moved, 1) }

// Poke says the counters may have changed.
func (m Moved) Poke() {
	select {
	case m <- struct{}{}:
	default:
	}
}

// instanceState is a running Serve.
type instanceState struct {
	c        Component
	nc       *nats.Conn
	subjects bus.Subjects
	node     uint32
	id       string
	started  time.Time

	mu        sync.Mutex
	state     State
	lastMoved time.Time
	inflight  sync.WaitGroup
	retired   chan struct{}

	statsMu sync.Mutex
	stats   map[string]*fnCounters
	moved   atomic.Uint64
	// looking says Run looks at the counters every StatsEvery; while it
	// does not, a change pokes it (activity).
	looking  atomic.Bool
	activity Moved
	// announced is the stats (and moved count) of the last
	// announcement, and announcedAt its time (under statsMu).
	announced   map[string]FnStats
	movedAnn    uint64
	announcedAt time.Time
}

type fnCounters struct{ rx, tx atomic.Uint64 }

// Serve runs the component until ctx ends (it announces Leaving, stops
// taking requests, finishes those it took and returns nil) or until a
// replacement retires it (the same, after answering "moved" to latecomers
// for Linger). The process should exit when Serve returns.
func (c Component) Serve(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32) error {
	if c.Name == "" || c.Handler == nil {
		return errors.New("component: a name and a handler are required")
	}
	if c.Namespace == "" {
		c.Namespace = LocalNamespace(node)
	}
	if err := checkNamespace(c.Namespace); err != nil {
		return fmt.Errorf("component %s: %w", c.Name, err)
	}
	if c.Subject == "" {
		c.Subject = subjects.Component(c.Namespace, c.Name, c.Version)
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.StatsEvery <= 0 {
		c.StatsEvery = min(time.Second, c.Interval)
	}
	if c.Linger <= 0 {
		c.Linger = 2 * min(time.Second, c.Interval)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Instance == "" {
		c.Instance = nuid.Next()
	}
	s := &instanceState{c: c, nc: nc, subjects: subjects, node: node, id: c.Instance, started: time.Now().UTC(),
		state: Serving, retired: make(chan struct{}), stats: map[string]*fnCounters{}, activity: NewMoved()}
	return s.run(ctx)
}

func (s *instanceState) run(ctx context.Context) error {
	c := s.c
	sem := make(chan struct{}, c.Concurrency)
	// The handlers' context outlives ctx: requests taken before a stop
	// are finished, not cancelled.
	hctx := context.WithoutCancel(ctx)
	queue := c.Namespace + "." + c.Name + "." + strconv.FormatUint(uint64(c.Version), 10)
	sub, err := s.nc.QueueSubscribe(c.Subject+".*", queue, func(m *nats.Msg) {
		s.mu.Lock()
		if s.state != Serving {
			s.lastMoved = time.Now()
			s.mu.Unlock()
			s.moved.Add(1)
			s.reply(m, nats.Header{HdrStatus: []string{StatusMoved}}, nil)
			s.counted()
			return
		}
		s.inflight.Add(1)
		s.mu.Unlock()
		sem <- struct{}{}
		go func() {
			defer s.inflight.Done()
			defer func() { <-sem }()
			s.serve(hctx, m)
		}()
	})
	if err != nil {
		return fmt.Errorf("component %s: subscribing to %s: %w", c.Name, c.Subject, err)
	}
	sub.SetPendingLimits(-1, -1)
	ctl, err := s.nc.Subscribe(s.subjects.LcrControl(s.id), s.control)
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("component %s: subscribing to its control subject: %w", c.Name, err)
	}
	defer func() { _ = ctl.Unsubscribe() }()
	// A loader that starts asks: it hears of this instance at once, not
	// at the next heartbeat.
	asked := make(chan struct{}, 1)
	ask, err := s.nc.Subscribe(s.subjects.LcrAsk(), func(*nats.Msg) {
		select {
		case asked <- struct{}{}:
		default:
		}
	})
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("component %s: subscribing to the loaders' asks: %w", c.Name, err)
	}
	defer func() { _ = ask.Unsubscribe() }()
	// Announce only once the server has the subscriptions: a client
	// that resolves to this instance must reach it.
	if err := s.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("component %s: subscribing: %w", c.Name, err)
	}
	s.announce()
	c.Log.Info("component serving", "component", c.Name, "version", c.Version, "namespace", c.Namespace, "subject", c.Subject, "instance", s.id)

	// A look every StatsEvery while the counters move (or the instance
	// retires) announces them when they changed; otherwise the timer
	// waits for the next heartbeat. At rest that is one message per
	// Interval instead of one per second, as every loader and service
	// manager of the cluster receives each of them, and one wake-up of
	// the process per Interval instead of one per StatsEvery (an idle
	// node's five instances woke their processes five times a second).
	poll := c.Counters != nil && c.CountersMoved == nil
	s.looking.Store(true)
	t := time.NewTimer(c.StatsEvery)
	defer t.Stop()
	look := func() {
		if !s.looking.Swap(true) {
			t.Reset(c.StatsEvery)
		}
	}
	retiredAt := time.Time{}
	retired := s.retired
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-asked:
			s.announce()
		case <-retired:
			retired = nil // fire once
			retiredAt = time.Now()
			s.announce()
			look()
		case <-s.activity:
			look()
		case <-c.CountersMoved:
			look()
		case now := <-t.C:
			// Not looking from here: a change made after this point
			// pokes (activity), one made before it is seen below.
			s.looking.Store(false)
			changed := s.statsChanged()
			// The heartbeat falls on the wall clock's multiples of
			// Interval (bus/beat): a node's instances (and its
			// clients' holds, its keeper's idle heartbeats) then
			// reach the bus, the loader and svcmgr in one burst
			// every 5 s at rest, not one message at a time.
			due := beat.Next(s.lastAnnounce(), c.Interval)
			if changed || !now.Before(due) {
				s.announce()
				due = beat.Next(s.lastAnnounce(), c.Interval)
			}
			if changed || poll || !retiredAt.IsZero() {
				s.looking.Store(true)
				t.Reset(min(c.StatsEvery, time.Until(due)))
			} else {
				t.Reset(time.Until(due))
			}
			if !retiredAt.IsZero() {
				s.mu.Lock()
				quiet := time.Since(s.lastMoved) >= c.Linger && time.Since(retiredAt) >= c.Linger
				s.mu.Unlock()
				if quiet && c.Quiet != nil {
					quiet = c.Quiet()
				}
				if quiet {
					break loop
				}
			}
		}
	}
	// Leaving first, so that the loader stops resolving to this
	// instance; then stop taking requests and finish those taken. A
	// serving instance serves what reaches it until the drain completes;
	// a retiring one keeps answering "moved".
	s.mu.Lock()
	wasRetiring := s.state == Retiring
	s.mu.Unlock()
	s.announceState(Leaving)
	if err := drain(sub, 10*time.Second); err != nil {
		c.Log.Warn("draining the component's subscription", "err", err)
	}
	s.inflight.Wait()
	if err := s.nc.Flush(); err != nil {
		c.Log.Warn("flushing the last replies", "err", err)
	}
	c.Log.Info("component stopped", "component", c.Name, "version", c.Version, "instance", s.id, "retired", wasRetiring, "moved", s.moved.Load())
	return nil
}

// drain unsubscribes and waits until the messages delivered before the
// unsubscription are handed to the callback.
func drain(sub *nats.Subscription, wait time.Duration) error {
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(wait):
		return errors.New("drain did not complete in time")
	}
}

func (s *instanceState) serve(ctx context.Context, m *nats.Msg) {
	fn := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	ctr := s.counters(fn)
	ctr.rx.Add(1)
	data, err := s.c.Handler(ctx, fn, m)
	hdr := nats.Header{}
	if err != nil {
		hdr.Set(HdrError, err.Error())
		data = nil
	}
	if s.reply(m, hdr, data) {
		ctr.tx.Add(1)
	}
	s.counted()
}

// counted tells Run that the counters moved, if it is not looking at
// them already: under load one atomic load a request, at rest one wake-up.
func (s *instanceState) counted() {
	if !s.looking.Load() {
		s.activity.Poke()
	}
}

func (s *instanceState) reply(m *nats.Msg, hdr nats.Header, data []byte) bool {
	if m.Reply == "" {
		return false
	}
	hdr.Set(HdrInstance, s.id)
	hdr.Set(HdrVersion, strconv.FormatUint(uint64(s.c.Version), 10))
	if id := m.Header.Get(HdrReqID); id != "" {
		hdr.Set(HdrReqID, id)
	}
	r := &nats.Msg{Subject: m.Reply, Header: hdr, Data: data}
	if err := s.nc.PublishMsg(r); err != nil {
		s.c.Log.Warn("replying", "err", err)
		return false
	}
	return true
}

func (s *instanceState) counters(fn string) *fnCounters {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	ctr := s.stats[fn]
	if ctr == nil {
		ctr = &fnCounters{}
		s.stats[fn] = ctr
	}
	return ctr
}

func (s *instanceState) control(m *nats.Msg) {
	var q Control
	if err := json.Unmarshal(m.Data, &q); err != nil {
		data, _ := json.Marshal(ControlReply{Error: "expected JSON {op}"})
		_ = bus.RespondBadRequest(m, "malformed control request: expected JSON {op}", data)
		return
	}
	switch q.Op {
	case OpPing:
		s.respond(m, ControlReply{OK: true})
	case OpRetire:
		s.mu.Lock()
		first := s.state == Serving
		if first {
			// From here on every request is refused with "moved";
			// the callback checks under the same lock, so no request
			// is both taken and refused.
			s.state = Retiring
			s.lastMoved = time.Now()
		}
		s.mu.Unlock()
		if first {
			by := ""
			if q.By != nil {
				by = q.By.Subject
			}
			s.c.Log.Info("component replaced; retiring", "component", s.c.Name, "version", s.c.Version, "by", by)
			close(s.retired)
		}
		s.respond(m, ControlReply{OK: true})
	case OpExit:
		if s.c.Exit != nil {
			if err := s.c.Exit(); errors.Is(err, ErrBusy) {
				s.respond(m, ControlReply{Busy: true})
				return
			} else if err != nil {
				s.respond(m, ControlReply{Error: err.Error()})
				return
			}
		}
		s.respond(m, ControlReply{OK: true})
	default:
		data, _ := json.Marshal(ControlReply{Error: "unknown op " + strconv.Quote(q.Op)})
		_ = bus.RespondBadRequest(m, "malformed control request: unknown op "+strconv.Quote(q.Op), data)
	}
}

func (s *instanceState) respond(m *nats.Msg, r ControlReply) {
	data, _ := json.Marshal(r)
	_ = m.Respond(data)
}

func (s *instanceState) announce() {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	s.announceState(st)
}

// currentStats is the instance's counters now: its functions' and the
// component's own.
func (s *instanceState) currentStats() map[string]FnStats {
	out := map[string]FnStats{}
	s.statsMu.Lock()
	for fn, ctr := range s.stats {
		out[fn] = FnStats{RX: ctr.rx.Load(), TX: ctr.tx.Load()}
	}
	s.statsMu.Unlock()
	if s.c.Counters != nil {
		for name, st := range s.c.Counters() {
			out[name] = st
		}
	}
	return out
}

// statsChanged reports whether the counters moved since the last
// announcement.
func (s *instanceState) statsChanged() bool {
	cur := s.currentStats()
	moved := s.moved.Load()
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return moved != s.movedAnn || !maps.Equal(cur, s.announced)
}

func (s *instanceState) lastAnnounce() time.Time {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.announcedAt
}

func (s *instanceState) announceState(st State) {
	c := s.c
	a := Announcement{Name: c.Name, Version: c.Version, Namespace: c.Namespace, Subject: c.Subject,
		Queue: c.Namespace + "." + c.Name + "." + strconv.FormatUint(uint64(c.Version), 10), Instance: s.id,
		Interfaces: c.Interfaces, Priority: c.Priority, Dependencies: c.Dependencies, Replaces: c.Replaces,
		Node: s.node, PID: os.Getpid(), State: st, IntervalMS: c.Interval.Milliseconds(), Started: s.started,
		Stats: s.currentStats(), Moved: s.moved.Load()}
	s.statsMu.Lock()
	s.announced, s.movedAnn, s.announcedAt = a.Stats, a.Moved, time.Now()
	s.statsMu.Unlock()
	data, _ := json.Marshal(a)
	if err := s.nc.Publish(s.subjects.LcrAnnounce(c.Namespace, c.Name), data); err != nil {
		c.Log.Warn("announcing", "err", err)
	}
}
