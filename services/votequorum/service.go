package votequorum

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/internal/rtkeys"
	"github.com/corobus/corobus/services/ipc/session"
)

// TotemService is the totem service name votequorum multicasts under.
const TotemService = "votequorum"

// SyncID is votequorum's place in the sync engine's order: corosync's
// VOTEQUORUM_SERVICE id, after the quorum service (3).
const SyncID = 5

// Config is what a Service needs.
type Config struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	Node     uint32
	Settings Settings
	// StateDir keeps ev_tracking ("" keeps it in memory: tests).
	StateDir string
	Log      *slog.Logger
	// Keys receives runtime.votequorum.*; nil discards them.
	Keys *rtkeys.Writer
}

// Service runs a node's votequorum: the core, fed by totem and the sync
// engine, and the libvotequorum sessions.
type Service struct {
	cfg Config
	log *slog.Logger
	tc  *totem.Client

	mu       sync.Mutex // the core and everything below
	core     *Core
	trackers map[*Conn]bool
	timers   map[string]*time.Timer
	timerGen map[string]uint64
	regWait  map[*Conn]chan cswire.Error
	state    State
	haveView bool

	sendq   chan Exec
	pending atomic.Int64 // own messages queued and not yet delivered back
	markSeq atomic.Uint64
	marks   sync.Map // mark id → chan struct{}, closed when it comes back
	rx, tx  [NumExec]atomic.Uint64
	// moved tells the component that rx or tx moved (CountersMoved).
	moved loader.Moved
}

// NewService builds the service; Run starts it.
func NewService(cfg Config) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Log, moved: loader.NewMoved(), trackers: map[*Conn]bool{}, timers: map[string]*time.Timer{},
		timerGen: map[string]uint64{}, regWait: map[*Conn]chan cswire.Error{}, sendq: make(chan Exec, 4096)}
	core, err := NewCore(cfg.Node, cfg.Settings, (*env)(s), cfg.Log)
	if err != nil {
		return nil, err
	}
	s.core = core
	s.state = core.Snapshot()
	return s, nil
}

// Run attaches to totem and the sync engine and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	tc, err := totem.NewClient(s.cfg.Conn, s.cfg.Subjects, s.cfg.Node, totem.ClientOptions{Window: 256, Service: TotemService, OnDeliver: s.onDeliver})
	if err != nil {
		return err
	}
	s.tc = tc
	defer func() { _ = tc.Close() }()
	get, err := s.cfg.Conn.Subscribe(s.cfg.Subjects.QuorumStateGet(s.cfg.Node), func(m *nats.Msg) {
		s.mu.Lock()
		b, _ := json.Marshal(s.state)
		s.mu.Unlock()
		_ = m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("votequorum: serving the state: %w", err)
	}
	defer func() { _ = get.Unsubscribe() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.send(ctx)
	}()
	stop, err := syncServe(ctx, s)
	if err != nil {
		return err
	}
	defer stop()
	<-ctx.Done()
	<-done
	s.mu.Lock()
	for _, t := range s.timers {
		t.Stop()
	}
	s.mu.Unlock()
	return nil
}

// send submits queued exec messages in order.
func (s *Service) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.sendq:
			if _, err := s.tc.Mcast(ctx, TotemService, e.Encode()); err != nil {
				s.pending.Add(-1)
				if ctx.Err() == nil {
					s.log.Warn("votequorum message not sent", "kind", e.Kind, "err", err)
				}
				continue
			}
			s.tx[e.Kind].Add(1)
			s.moved.Poke()
		}
	}
}

