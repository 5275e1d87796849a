package cpg

import (
	"context"
	"errors"

	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
)

// Client is what the service needs of a client connection: where its
// callbacks go and how its requests are flow-controlled (libqb's levels),
// through the gateway's session or straight to a colocated connection.
type Client struct {
	Events func(msg []byte) error
	Flow   func(level int32)
	// Overloaded, when set, counts a request answered CS_ERR_TRY_AGAIN
	// without running because a sync runs (corosync's overload counter,
	// stats.ipcs.*.overload). A colocated connection's is its libqb
	// connection's; the gateway counts those it holds itself for a
	// session.
	Overloaded func()
	// PID and UID are the client's credentials (SO_PEERCRED); Label
	// names the connection in logs.
	PID, UID uint32
	Label    string
}

// Connection states (corosync's cpd_state).
type connState uint8

const (
	stateUnjoined connState = iota
	stateLeaveStarted
	stateJoinStarted
	stateJoinCompleted
)

// Conn is one libcpg connection (corosync's cpg_pd): at most one group
// joined at a time, its iterations and zero-copy buffers.
type Conn struct {
	s      *Service
	client Client
	source uint64

	// Under s.mu.
	state                state
	group                cpgwire.Name
	pid                  uint32
	flags                uint32
	initialTotemConfSent bool
	transitions          uint64 // confchgs sent: a fragmented send they interrupt fails
	fragStart            uint64
	finalized            bool
	closed               bool
	leaveDone            bool // its leave was delivered
	iters                map[uint64]*iteration
	nextIter             uint64
	zcb                  zcbMaps
}

type state = connState

type iteration struct {
	items []cpgwire.Description
	pos   int
}

// Open starts a connection's state. It refuses (CS_ERR_TRY_AGAIN) until
// the instance has synchronized the groups once.
func (s *Service) Open(cl Client) (*Conn, error) {
	if cl.Flow == nil {
		cl.Flow = func(int32) {}
	}
	if cl.Overloaded == nil {
		cl.Overloaded = func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return nil, ErrNotReady
	}
	s.nextConn++
	c := &Conn{s: s, client: cl, source: s.prefix | s.nextConn, iters: map[uint64]*iteration{}}
	s.conns[c.source] = c
	s.moved.Poke()
	if s.fcLevel != 0 {
		cl.Flow(s.fcLevel)
	}
	return c, nil
}

// held are the calls corosync answers CS_ERR_TRY_AGAIN while a sync runs
// (its CS_LIB_FLOW_CONTROL_REQUIRED handlers but the multicast, which is
// asynchronous: its clients are flow-controlled instead).
func held(id int32) bool {
	switch id {
	case cpgwire.ReqJoin, cpgwire.ReqLeave, cpgwire.ReqFinalize, cpgwire.ReqZCAlloc,
		cpgwire.ReqZCFree, cpgwire.ReqZCExecute, cpgwire.ReqPartialMcast:
		return true
	}
	return false
}

// Event backlog limits of a CPG connection in the gateway. corosync queues
// a client's callbacks without limit; the gateway holds the requests of a
// client that does not read them, and disconnects it at the maximum. A
// libcpg client sending a large message in fragments does not read while
// it sends and gets its own message back meanwhile: the limits let a
// 32 MiB message through.
const (
	EventQueueHigh = 40 << 20
	EventQueueMax  = 160 << 20
)

// HeldDuringSync is the gateway route's list of the same calls.
func HeldDuringSync(id int32) bool { return held(id) }

// Async tells the gateway which calls get no response: the multicast.
func Async(id int32) bool { return id == cpgwire.ReqMcast }

