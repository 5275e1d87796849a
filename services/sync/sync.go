// Package sync is corosync's synchronization engine over corobus's ordered
// multicast (`corobus sync`). On every regular configuration each member
// multicasts the list of services registered with it (service build); once
// every member's list is delivered, the union, in service-id order, is
// synchronized one service at a time: init (all services, at the start),
// process (repeated until the service says done), a barrier multicast by
// every member, then activate — and on to the next service. A new
// configuration mid-way aborts the service being synchronized and starts
// over. While a round runs, the "sync in progress" flag is set; the IPC
// gateway answers CS_ERR_TRY_AGAIN then.
//
// Services register over the bus (Subjects.SyncRegister) and serve their
// hooks on Subjects.SyncHook; Serve does both for a Go service.
package sync

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	stdsync "sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/logsys"
)

// Registration is what a service sends to Subjects.SyncRegister(node).
type Registration struct {
	// Name is the service's subject token (its hooks are served on
	// Subjects.SyncHook(node, Name)).
	Name string `json:"name"`
	// ID orders services (corosync's service id: lower first).
	ID int `json:"id"`
	// Instance tells one run of the service from the next (Serve sets
	// it once per call): a service registering under a new instance has
	// restarted, lost what its last round gave it, and gets a round.
	Instance string `json:"instance,omitempty"`
}

// HookRequest is the engine's call on Subjects.SyncHook(node, name).
type HookRequest struct {
	Op      string       `json:"op"` // "init", "process", "activate", "abort"
	Ring    totem.RingID `json:"ring"`
	Members []uint32     `json:"members"`
	// Trans is the transitional membership intersected with Members, as
	// corosync's sync_init receives it.
	Trans []uint32 `json:"trans"`
}

// HookReply answers a HookRequest. Done matters for "process": false asks
// to be called again.
type HookReply struct {
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

// State is the sync engine's flag, published on Subjects.SyncState(node) on
// every change and served on Subjects.SyncStateGet(node).
type State struct {
	Node       uint32       `json:"node"`
	InProgress bool         `json:"in_progress"`
	Ring       totem.RingID `json:"ring"`
	Service    string       `json:"service,omitempty"`
	Phase      string       `json:"phase,omitempty"` // "build", "process", "barrier"
	Since      time.Time    `json:"since"`
	Rounds     uint64       `json:"rounds"` // completed rounds
	// Services are the services registered with the engine, by name.
	Services []string `json:"services,omitempty"`
	// Waiting are the registered services that no completed round has
	// synchronized since they registered (or restarted, under a new
	// instance): a round for them is due or running. It is up to date
	// when a registration is answered, so a service that announces
	// itself once registered is never seen ready before its round.
	Waiting []string `json:"waiting,omitempty"`
}

// protoMsg is the engine's own multicast on totem service "sync".
type protoMsg struct {
	Type string       `json:"type"` // "build", "barrier"
	Ring totem.RingID `json:"ring"`
	// Epoch numbers the rounds of one ring: a round runs again (a
	// service registered, an engine restarted) under a higher epoch,
	// which every member adopts.
	Epoch    uint64         `json:"epoch,omitempty"`
	Services []Registration `json:"services,omitempty"`
	Service  int            `json:"service,omitempty"`
	// Late marks the build of an engine that joined a ring already
	// installed (it may have missed the others' builds); Reply marks a
	// build re-sent for such an engine, which never restarts a round.
	Late  bool `json:"late,omitempty"`
	Reply bool `json:"reply,omitempty"`
}

// TotemService is the totem service name the engine multicasts under.
const TotemService = "sync"

// Options configure an Engine.
type Options struct {
	Node        uint32
	Subjects    bus.Subjects
	Logger      *slog.Logger
	HookTimeout time.Duration // per hook call; default 5 s
}

// Engine is one node's sync engine.
type Engine struct {
	nc    *nats.Conn
	opts  Options
	log   *slog.Logger
	logTh *logsys.Throttle // log's: flushed when Run returns
	cl    *totem.Client
	ev    chan func()

	mu         stdsync.Mutex
	registered map[string]Registration
	// waiting are the registered services, with their instance, that no
	// completed round has synchronized yet (State.Waiting).
	waiting map[string]string
	state   State

	// Round state: touched by the worker goroutine only.
	ring    totem.RingID
	members []uint32
	trans   []uint32
	active  bool
	builds  map[uint32]bool
	list    []Registration
	idx     int
	// barriers are the round's barriers delivered so far, by service id
	// and member: kept even when they come before this engine is ready
	// for them (a late engine still collecting builds — the replies to
	// its own come after a faster member's first barrier).
	barriers map[int]map[uint32]bool
	inited   bool
	// again asks for one more round of the current ring once this one
	// completes: a service registered while it ran.
	again bool
	ctx   context.Context
	// epoch is the current round's number within the ring; mine the
	// services this node announced in it; replied the members whose late
	// build this node answered in it.
	epoch   uint64
	mine    []Registration
	replied map[uint32]bool
	started time.Time
	// hosted are the services this node runs the round's hooks for: those
	// registered when the round started (mine). A service that registers
	// during the round gets no hooks in it — it was never init'ed, and a
	// process hook called on it could wait forever, holding every member
	// at its barrier — and gets the round that follows (again).
	hosted map[string]bool
}

// Layer is `corobus sync`.
func Layer() layer.Layer {
	return layer.Layer{
		Name:    "sync",
		Subsys:  "SYNC",
		Summary: "the synchronization engine: each service's sync on every membership change",
		Procs:   1, // one barrier round per view change
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName("sync")), a.SyncEngine(), a.TotemClient(TotemService))
		},
		Run: func(ctx context.Context, env layer.Env) error {
			svc, err := layer.NewService(env, "sync", "synchronization engine", time.Now().UTC().Format(time.RFC3339))
			if err != nil {
				return fmt.Errorf("registering the sync service: %w", err)
			}
			defer func() { _ = svc.Stop() }()
			e := New(env.Conn, Options{Node: env.Node.ID, Subjects: env.Subjects, Logger: env.Log})
			return e.Run(ctx)
		},
	}
}