func (s *Service) onDeliver(d totem.Delivery) {
	m := d.Message
	if m == nil || m.Service != TotemService {
		return
	}
	own := m.ID.Node == s.cfg.Node && m.ID.Origin == s.tc.Origin()
	if id, ok := decodeMark(m.Payload); ok {
		if !own {
			return // another node's mark
		}
		if ch, found := s.marks.LoadAndDelete(id); found {
			close(ch.(chan struct{}))
		}
		return
	}
	if own {
		s.pending.Add(-1)
	}
	e, err := DecodeExec(m.Payload)
	if err != nil {
		s.log.Warn("malformed votequorum message", "from", m.ID.Node, "err", err)
		return
	}
	s.rx[e.Kind].Add(1)
	s.moved.Poke()
	s.mu.Lock()
	s.core.Deliver(m.ID.Node, e)
	s.mu.Unlock()
}

// Counters are runtime.services.votequorum.<N>.{rx,tx}.
func (s *Service) Counters() map[string]loader.FnStats {
	out := map[string]loader.FnStats{}
	for i := range NumExec {
		out[strconv.Itoa(i)] = loader.FnStats{RX: s.rx[i].Load(), TX: s.tx[i].Load()}
	}
	return out
}

// CountersMoved receives when Counters may have changed: the component
// looks at them then, not every second at rest (loader.Component).
func (s *Service) CountersMoved() <-chan struct{} { return s.moved }