// Request handles one libcpg request and returns its response,
// libqb.NoResponse for the multicast (libcpg does not wait for one), or
// nil when the connection must end.
func (c *Conn) Request(ctx context.Context, msg []byte) []byte {
	s := c.s
	r, err := cpgwire.DecodeRequest(msg)
	if err != nil {
		s.log.Warn("malformed cpg request", "conn", c.client.Label, "id", r.ID, "err", err)
		if r.ID == cpgwire.ReqMcast {
			return libqb.NoResponse
		}
		code := cswire.ErrInvalidParam
		if errors.Is(err, cpgwire.ErrNameTooLong) {
			code = cswire.ErrNameTooLong
		}
		return cpgwire.EncodeStatus(responseID(r.ID), code)
	}
	if held(r.ID) {
		s.mu.Lock()
		syncing := s.syncing
		s.mu.Unlock()
		if syncing {
			c.client.Overloaded()
			// A bare header with id 0, as corosync answers.
			return cpgwire.EncodeStatus(0, cswire.ErrTryAgain)
		}
	}
	switch r.ID {
	case cpgwire.ReqJoin:
		return cpgwire.EncodeStatus(cpgwire.ResJoin, c.join(r))
	case cpgwire.ReqLeave:
		return cpgwire.EncodeStatus(cpgwire.ResLeave, c.leave(r))
	case cpgwire.ReqMcast:
		c.mcast(ctx, r)
		return libqb.NoResponse
	case cpgwire.ReqPartialMcast:
		return cpgwire.EncodeStatus(cpgwire.ResPartialSend, c.partial(ctx, r))
	case cpgwire.ReqMembership:
		s.mu.Lock()
		m := s.procs.members(r.Group)
		s.mu.Unlock()
		return cpgwire.EncodeMembershipResponse(m)
	case cpgwire.ReqLocalGet:
		return cpgwire.EncodeLocalGet(s.node)
	case cpgwire.ReqIterInit:
		return c.iterInit(r)
	case cpgwire.ReqIterNext:
		return c.iterNext(r)
	case cpgwire.ReqIterFinalize:
		s.mu.Lock()
		_, ok := c.iters[r.Handle]
		delete(c.iters, r.Handle)
		s.mu.Unlock()
		if !ok {
			return cpgwire.EncodeStatus(cpgwire.ResIterFinalize, cswire.ErrLibrary)
		}
		return cpgwire.EncodeStatus(cpgwire.ResIterFinalize, cswire.OK)
	case cpgwire.ReqFinalize:
		// No more callbacks; the connection's end sends its leave.
		s.mu.Lock()
		c.finalized = true
		s.mu.Unlock()
		return cpgwire.EncodeStatus(cpgwire.ResFinalize, cswire.OK)
	case cpgwire.ReqZCAlloc:
		return c.zcAlloc(r)
	case cpgwire.ReqZCFree:
		return c.zcFree(r)
	case cpgwire.ReqZCExecute:
		return cpgwire.EncodeStatus(cpgwire.ResMcast, c.zcExecute(ctx, r))
	}
	return cpgwire.EncodeStatus(0, cswire.ErrInvalidParam)
}

// responseID is the response id of a request id.
func responseID(req int32) int32 {
	switch req {
	case cpgwire.ReqJoin:
		return cpgwire.ResJoin
	case cpgwire.ReqLeave:
		return cpgwire.ResLeave
	case cpgwire.ReqMembership:
		return cpgwire.ResMembership
	case cpgwire.ReqLocalGet:
		return cpgwire.ResLocalGet
	case cpgwire.ReqIterInit:
		return cpgwire.ResIterInit
	case cpgwire.ReqIterNext:
		return cpgwire.ResIterNext
	case cpgwire.ReqIterFinalize:
		return cpgwire.ResIterFinalize
	case cpgwire.ReqFinalize:
		return cpgwire.ResFinalize
	case cpgwire.ReqPartialMcast:
		return cpgwire.ResPartialSend
	case cpgwire.ReqZCExecute:
		return cpgwire.ResMcast
	}
	return 0
}