// New builds an engine on nc (a connection to the node's bus).
func New(nc *nats.Conn, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HookTimeout <= 0 {
		opts.HookTimeout = 5 * time.Second
	}
	th := logsys.NewThrottle(logsys.DefaultThrottleWindow, 5)
	return &Engine{
		nc:   nc,
		opts: opts,
		// A round that cannot complete (a member whose engine restarts it
		// again and again) must not flood the log: each line repeats at
		// most a few times a minute, then is summarized with a count.
		logTh:      th,
		log:        logsys.RepeatingWith(opts.Logger, th),
		ev:         make(chan func(), 4096),
		registered: map[string]Registration{},
		waiting:    map[string]string{},
		state:      State{Node: opts.Node, Since: time.Now().UTC()},
	}
}

// Run serves registrations and the state query, and runs the protocol
// until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	defer e.logTh.Flush() // the counts of repeated lines are not lost
	s := e.opts.Subjects
	e.ctx = ctx
	reg, err := e.nc.Subscribe(s.SyncRegister(e.opts.Node), e.onRegister)
	if err != nil {
		return fmt.Errorf("sync: subscribing to registrations: %w", err)
	}
	defer func() { _ = reg.Unsubscribe() }()
	get, err := e.nc.Subscribe(s.SyncStateGet(e.opts.Node), func(m *nats.Msg) {
		e.mu.Lock()
		b, _ := json.Marshal(e.state)
		e.mu.Unlock()
		_ = m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("sync: subscribing to state queries: %w", err)
	}
	defer func() { _ = get.Unsubscribe() }()
	e.cl, err = totem.NewClient(e.nc, s, e.opts.Node, totem.ClientOptions{Window: 256, Service: TotemService, OnDeliver: func(d totem.Delivery) {
		select {
		case e.ev <- func() { e.onDelivery(ctx, d) }:
		case <-ctx.Done():
		}
	}})
	if err != nil {
		return err
	}
	defer func() { _ = e.cl.Close() }()
	// The current view, if totem already has one: start a round for it
	// (a restarted engine must not leave services unsynchronized).
	if st, err := totem.FetchStatus(e.nc, s, e.opts.Node, 2*time.Second); err == nil && st.State == "operational" {
		cc := &totem.ConfChg{Type: totem.Regular, Ring: st.Ring, Members: st.Members}
		e.ev <- func() {
			if e.ring == cc.Ring {
				return // its configuration change came meanwhile
			}
			// The others built this ring's round before this engine
			// listened: its build says so, and they answer with theirs.
			e.trans = slices.Clone(cc.Members)
			e.startRoundEpoch(ctx, cc, 0, true)
		}
	}
	e.publish()
	// A round still collecting builds asks again now and then: a build
	// that went out while a member's engine was not listening is sent
	// again by whoever sees this. Only while a round runs: an engine at
	// rest does not wake for it (every 3 s on every node, before).
	retry := time.NewTimer(buildRetry)
	armed := true
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-e.ev:
			f()
		case <-retry.C:
			armed = false
			if e.active && e.inited && e.idx < len(e.list) && time.Since(e.started) >= stuckAfter {
				// Said (at a bounded rate) so that a round that never
				// completes names the service and the members it waits for.
				var missing []uint32
				for _, id := range e.members {
					if !e.barriers[e.list[e.idx].ID][id] {
						missing = append(missing, id)
					}
				}
				e.log.Warn("sync round still runs", "ring", e.ring, "epoch", e.epoch, "service", e.list[e.idx].Name,
					"hosted_here", e.local(e.list[e.idx].Name), "barriers_missing", missing, "for", time.Since(e.started).Round(time.Second).String())
			}
			if e.active && !e.inited && time.Since(e.started) >= buildRetry {
				e.log.Info("sync round still waits for builds; asking again", "ring", e.ring, "epoch", e.epoch, "have", len(e.builds), "members", len(e.members))
				e.replied = map[uint32]bool{}
				e.mcast(ctx, protoMsg{Type: "build", Ring: e.ring, Epoch: e.epoch, Services: e.mine, Late: true, Reply: true})
			}
		}
		if e.active && !armed {
			retry.Reset(buildRetry)
			armed = true
		}
	}
}