// State is the current view.
func (s *Service) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Refresh applies new settings at run time (a change of quorum.* or
// nodelist.* in objdb).
func (s *Service) Refresh(st Settings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.core.Refresh(st)
}

// Leaving tells the cluster this node leaves cleanly (allow_downscale)
// and waits a moment for the message to go out.
func (s *Service) Leaving(ctx context.Context) {
	s.mu.Lock()
	s.core.Leaving()
	s.mu.Unlock()
	s.waitOwn(ctx, 2*time.Second)
}

// waitOwn waits until every own message queued so far has been delivered
// back: then it is ordered before anything this node sends later.
func (s *Service) waitOwn(ctx context.Context, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for s.pending.Load() > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// caughtUp multicasts a mark and waits for it to come back: every
// votequorum message the node delivered before — each member's nodeinfo
// of the round, ordered before its barrier, the barriers having been
// delivered before activate was called — has then reached this process
// too, in order.
func (s *Service) caughtUp(ctx context.Context, limit time.Duration) error {
	id := s.markSeq.Add(1)
	ch := make(chan struct{})
	s.marks.Store(id, ch)
	defer s.marks.Delete(id)
	if _, err := s.tc.Mcast(ctx, TotemService, encodeMark(id)); err != nil {
		return fmt.Errorf("sending a mark: %w", err)
	}
	select {
	case <-ch:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("the mark did not come back within %s", limit)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applied waits, after a request that multicast a change (expected
// votes, a node's votes), until this node has delivered it — the
// decision and runtime.votequorum.* follow from the delivery — and the
// runtime keys it changed are written: the request's answer then covers
// them (session.Settler), as corosync's client reads them once its own
// process has delivered the change. The change goes out through the send
// queue and a mark straight to the totem: the mark is sent once the
// change is back (waitOwn), so that its return means the change's
// delivery has run to its end.
func (s *Service) applied(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !s.waitOwn(ctx, 2*time.Second) {
		s.log.Warn("answering before this node delivered the request's change")
		return
	}
	if err := s.caughtUp(ctx, 2*time.Second); err != nil {
		s.log.Warn("answering before this node delivered the request's change", "err", err)
		return
	}
	if s.cfg.Keys == nil {
		return
	}
	if err := s.cfg.Keys.Flush(ctx); err != nil {
		s.log.Warn("answering before the request's runtime keys are written", "err", err)
	}
}

// A mark is corobus's own message on votequorum's service, never
// corosync's: a header with id 5<<16|0xff and a 64-bit mark id.
const markID = serviceID<<16 | 0xff

func encodeMark(id uint64) []byte {
	b := make([]byte, 24)
	cswire.PutI32(b, 0, markID)
	cswire.PutI32(b, 8, 24)
	cswire.PutU64(b, 16, id)
	return b
}

func decodeMark(b []byte) (uint64, bool) {
	if len(b) != 24 || cswire.I32(b, 0) != markID || cswire.I32(b, 8) != 24 {
		return 0, false
	}
	return cswire.U64(b, 16), true
}

// env is the Service as the core's environment; its methods run with
// s.mu held.
type env Service

func (e *env) Mcast(x Exec) error {
	select {
	case e.sendq <- x:
		e.pending.Add(1)
		return nil
	default:
		return errors.New("votequorum: send queue full")
	}
}

func (e *env) SetKey(key, typ string, v uint32) {
	if e.cfg.Keys == nil {
		return
	}
	t := objdb.Uint32
	if typ == "u8" {
		t = objdb.Uint8
	}
	e.cfg.Keys.SetUint(key, t, uint64(v))
}

func (e *env) QuorumChanged(members []uint32, quorate bool, ring RingID) {
	s := (*Service)(e)
	st := s.core.Snapshot()
	// A decision is only ever announced once the node has synchronized.
	st.Members, st.Quorate, st.Ring, st.Synced = members, quorate, ring, true
	was := s.state
	s.state, s.haveView = st, true
	switch {
	case quorate && (!was.Synced || !was.Quorate):
		s.log.Info("this node is within the primary component and will provide service", "members", members)
	case !quorate && (!was.Synced || was.Quorate):
		s.log.Info("this node is within the non-primary component and will not provide any services", "members", members)
	default:
		s.log.Debug("quorum unchanged", "quorate", quorate, "members", members)
	}
	b, _ := json.Marshal(st)
	if err := s.cfg.Conn.Publish(s.cfg.Subjects.QuorumState(s.cfg.Node), b); err != nil {
		s.log.Warn("quorum state not published", "err", err)
	}
}

func (e *env) NotifyQuorum(conn any, context uint64, quorate bool, nodes []NodeState) {
	msg := EncodeQuorumNotification(quorate, context, nodes)
	e.notify(conn, context, msg)
}

func (e *env) NotifyNodelist(conn any, context uint64, ring RingID, members []uint32) {
	e.notify(conn, context, EncodeNodelistNotification(context, ring, members))
}

func (e *env) NotifyExpected(expected uint32) {
	e.notify(nil, 0, EncodeExpectedVotesNotification(0, expected))
}

func (e *env) notify(conn any, context uint64, msg []byte) {
	if c, ok := conn.(*Conn); ok && c != nil {
		c.send(msg)
		return
	}
	for c := range e.trackers {
		b := append([]byte(nil), msg...)
		SetContext(b, c.context)
		c.send(b)
	}
}

func (e *env) StartTimer(name string, d time.Duration) {
	s := (*Service)(e)
	if t := s.timers[name]; t != nil {
		t.Stop()
	}
	s.timerGen[name]++
	gen := s.timerGen[name]
	s.timers[name] = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.timerGen[name] == gen {
			delete(s.timers, name)
			s.core.Timer(name)
		}
	})
}

func (e *env) StopTimer(name string) {
	if t := e.timers[name]; t != nil {
		t.Stop()
		delete(e.timers, name)
	}
	e.timerGen[name]++
}

func (e *env) evPath() string {
	if e.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(e.cfg.StateDir, "ev_tracking")
}

// LoadEVBarrier reads <state_dir>/ev_tracking: 4 bytes in host order, as
// corosync writes it, so that a state directory serves either.
func (e *env) LoadEVBarrier() (uint32, error) {
	p := e.evPath()
	if p == "" {
		return 0, nil
	}
	b, err := os.ReadFile(p)
	if err == nil && len(b) == 4 {
		return binary.LittleEndian.Uint32(b), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	return 0, e.SaveEVBarrier(0)
}

func (e *env) SaveEVBarrier(v uint32) error {
	p := e.evPath()
	if p == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
	if err != nil {
		return err
	}
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (e *env) QdeviceRegistered(conn any, code cswire.Error) {
	c, _ := conn.(*Conn)
	if ch := e.regWait[c]; ch != nil {
		ch <- code
		delete(e.regWait, c)
	}
}

// Open implements session.Handler.
func (s *Service) Open(c *session.Conn) (session.Session, error) {
	return s.OpenConn(c, c.ID), nil
}

// OpenConn starts a libvotequorum connection whose events go to sink.
func (s *Service) OpenConn(sink session.EventSink, label string) *Conn {
	return &Conn{svc: s, sink: sink, label: label}
}

// Conn is one libvotequorum connection.
type Conn struct {
	svc     *Service
	sink    session.EventSink
	label   string
	context uint64 // guarded by svc.mu
}

func (c *Conn) send(msg []byte) {
	if err := c.sink.SendEvent(msg); err != nil {
		c.svc.log.Debug("votequorum notification not sent", "conn", c.label, "err", err)
	}
}

// Request implements session.Session.
func (c *Conn) Request(ctx context.Context, msg []byte) []byte {
	r, err := DecodeRequest(msg)
	if err != nil {
		c.svc.log.Warn("malformed votequorum request", "conn", c.label, "err", err)
		return EncodeStatus(r.ID, cswire.ErrInvalidParam)
	}
	s := c.svc
	s.mu.Lock()
	core := s.core
	switch r.ID {
	case ReqGetInfo:
		in, code := core.GetInfo(r.NodeID)
		s.mu.Unlock()
		if code != cswire.OK {
			return EncodeStatus(r.ID, code)
		}
		return EncodeGetInfo(in)
	case ReqSetExpected:
		code := core.SetExpected(r.Expected)
		s.mu.Unlock()
		if code == cswire.OK {
			s.applied(ctx)
		}
		return EncodeStatus(r.ID, code)
	case ReqSetVotes:
		code := core.SetVotes(r.NodeID, r.Votes)
		s.mu.Unlock()
		if code == cswire.OK {
			s.applied(ctx)
		}
		return EncodeStatus(r.ID, code)
	case ReqTrackStart:
		if r.Flags&(TrackCurrent|TrackChanges) != 0 {
			core.SendCurrent(c, r.Context)
		}
		code := cswire.OK
		if s.trackers[c] {
			code = cswire.ErrExist
		} else if r.Flags&(TrackChanges|TrackChangesOnly) != 0 {
			s.trackers[c] = true
			c.context = r.Context
		}
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	case ReqTrackStop:
		code := cswire.ErrNotExist
		if s.trackers[c] {
			delete(s.trackers, c)
			code = cswire.OK
		}
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	case ReqQdeviceRegister:
		code, pending := core.QdeviceRegister(c, r.Name)
		if !pending {
			s.mu.Unlock()
			return EncodeStatus(r.ID, code)
		}
		ch := make(chan cswire.Error, 1)
		s.regWait[c] = ch
		s.mu.Unlock()
		select {
		case code = <-ch:
		case <-ctx.Done():
			code = cswire.ErrTimeout
		case <-time.After(30 * time.Second):
			code = cswire.ErrTimeout
		}
		if code == cswire.ErrTimeout {
			s.mu.Lock()
			delete(s.regWait, c)
			core.QdeviceCancel(c)
			s.mu.Unlock()
		}
		return EncodeStatus(r.ID, code)
	case ReqQdeviceUnregister:
		code := core.QdeviceUnregister(r.Name)
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	case ReqQdeviceUpdate:
		code := core.QdeviceUpdate(r.Name, r.NewName)
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	case ReqQdevicePoll:
		code := core.QdevicePoll(r.Name, r.CastVote, r.Ring)
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	case ReqQdeviceMasterWins:
		code := core.QdeviceMasterWins(r.Name, r.Allow)
		s.mu.Unlock()
		return EncodeStatus(r.ID, code)
	}
	s.mu.Unlock()
	return EncodeStatus(r.ID, cswire.ErrInvalidParam)
}

// Close implements session.Session: the connection stops tracking.
func (c *Conn) Close() {
	s := c.svc
	s.mu.Lock()
	delete(s.trackers, c)
	delete(s.regWait, c)
	s.core.QdeviceCancel(c)
	s.mu.Unlock()
}
