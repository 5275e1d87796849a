// Package cpg is a pure-Go client of corobus's closed process groups: a Go
// program joins CPG groups over the bus, with no cgo and no libcpg, and is
// a member next to the libcpg programs of any node — the same messages, in
// the same order, with the same configuration changes.
//
// A Handle is what libcpg's cpg_handle_t is: one connection to one node's
// cpg service, in at most one group at a time. It speaks libcpg's own
// messages to the service (services/cpg/cpgwire) over the session protocol
// the IPC gateway speaks for libcpg programs (services/ipc/session), so
// that it reaches the very code they reach.
//
//	h, err := cpg.Connect(ctx, nc, cpg.Options{Subjects: subjects, Node: 1})
//	defer h.Close()
//	err = h.Join(ctx, "mygroup")
//	err = h.Mcast(ctx, []byte("hello"))
//	for ev := range h.Events() {
//		switch ev.Kind {
//		case cpg.Deliver:  // ev.Group, ev.From, ev.Data
//		case cpg.ConfChg:  // ev.Members, ev.Left, ev.Joined
//		}
//	}
//
// A member is named by its node id and a pid (the process's own by
// default), as in corosync; a program running away from the node's host
// gives a pid unique on that node (Options.PID). A Handle whose program
// dies leaves its group with PROCDOWN within seconds: the service drops
// the sessions of a client it stops hearing from.
package cpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/loader"
	cpgsvc "github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/session"
)

// Options shape a Handle.
type Options struct {
	// Subjects are the cluster's subjects; Node the node whose cpg
	// service the handle uses. Both required.
	Subjects bus.Subjects
	Node     uint32
	// PID names this member with the node id; default os.Getpid().
	PID uint32
	// Logger receives the handle's own troubles; default none.
	Logger *slog.Logger
}

// Address is a member: node id and pid, and the reason it joined or left
// (in a configuration change's Joined and Left lists).
type Address = cpgwire.Address

// Reasons of a configuration change.
const (
	ReasonJoin     = cpgwire.ReasonJoin
	ReasonLeave    = cpgwire.ReasonLeave
	ReasonNodeDown = cpgwire.ReasonNodeDown
	ReasonNodeUp   = cpgwire.ReasonNodeUp
	ReasonProcDown = cpgwire.ReasonProcDown
)

// EventKind tells the kinds of Event apart.
type EventKind int

const (
	// Deliver is a message of the group: Group, From, Data.
	Deliver EventKind = iota + 1
	// ConfChg is a change of the group's members: Group, Members, Left,
	// Joined.
	ConfChg
	// TotemConfChg is a view the groups were synchronized in: Ring,
	// TotemMembers (libcpg's totem confchg callback).
	TotemConfChg
)

// Event is one callback of the group, in the order the service gave it.
type Event struct {
	Kind                  EventKind
	Group                 string
	From                  Address
	Data                  []byte
	Members, Left, Joined []Address
	Ring                  totem.RingID
	TotemMembers          []uint32
}

// Errors are corosync's cs_error_t values (errors.Is works with
// cswire.ErrExist, cswire.ErrNotExist, cswire.ErrTryAgain, …).
var (
	ErrExist    = cswire.ErrExist
	ErrNotExist = cswire.ErrNotExist
	ErrTryAgain = cswire.ErrTryAgain
	ErrClosed   = errors.New("cpg: the handle is closed")
)

// Handle is one connection to a node's cpg service.
type Handle struct {
	nc     *nats.Conn
	opts   Options
	log    *slog.Logger
	sess   *session.Client
	sub    *nats.Subscription
	cancel context.CancelFunc

	events chan Event
	queue  eventQueue

	// mu serializes the calls: one request at a time, as libcpg's.
	mu     sync.Mutex
	group  string
	joined bool
	closed bool

	fcMu   sync.Mutex
	fc     int32
	fcWake chan struct{}

	closeOnce sync.Once
}