// join is corosync's message_handler_req_lib_cpg_join.
func (c *Conn) join(r cpgwire.Request) (res cswire.Error) {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	// Other nodes' multicasts of the group before the procjoin is
	// submitted: every one ordered after the join then comes.
	if err := s.wantGroup(r.Group); err != nil {
		s.log.Warn("join refused for now", "conn", c.client.Label, "err", err)
		return cswire.ErrTryAgain
	}
	defer func() {
		if res != cswire.OK {
			s.queueSend(s.trimKeys)
		}
	}()
	s.mu.Lock()
	if c.closed {
		s.mu.Unlock()
		return cswire.ErrBadHandle
	}
	// The same process in the same group on any connection (one that
	// left it included: corosync keeps its pid and group).
	for _, o := range s.conns {
		if o.pid == r.PID && o.group == r.Group && o.state != stateUnjoined {
			s.mu.Unlock()
			return cswire.ErrExist
		}
	}
	// Its leave not delivered yet.
	if s.procs.has(r.Group, s.node, r.PID) {
		s.mu.Unlock()
		return cswire.ErrTryAgain
	}
	switch c.state {
	case stateLeaveStarted:
		s.mu.Unlock()
		if c.leaveDone {
			// corosync answers CS_ERR_BUSY here for ever, which libcpg
			// retries for ever: the connection can join no group again.
			return cswire.ErrExist
		}
		return cswire.ErrBusy
	case stateJoinStarted, stateJoinCompleted:
		s.mu.Unlock()
		return cswire.ErrExist
	}
	if s.tc.InFlight() >= s.tc.Window() {
		s.mu.Unlock()
		return cswire.ErrTryAgain
	}
	c.state, c.pid, c.flags, c.group = stateJoinStarted, r.PID, r.Flags, r.Group
	s.joinGroup(c)
	s.pending = append(s.pending, pendingOp{join: true, pid: r.PID, group: r.Group})
	s.mu.Unlock()
	if err := s.send(context.Background(), &cpgwire.Exec{Kind: cpgwire.ExecProcJoin, PID: r.PID, Reason: cpgwire.ReasonJoin, Group: r.Group}); err != nil {
		s.log.Error("join not multicast", "conn", c.client.Label, "err", err)
		return cswire.ErrLibrary
	}
	return cswire.OK
}

// leave is corosync's message_handler_req_lib_cpg_leave. Like corosync,
// it leaves the connection's group whatever group the request names.
func (c *Conn) leave(r cpgwire.Request) cswire.Error {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	switch c.state {
	case stateUnjoined, stateLeaveStarted:
		s.mu.Unlock()
		return cswire.ErrNotExist
	case stateJoinStarted:
		s.mu.Unlock()
		return cswire.ErrBusy
	}
	if s.tc.InFlight() >= s.tc.Window() {
		s.mu.Unlock()
		return cswire.ErrTryAgain
	}
	c.state = stateLeaveStarted
	g, pid := c.group, c.pid
	s.pending = append(s.pending, pendingOp{pid: pid, group: g})
	s.mu.Unlock()
	if err := s.send(context.Background(), &cpgwire.Exec{Kind: cpgwire.ExecProcLeave, PID: pid, Reason: cpgwire.ReasonLeave, Group: g}); err != nil {
		s.log.Error("leave not multicast", "conn", c.client.Label, "err", err)
		return cswire.ErrLibrary
	}
	return cswire.OK
}