// buildRetry is how long a round waits for its members' builds before it
// asks again.
const buildRetry = 3 * time.Second

// stuckAfter is how long a round may run before the engine says which
// service and members it waits for.
const stuckAfter = 15 * time.Second

func (e *Engine) onRegister(m *nats.Msg) {
	var r Registration
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Name == "" {
		_ = bus.RespondBadRequest(m, `malformed sync registration: expected {"name":…, "id":…}`,
			[]byte(`{"error":"expected {\"name\":…, \"id\":…}"}`))
		return
	}
	r.Name = bus.SanitizeToken(r.Name)
	e.mu.Lock()
	old, known := e.registered[r.Name]
	e.registered[r.Name] = r
	// A restarted service registers again, under a new instance: it
	// lost its state (votequorum: the members seen, wait_for_all
	// satisfied, its ring), and without a round would keep its start's
	// until the next membership change — a two_node survivor then lost
	// quorum when its peer died. The same instance again is a retry.
	restarted := known && r.Instance != "" && r.Instance != old.Instance
	if !known || restarted {
		e.waiting[r.Name] = r.Instance
	}
	e.listLocked()
	e.mu.Unlock()
	e.log.Info("service registered for sync", "service", r.Name, "id", r.ID, "restarted", restarted)
	// The state says it waits before the service hears it is registered
	// (the IPC gateway's start-up gate reads both).
	e.publish()
	_ = m.Respond([]byte(`{"ok":true}`))
	if !known || restarted {
		// A service that starts (or restarts) in a running view has
		// missed that view's round: run one for it, on every member.
		select {
		case e.ev <- e.rerun:
		default:
		}
	}
}

// rerun runs a round for the current ring again (after it completes, if
// one is running).
func (e *Engine) rerun() {
	if e.ring == (totem.RingID{}) || e.ctx == nil {
		return
	}
	if e.active {
		e.again = true
		return
	}
	e.log.Info("sync round runs again for a newly registered or restarted service", "ring", e.ring, "epoch", e.epoch+1)
	e.again = false
	e.startRoundEpoch(e.ctx, &totem.ConfChg{Type: totem.Regular, Ring: e.ring, Members: e.members}, e.epoch+1, false)
}

// listLocked restates State.Services and State.Waiting; e.mu is held.
func (e *Engine) listLocked() {
	e.state.Services = slices.Sorted(maps.Keys(e.registered))
	e.state.Waiting = slices.Sorted(maps.Keys(e.waiting))
}