// Connect opens a handle on opts.Node's cpg service (cpg_initialize). A
// service that has not synchronized the groups yet answers ErrTryAgain:
// Connect tries again until ctx ends.
func Connect(ctx context.Context, nc *nats.Conn, opts Options) (*Handle, error) {
	if opts.Node == 0 || opts.Subjects.Prefix() == "" {
		return nil, errors.New("cpg: Options.Subjects and Options.Node are required")
	}
	if opts.PID == 0 {
		opts.PID = uint32(os.Getpid())
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handle{nc: nc, opts: opts, log: opts.Logger, events: make(chan Event), fcWake: make(chan struct{})}
	h.queue.init(h.events)
	gw, id := "go"+nuid.Next(), nuid.Next()
	s := opts.Subjects
	sub, err := nc.Subscribe(s.IPCEvents(opts.Node, gw, id), h.onEvent)
	if err != nil {
		return nil, fmt.Errorf("cpg: subscribing to the callbacks: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	h.sub = sub
	actx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	alive := s.IPCAlive(opts.Node, gw)
	go func() {
		// The service drops the sessions of a client it stops hearing.
		t := time.NewTicker(session.AliveInterval)
		defer t.Stop()
		for {
			_ = nc.Publish(alive, nil)
			select {
			case <-actx.Done():
				return
			case <-t.C:
			}
		}
	}()
	open := s.Component(loader.LocalNamespace(opts.Node), cpgsvc.ComponentName, cpgsvc.ComponentVersion) + ".open"
	for pause := 20 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		h.sess, err = session.Open(ctx, nc, func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
			m.Subject = open
			return nc.RequestMsgWithContext(ctx, m)
		}, id, alive, s.IPCEvents(opts.Node, gw, id), session.Creds{PID: opts.PID, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
		if err == nil {
			break
		}
		if !errors.Is(err, cswire.ErrTryAgain) && !errors.Is(err, nats.ErrNoResponders) {
			h.shutdown()
			return nil, fmt.Errorf("cpg: connecting to node %d's cpg service: %w", opts.Node, err)
		}
		select {
		case <-ctx.Done():
			h.shutdown()
			return nil, fmt.Errorf("cpg: node %d's cpg service is not ready: %w", opts.Node, errors.Join(ctx.Err(), err))
		case <-time.After(pause):
		}
	}
	return h, nil
}

// PID is the pid this handle's member is named by.
func (h *Handle) PID() uint32 { return h.opts.PID }

// Node is the node id of the handle's service.
func (h *Handle) Node() uint32 { return h.opts.Node }

// Events delivers the handle's callbacks in order. It is closed when the
// handle is. A program must read it: a handle whose callbacks back up has
// its multicasts held, as a libcpg program that does not dispatch does.
func (h *Handle) Events() <-chan Event { return h.events }

// call sends one request and decodes its response.
func (h *Handle) call(ctx context.Context, req int32, msg []byte) (cpgwire.Response, error) {
	if h.closed {
		return cpgwire.Response{}, ErrClosed
	}
	b, err := h.sess.Request(ctx, msg)
	if err != nil {
		return cpgwire.Response{}, fmt.Errorf("cpg: %w", err)
	}
	r, err := cpgwire.DecodeResponse(req, b)
	if err != nil {
		return r, fmt.Errorf("cpg: response to request %d: %w", req, err)
	}
	if r.Error != cswire.OK {
		return r, r.Error
	}
	return r, nil
}

// retry calls again while the service answers CS_ERR_TRY_AGAIN (a sync
// runs) or CS_ERR_BUSY, until ctx ends.
func (h *Handle) retry(ctx context.Context, req int32, msg []byte) (cpgwire.Response, error) {
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		r, err := h.call(ctx, req, msg)
		if !errors.Is(err, cswire.ErrTryAgain) && !errors.Is(err, cswire.ErrBusy) {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, errors.Join(ctx.Err(), err)
		case <-time.After(pause):
		}
	}
}

// Join joins group (cpg_join): done when the ConfChg that names this
// member among the joined comes on Events. ErrExist when the handle is in
// a group already, or this pid is in group on another handle.
func (h *Handle) Join(ctx context.Context, group string) error {
	if len(group) > cpgwire.MaxNameLength {
		return cswire.ErrNameTooLong
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.retry(ctx, cpgwire.ReqJoin, cpgwire.EncodeJoin(cpgwire.Name(group), h.opts.PID, 0))
	if err == nil {
		h.group, h.joined = group, true
	}
	return err
}

// Leave leaves the handle's group (cpg_leave): done when the ConfChg that
// names this member among the left comes. As in corosync 3.1.7 the handle
// then keeps the group's callbacks and cannot join again: open another.
func (h *Handle) Leave(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.retry(ctx, cpgwire.ReqLeave, cpgwire.EncodeLeave(cpgwire.Name(h.group), h.opts.PID))
	if err == nil {
		h.joined = false
	}
	return err
}

// Mcast multicasts data to the handle's group in agreed (total) order
// (cpg_mcast_joined). It waits while the service holds multicasts (a sync,
// a full window) and returns once the message is on its way: it comes
// back on Events in its place of the order. It answers ErrTryAgain while
// more than 1 MiB of callbacks wait to be read: a program must read Events
// (at 64 MiB the handle is closed). A message larger than MaxAtomicMsgSize goes in fragments, as
// libcpg sends it; every member gets it whole.
func (h *Handle) Mcast(ctx context.Context, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if !h.joined {
		return ErrNotExist
	}
	if h.queue.backlog() >= highBacklog {
		return fmt.Errorf("cpg: %d bytes of callbacks not read (read Events): %w", h.queue.backlog(), ErrTryAgain)
	}
	if len(data) > cpgwire.MaxAtomicMsgSize {
		return h.fragments(ctx, data)
	}
	if err := h.waitFlow(ctx); err != nil {
		return err
	}
	if err := h.sess.Send(cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, data)); err != nil {
		return fmt.Errorf("cpg: %w", err)
	}
	return nil
}

// MaxAtomicMsgSize is the largest message Mcast sends in one piece.
const MaxAtomicMsgSize = cpgwire.MaxAtomicMsgSize

// fragments sends a large message as libcpg's send_fragments does: one
// answered partial multicast per piece. A configuration change of the
// group meanwhile interrupts it (cswire.ErrInterrupt).
func (h *Handle) fragments(ctx context.Context, data []byte) error {
	for off := 0; off < len(data); {
		n := min(cpgwire.MaxAtomicMsgSize, len(data)-off)
		typ := cpgwire.PartialContinued
		switch {
		case off == 0:
			typ = cpgwire.PartialFirst
		case off+n == len(data):
			typ = cpgwire.PartialLast
		}
		msg := cpgwire.EncodePartialMcast(cpgwire.GuaranteeAgreed, uint32(len(data)), typ, data[off:off+n])
		if _, err := h.retry(ctx, cpgwire.ReqPartialMcast, msg); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// waitFlow waits while the service holds this handle's multicasts.
func (h *Handle) waitFlow(ctx context.Context) error {
	for {
		h.fcMu.Lock()
		held, wake := h.fc != 0, h.fcWake
		h.fcMu.Unlock()
		if !held {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return errors.Join(ctx.Err(), ErrTryAgain)
		}
	}
}

// FlowControlled reports whether the service holds this handle's
// multicasts now (what cpg_flow_control_state_get would say if libcpg
// asked).
func (h *Handle) FlowControlled() bool {
	h.fcMu.Lock()
	defer h.fcMu.Unlock()
	return h.fc != 0
}

// Members lists group's members (cpg_membership_get), by node id then
// pid.
func (h *Handle) Members(ctx context.Context, group string) ([]Address, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.call(ctx, cpgwire.ReqMembership, cpgwire.EncodeMembership(cpgwire.Name(group)))
	return r.Members, err
}

// LocalNode is the node id of the handle's service (cpg_local_get).
func (h *Handle) LocalNode(ctx context.Context) (uint32, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.call(ctx, cpgwire.ReqLocalGet, cpgwire.EncodeBareRequest(cpgwire.ReqLocalGet))
	return r.NodeID, err
}

// Process is one member of one group, as an iteration gives it.
type Process struct {
	Group  string
	NodeID uint32
	PID    uint32
}

// Processes lists every member of every group, in corosync's iteration
// order (cpg_iteration_* with CPG_ITERATION_ALL).
func (h *Handle) Processes(ctx context.Context) ([]Process, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.call(ctx, cpgwire.ReqIterInit, cpgwire.EncodeIterInit(cpgwire.IterAll, ""))
	if err != nil {
		return nil, err
	}
	defer func() {
		_, _ = h.call(ctx, cpgwire.ReqIterFinalize, cpgwire.EncodeIterHandle(cpgwire.ReqIterFinalize, r.Handle))
	}()
	var out []Process
	for {
		n, err := h.call(ctx, cpgwire.ReqIterNext, cpgwire.EncodeIterHandle(cpgwire.ReqIterNext, r.Handle))
		if errors.Is(err, cswire.ErrNoSections) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, Process{Group: string(n.Desc.Group), NodeID: n.Desc.NodeID, PID: n.Desc.PID})
	}
}

// Close finalizes the handle (cpg_finalize) and ends its session: a
// member still in its group leaves it with PROCDOWN. Events is closed.
func (h *Handle) Close() error {
	var err error
	h.closeOnce.Do(func() {
		h.mu.Lock()
		if !h.closed {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = h.call(ctx, cpgwire.ReqFinalize, cpgwire.EncodeBareRequest(cpgwire.ReqFinalize))
			cancel()
			h.closed = true
		}
		h.mu.Unlock()
		h.shutdown()
	})
	return err
}

func (h *Handle) shutdown() {
	if h.sess != nil {
		h.sess.Close()
	}
	h.cancel()
	_ = h.sub.Unsubscribe()
	h.queue.close()
}

// onEvent takes a callback message, or the service's flow control.
func (h *Handle) onEvent(m *nats.Msg) {
	if len(m.Data) == 0 && m.Header != nil {
		if v := m.Header.Get(session.HdrFlow); v != "" {
			level, _ := strconv.ParseInt(v, 10, 32)
			h.fcMu.Lock()
			h.fc = int32(level)
			if level == 0 {
				close(h.fcWake)
				h.fcWake = make(chan struct{})
			}
			h.fcMu.Unlock()
		}
		return
	}
	e, err := cpgwire.DecodeEvent(m.Data)
	if err != nil {
		h.log.Warn("cpg: undecodable callback", "err", err)
		return
	}
	ev := Event{Group: string(e.Group)}
	switch e.ID {
	case cpgwire.ResDeliverCallback:
		ev.Kind, ev.From, ev.Data = Deliver, Address{NodeID: e.NodeID, PID: e.PID}, slices.Clone(e.Data)
	case cpgwire.ResPartialDeliver:
		data, whole := h.queue.assemble(e)
		if !whole {
			return
		}
		ev.Kind, ev.From, ev.Data = Deliver, Address{NodeID: e.NodeID, PID: e.PID}, data
	case cpgwire.ResConfChgCallback:
		ev.Kind, ev.Members, ev.Left, ev.Joined = ConfChg, e.Members, e.Left, e.Joined
		h.queue.forget(e.Left)
	case cpgwire.ResTotemConfChgCallback:
		ev.Kind, ev.Ring, ev.TotemMembers = TotemConfChg, totem.RingID{Rep: e.RingNode, Seq: e.RingSeq}, e.TotemMembers
	default:
		return
	}
	if !h.queue.push(ev) {
		h.log.Error("cpg: the program does not read its callbacks; closing the handle", "limit", maxBacklog)
		go func() { _ = h.Close() }()
	}
}