// mcast is corosync's message_handler_req_lib_cpg_mcast: asynchronous, so
// a multicast the connection may not make is logged and dropped, as
// corosync does.
func (c *Conn) mcast(ctx context.Context, r cpgwire.Request) {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if c.closed || (c.state != stateJoinStarted && c.state != stateJoinCompleted) {
		s.mu.Unlock()
		s.log.Error("multicast of a connection that is not in a group; dropped", "conn", c.client.Label)
		return
	}
	e := cpgwire.Exec{Kind: cpgwire.ExecMcast, PID: c.pid, Source: c.source, Group: c.group, Data: r.Data}
	if c.state == stateJoinCompleted && s.alone() {
		s.deliverAlone(&e)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if err := s.send(ctx, &e); err != nil {
		s.log.Error("multicast not sent", "conn", c.client.Label, "err", err)
	}
}

// partial is corosync's message_handler_req_lib_cpg_partial_mcast: one
// fragment of a message larger than libcpg sends at once. A configuration
// change of the group since the first fragment interrupts the message.
func (c *Conn) partial(ctx context.Context, r cpgwire.Request) cswire.Error {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if c.closed || (c.state != stateJoinStarted && c.state != stateJoinCompleted) {
		s.mu.Unlock()
		return cswire.ErrNotExist
	}
	if r.FragType == cpgwire.PartialFirst {
		c.fragStart = c.transitions
	}
	if c.transitions != c.fragStart {
		s.mu.Unlock()
		return cswire.ErrInterrupt
	}
	e := cpgwire.Exec{Kind: cpgwire.ExecPartial, PID: c.pid, Source: c.source, Group: c.group,
		FragType: r.FragType, MsgLen: r.MsgLen, Data: r.Data}
	s.mu.Unlock()
	if err := s.send(ctx, &e); err != nil {
		return cswire.ErrTryAgain
	}
	return cswire.OK
}

func (c *Conn) iterInit(r cpgwire.Request) []byte {
	s := c.s
	switch r.IterType {
	case cpgwire.IterNameOnly, cpgwire.IterOneGroup, cpgwire.IterAll:
	default:
		return cpgwire.EncodeIterInitResponse(cswire.ErrInvalidParam, 0)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.nextIter++
	h := c.nextIter | 0x1000_0000_0000 // never zero: libcpg treats 0 as none
	c.iters[h] = &iteration{items: s.procs.iteration(r.IterType, r.Group)}
	return cpgwire.EncodeIterInitResponse(cswire.OK, h)
}

func (c *Conn) iterNext(r cpgwire.Request) []byte {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	it := c.iters[r.Handle]
	if it == nil {
		return cpgwire.EncodeIterNextResponse(cswire.ErrLibrary, cpgwire.Description{})
	}
	if it.pos >= len(it.items) {
		return cpgwire.EncodeIterNextResponse(cswire.ErrNoSections, cpgwire.Description{})
	}
	d := it.items[it.pos]
	it.pos++
	return cpgwire.EncodeIterNextResponse(cswire.OK, d)
}

// joinGroup indexes a connection under its group. Called with mu held.
func (s *Service) joinGroup(c *Conn) {
	m := s.byGroup[c.group]
	if m == nil {
		m = map[*Conn]struct{}{}
		s.byGroup[c.group] = m
	}
	m[c] = struct{}{}
}

// Close ends the connection (corosync's cpg_lib_exit_fn): a process still
// in its group leaves it with PROCDOWN, on every node at the same point of
// the order.
func (c *Conn) Close() {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if c.closed {
		s.mu.Unlock()
		return
	}
	c.closed = true
	delete(s.conns, c.source)
	s.moved.Poke()
	var leave *cpgwire.Exec
	if c.state == stateJoinStarted || c.state == stateJoinCompleted {
		leave = &cpgwire.Exec{Kind: cpgwire.ExecProcLeave, PID: c.pid, Reason: cpgwire.ReasonProcDown, Group: c.group}
		s.pending = append(s.pending, pendingOp{pid: c.pid, group: c.group})
	}
	if c.state != stateUnjoined {
		// No callbacks to a connection that is gone; its group keeps
		// the process until the leave is delivered.
		if m := s.byGroup[c.group]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(s.byGroup, c.group)
				s.queueSend(s.trimKeys)
			}
		}
	}
	c.iters = nil
	c.zcb.freeAll()
	s.mu.Unlock()
	if leave != nil {
		if err := s.send(context.Background(), leave); err != nil {
			s.log.Error("the leave of a closed connection was not multicast", "conn", c.client.Label, "err", err)
		}
	}
}