func (e *Engine) setState(f func(*State)) {
	e.mu.Lock()
	f(&e.state)
	e.mu.Unlock()
	e.publish()
}

func (e *Engine) publish() {
	e.mu.Lock()
	b, _ := json.Marshal(e.state)
	e.mu.Unlock()
	_ = e.nc.Publish(e.opts.Subjects.SyncState(e.opts.Node), b)
}

func (e *Engine) mcast(ctx context.Context, m protoMsg) {
	b, _ := json.Marshal(m)
	if _, err := e.cl.Mcast(ctx, TotemService, b); err != nil {
		e.log.Warn("sync multicast", "err", err)
	}
}

func (e *Engine) onDelivery(ctx context.Context, d totem.Delivery) {
	if cc := d.ConfChg; cc != nil {
		if cc.Type == totem.Transitional {
			e.trans = cc.Members
			return
		}
		e.startRound(ctx, cc)
		return
	}
	m := d.Message
	if m.Service != TotemService {
		return
	}
	var p protoMsg
	if err := json.Unmarshal(m.Payload, &p); err != nil || p.Ring != e.ring {
		return // a message of an older ring
	}
	from := m.ID.Node
	// A retry is the build of a round stuck collecting builds: it asks
	// every member for its build again.
	retry := p.Late && p.Reply
	if p.Type == "barrier" {
		if p.Epoch == e.epoch && e.active {
			e.onBarrier(ctx, from, p)
		}
		return
	}
	if p.Type != "build" || from == e.opts.Node && p.Reply {
		return
	}
	switch {
	case p.Epoch > e.epoch:
		// Another member runs the ring's round again: join it.
		e.log.Info("sync round runs again", "ring", e.ring, "epoch", p.Epoch, "by", from)
		e.startRoundEpoch(ctx, &totem.ConfChg{Type: totem.Regular, Ring: e.ring, Members: e.members}, p.Epoch, false)
	case p.Epoch < e.epoch:
		// A member behind: a late engine that will adopt this round
		// once it has this node's build.
		if from != e.opts.Node && (retry || !p.Reply && !e.replied[from]) {
			e.replied[from] = true
			e.mcast(ctx, protoMsg{Type: "build", Ring: e.ring, Epoch: e.epoch, Services: e.mine, Reply: true})
		}
		return
	case !p.Reply && from != e.opts.Node && e.builds[from] && (e.inited || !e.active):
		// The same round built again by a member whose engine restarted
		// after sending its first build: run the round again.
		e.log.Info("sync round restarts for a restarted member", "ring", e.ring, "node", from, "epoch", e.epoch+1)
		e.startRoundEpoch(ctx, &totem.ConfChg{Type: totem.Regular, Ring: e.ring, Members: e.members}, e.epoch+1, false)
		return
	}
	if from != e.opts.Node && e.builds[e.opts.Node] && (retry || !p.Reply && !e.replied[from] && (p.Late || !e.builds[from])) {
		// This node's build was delivered before the member's: if its
		// engine was not listening yet it missed it. Send it again
		// (idempotent; a reply never restarts a round).
		e.replied[from] = true
		e.mcast(ctx, protoMsg{Type: "build", Ring: e.ring, Epoch: e.epoch, Services: e.mine, Reply: true})
	}
	if e.active {
		e.onBuild(ctx, from, p)
	}
}

// startRound begins synchronization for a new regular configuration,
// aborting a round in progress.
func (e *Engine) startRound(ctx context.Context, cc *totem.ConfChg) {
	e.startRoundEpoch(ctx, cc, 0, false)
}

// startRoundEpoch begins round epoch of ring cc.Ring; late says this
// engine came to the ring after it was installed.
func (e *Engine) startRoundEpoch(ctx context.Context, cc *totem.ConfChg, epoch uint64, late bool) {
	if e.active && e.inited && e.idx < len(e.list) {
		e.hook(ctx, e.list[e.idx], "abort")
	}
	e.ring, e.members, e.epoch = cc.Ring, slices.Clone(cc.Members), epoch
	if epoch > 0 {
		// A ring's round again: the view does not change, everyone
		// moves from it to itself. (Adopting another member's rerun
		// kept the transitional membership of the ring's change, so a
		// node that had joined was in no transitional list: the quorum
		// service's v1 nodelist then said it had joined and left.)
		e.trans = slices.Clone(cc.Members)
	}
	e.active, e.inited, e.idx, e.again = true, false, 0, false
	e.started = time.Now()
	e.builds = map[uint32]bool{}
	e.barriers = map[int]map[uint32]bool{}
	e.replied = map[uint32]bool{}
	e.mu.Lock()
	e.list = e.list[:0]
	for _, r := range e.registered {
		e.list = append(e.list, r)
	}
	mine := slices.Clone(e.list)
	e.mu.Unlock()
	sortRegs(e.list)
	sortRegs(mine)
	e.mine = mine
	e.hosted = make(map[string]bool, len(mine))
	for _, r := range mine {
		e.hosted[r.Name] = true
	}
	e.setState(func(s *State) {
		s.InProgress, s.Ring, s.Service, s.Phase, s.Since = true, cc.Ring, "", "build", time.Now().UTC()
	})
	if epoch == 0 {
		e.log.Info("sync round starts", "ring", cc.Ring, "members", cc.Members)
	} else {
		// Its reason was logged: a registration, another member's round.
		e.log.Debug("sync round starts", "ring", cc.Ring, "members", cc.Members, "epoch", epoch)
	}
	e.mcast(ctx, protoMsg{Type: "build", Ring: cc.Ring, Epoch: epoch, Services: mine, Late: late})
}

func sortRegs(l []Registration) {
	slices.SortFunc(l, func(a, b Registration) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Name, b.Name)) })
}

func (e *Engine) onBuild(ctx context.Context, from uint32, p protoMsg) {
	for _, r := range p.Services {
		if !slices.ContainsFunc(e.list, func(x Registration) bool { return x.Name == r.Name }) {
			e.list = append(e.list, r)
		}
	}
	sortRegs(e.list)
	e.builds[from] = true
	if !e.all(e.builds) || e.inited {
		return
	}
	// Every member's list is in: init every service this node hosts,
	// then synchronize them one at a time.
	e.inited = true
	for _, r := range e.list {
		if e.local(r.Name) {
			e.hook(ctx, r, "init")
		}
	}
	e.processNext(ctx)
}

func (e *Engine) all(got map[uint32]bool) bool {
	for _, id := range e.members {
		if !got[id] {
			return false
		}
	}
	return true
}

// local reports whether this node runs the current round's hooks of a
// service (see hosted).
func (e *Engine) local(name string) bool { return e.hosted[name] }

// processNext runs the current service's process hook once; until it is
// done the call is queued again behind whatever was delivered meanwhile, so
// that a new configuration aborts a long process phase.
func (e *Engine) processNext(ctx context.Context) {
	if e.idx >= len(e.list) {
		e.active = false
		e.log.Info("sync round complete", "ring", e.ring, "services", len(e.list))
		e.setState(func(s *State) {
			s.InProgress, s.Service, s.Phase, s.Since = false, "", "", time.Now().UTC()
			s.Rounds++
			// The services this round ran for are synchronized, unless
			// they registered again (restarted) meanwhile.
			for _, r := range e.mine {
				if inst, ok := e.waiting[r.Name]; ok && inst == r.Instance {
					delete(e.waiting, r.Name)
				}
			}
			e.listLocked()
		})
		if e.again {
			e.rerun()
		}
		return
	}
	r := e.list[e.idx]
	e.setState(func(s *State) { s.Service, s.Phase = r.Name, "process" })
	done := true
	if e.local(r.Name) {
		done = e.hook(ctx, r, "process")
	}
	if !done {
		ring, idx := e.ring, e.idx
		go func() {
			select {
			case e.ev <- func() {
				if e.active && e.ring == ring && e.idx == idx {
					e.processNext(ctx)
				}
			}:
			case <-ctx.Done():
			}
		}()
		return
	}
	e.setState(func(s *State) { s.Phase = "barrier" })
	e.mcast(ctx, protoMsg{Type: "barrier", Ring: e.ring, Epoch: e.epoch, Service: r.ID})
}

func (e *Engine) onBarrier(ctx context.Context, from uint32, p protoMsg) {
	if e.barriers[p.Service] == nil {
		e.barriers[p.Service] = map[uint32]bool{}
	}
	e.barriers[p.Service][from] = true
	e.advance(ctx)
}

// advance ends the current service's step once every member's barrier
// for it is in, and goes on to the next.
func (e *Engine) advance(ctx context.Context) {
	if !e.inited || e.idx >= len(e.list) || !e.all(e.barriers[e.list[e.idx].ID]) {
		return
	}
	if r := e.list[e.idx]; e.local(r.Name) {
		e.hook(ctx, r, "activate")
	}
	e.idx++
	e.processNext(ctx)
}

// hook calls one of a service's hooks; it reports "done" (an unreachable
// or failing service counts as done, so that one broken service cannot
// hold every other one in sync forever).
func (e *Engine) hook(ctx context.Context, r Registration, op string) bool {
	req, _ := json.Marshal(HookRequest{Op: op, Ring: e.ring, Members: e.members, Trans: intersect(e.trans, e.members)})
	cctx, cancel := context.WithTimeout(ctx, e.opts.HookTimeout)
	defer cancel()
	msg, err := e.nc.RequestWithContext(cctx, e.opts.Subjects.SyncHook(e.opts.Node, r.Name), req)
	if err != nil {
		e.log.Warn("sync hook failed", "service", r.Name, "op", op, "err", err)
		if errors.Is(err, nats.ErrNoResponders) {
			e.mu.Lock()
			delete(e.registered, r.Name) // gone; it registers again when back
			delete(e.waiting, r.Name)
			e.listLocked()
			e.mu.Unlock()
		}
		return true
	}
	var rep HookReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		e.log.Warn("sync hook reply", "service", r.Name, "op", op, "err", err)
		return true
	}
	if rep.Error != "" {
		e.log.Warn("sync hook error", "service", r.Name, "op", op, "err", rep.Error)
	}
	return rep.Done || op != "process"
}

func intersect(a, b []uint32) []uint32 {
	out := []uint32{}
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// Hooks are a Go service's sync callbacks (corosync's sync_init,
// sync_process, sync_activate, sync_abort).
type Hooks interface {
	Init(req HookRequest) error
	// Process returns done=false to be called again.
	Process(req HookRequest) (done bool, err error)
	Activate(req HookRequest) error
	Abort(req HookRequest)
}

// Serve serves a service's hooks on node and registers it with the node's
// sync engine (retrying until the engine answers or ctx ends). The returned
// function stops serving.
func Serve(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32, reg Registration, h Hooks) (func(), error) {
	sub, err := nc.Subscribe(subjects.SyncHook(node, reg.Name), func(m *nats.Msg) {
		var req HookRequest
		var rep HookReply
		if err := json.Unmarshal(m.Data, &req); err != nil {
			b, _ := json.Marshal(HookReply{Error: err.Error()})
			_ = bus.RespondBadRequest(m, "malformed sync hook request: "+err.Error(), b)
			return
		}
		{
			var herr error
			switch req.Op {
			case "init":
				herr = h.Init(req)
			case "process":
				rep.Done, herr = h.Process(req)
			case "activate":
				herr = h.Activate(req)
			case "abort":
				h.Abort(req)
			default:
				why := fmt.Sprintf("unknown op %q", req.Op)
				b, _ := json.Marshal(HookReply{Error: why})
				_ = bus.RespondBadRequest(m, "malformed sync hook request: "+why, b)
				return
			}
			if herr != nil {
				rep.Error = herr.Error()
			}
		}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
	})
	if err != nil {
		return nil, fmt.Errorf("sync: serving %s's hooks: %w", reg.Name, err)
	}
	if reg.Instance == "" {
		reg.Instance = nuid.Next()
	}
	b, _ := json.Marshal(reg)
	for {
		if _, err := nc.Request(subjects.SyncRegister(node), b, time.Second); err == nil {
			return func() { _ = sub.Unsubscribe() }, nil
		}
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("sync: registering %s: %w", reg.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FetchState asks node's sync engine for its state.
func FetchState(nc *nats.Conn, subjects bus.Subjects, node uint32, timeout time.Duration) (State, error) {
	msg, err := nc.Request(subjects.SyncStateGet(node), nil, timeout)
	if err != nil {
		return State{}, fmt.Errorf("asking node %d's sync engine for its state: %w", node, err)
	}
	var st State
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		return State{}, fmt.Errorf("decoding node %d's sync state: %w", node, err)
	}
	return st, nil
}
