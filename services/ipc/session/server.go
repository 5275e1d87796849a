package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
)

// Conn is one client connection as a component sees it.
type Conn struct {
	ID       string
	PID      uint32
	UID, GID uint32
	gateway  string
	events   string
	nc       *nats.Conn
}

// SendEvent publishes a raw libqb event message to the client's event
// socket (through its gateway). Safe for concurrent use.
func (c *Conn) SendEvent(msg []byte) error {
	if err := c.nc.Publish(c.events, msg); err != nil {
		return fmt.Errorf("sending an event to connection %s: %w", c.ID, err)
	}
	return nil
}

// SetFlowControl sets the request flow control of the client's connection
// (libqb.Conn.SetFlowControl's levels), through its gateway.
func (c *Conn) SetFlowControl(level int32) error {
	m := nats.NewMsg(c.events)
	m.Header.Set(HdrFlow, strconv.FormatInt(int64(level), 10))
	if err := c.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("flow control of connection %s: %w", c.ID, err)
	}
	return nil
}

// Session is a component's state for one connection.
type Session interface {
	// Request handles one raw request message and returns the raw
	// response message. Requests of one session never overlap.
	Request(ctx context.Context, msg []byte) []byte
	// Close releases the session's resources (its tracks, its joins).
	Close()
}

// Handler opens sessions. Returning a cswire.Error refuses the connection
// with that code.
type Handler interface {
	Open(c *Conn) (Session, error)
}

// Settler is a Handler whose sessions write to objdb through the node's
// objdb process (objdb/client), whose writes reach the gateway's copy a
// feed hop after the answer would: Settle, called after each request
// with a reply, returns the Position the writes made so far are applied
// through (zero: none since the last), and the answer carries it
// (objdb.HdrPosition) for the gateway to wait on. corosync serves a
// request and the next client's read in one process; so a client that
// saw a request answered reads its writes here too (docs/objdb.md, "Read
// your writes through the gateway").
type Settler interface {
	Handler
	Settle(ctx context.Context) (objdb.Position, error)
}

// Settling makes h a Settler with settle (an objdb client's Settle).
func Settling(h Handler, settle func(ctx context.Context) (objdb.Position, error)) Settler {
	return settling{Handler: h, settle: settle}
}

type settling struct {
	Handler
	settle func(ctx context.Context) (objdb.Position, error)
}

func (s settling) Settle(ctx context.Context) (objdb.Position, error) { return s.settle(ctx) }

// Server serves a component's sessions on the bus.
type Server struct {
	nc        *nats.Conn
	component string
	subject   string // this instance's session subject
	h         Handler
	log       *slog.Logger
	// GatewayTimeout is how long a gateway may stay silent before its
	// sessions are dropped; tests shorten it.
	GatewayTimeout time.Duration

	mu       sync.Mutex
	sessions map[string]*served
	alive    map[string]time.Time // gateway alive subject → last heard
	aliveSub map[string]*nats.Subscription
	// followed pokes Run when a gateway is first followed: Run looks for
	// silent gateways only while it follows some.
	followed chan struct{}
}

type served struct {
	conn  *Conn
	s     Session
	queue chan *nats.Msg
	done  chan struct{}
}

// NewServer prepares a server for component (the component's bus
// subject) with a session subject unique to this instance.
func NewServer(nc *nats.Conn, component string, h Handler, log *slog.Logger) *Server {
	return &Server{
		nc: nc, component: component, h: h, log: log,
		subject:        component + ".session." + nuid.Next(),
		GatewayTimeout: GatewayTimeout,
		sessions:       map[string]*served{},
		alive:          map[string]time.Time{},
		aliveSub:       map[string]*nats.Subscription{},
		followed:       make(chan struct{}, 1),
	}
}

// Run serves the sessions' requests until ctx ends, then closes every
// session. New sessions come through Open, which the component serves as
// its loader function "open".
func (s *Server) Run(ctx context.Context) error {
	reqs, err := s.nc.Subscribe(s.subject, s.request)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", s.subject, err)
	}
	// Asynchronous requests (CPG's multicasts, up to 1 MiB each) must
	// not be dropped as a slow consumer's: the components flow-control
	// their clients instead.
	_ = reqs.SetPendingLimits(-1, -1)
	defer func() { _ = reqs.Unsubscribe() }()
	closes, err := s.nc.Subscribe(CloseSubject(s.subject), func(m *nats.Msg) { s.drop(m.Header.Get(HdrConn)) })
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", CloseSubject(s.subject), err)
	}
	defer func() { _ = closes.Unsubscribe() }()

	// Silent gateways are looked for every AliveInterval while some
	// gateway is followed (it has or had sessions here), and not at all
	// otherwise: an instance without sessions does not wake.
	every := min(AliveInterval, s.GatewayTimeout/2)
	tick := time.NewTimer(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			ids := make([]string, 0, len(s.sessions))
			for id := range s.sessions {
				ids = append(ids, id)
			}
			s.mu.Unlock()
			for _, id := range ids {
				s.drop(id)
			}
			return nil
		case <-s.followed:
			tick.Reset(every)
		case now := <-tick.C:
			if s.expire(now) {
				tick.Reset(every)
			}
		}
	}
}

// Quiet reports whether no session is open: a retiring instance of a
// session component leaves only then (loader.Component.Quiet).
func (s *Server) Quiet() bool { return s.Sessions() == 0 }

// Sessions is the number of open sessions (for stats).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Open takes a new connection (the gateway's open request, headers as
// in the package comment) and returns the JSON OpenReply to answer it with.
func (s *Server) Open(m *nats.Msg) []byte {
	h := m.Header
	c := &Conn{ID: h.Get(HdrConn), gateway: h.Get(HdrGateway), events: h.Get(HdrEvents), nc: s.nc}
	refuse := func(code cswire.Error, why string) []byte {
		s.log.Warn("refusing a connection", "conn", c.ID, "why", why)
		b, _ := json.Marshal(OpenReply{Error: code, Why: why})
		return b
	}
	if c.ID == "" || c.events == "" || c.gateway == "" {
		return refuse(cswire.ErrInvalidParam, "open without connection id, events or gateway subject")
	}
	for _, f := range []struct {
		hdr string
		dst *uint32
	}{{HdrPID, &c.PID}, {HdrUID, &c.UID}, {HdrGID, &c.GID}} {
		v, err := strconv.ParseUint(h.Get(f.hdr), 10, 32)
		if err != nil {
			return refuse(cswire.ErrInvalidParam, "bad "+f.hdr)
		}
		*f.dst = uint32(v)
	}
	sess, err := s.h.Open(c)
	if err != nil {
		return refuse(cswire.Code(err), err.Error())
	}
	sv := &served{conn: c, s: sess, queue: make(chan *nats.Msg, 64), done: make(chan struct{})}
	s.mu.Lock()
	if old, ok := s.sessions[c.ID]; ok {
		// A gateway never reuses an id; if it does, the old session is
		// gone from its point of view.
		s.mu.Unlock()
		s.drop(old.conn.ID)
		s.mu.Lock()
	}
	s.sessions[c.ID] = sv
	_, known := s.alive[c.gateway]
	// An open is word from the gateway too: a gateway publishes its
	// alive messages only while it has connections, so the last one a
	// gateway followed before may be old.
	s.alive[c.gateway] = time.Now()
	if !known {
		select {
		case s.followed <- struct{}{}:
		default:
		}
		gw := c.gateway
		sub, err := s.nc.Subscribe(gw, func(*nats.Msg) {
			s.mu.Lock()
			s.alive[gw] = time.Now()
			s.mu.Unlock()
		})
		if err == nil {
			s.aliveSub[gw] = sub
		}
	}
	s.mu.Unlock()
	go s.work(sv)
	b, _ := json.Marshal(OpenReply{Session: s.subject})
	return b
}

// request queues a request for its session's worker: one worker per
// session keeps each connection's requests in order without making one
// slow client hold up the others.
func (s *Server) request(m *nats.Msg) {
	if m.Header.Get(HdrProbe) != "" {
		s.probe(m)
		return
	}
	id := m.Header.Get(HdrConn)
	s.mu.Lock()
	sv := s.sessions[id]
	s.mu.Unlock()
	if sv == nil {
		// The session is gone (expired, or this instance restarted):
		// an empty reply tells the gateway to close the connection.
		respondGone(m)
		return
	}
	select {
	case sv.queue <- m:
	case <-sv.done:
		respondGone(m)
	}
}

func (s *Server) work(sv *served) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		select {
		case m := <-sv.queue:
			resp := sv.s.Request(ctx, m.Data)
			if m.Reply == "" {
				continue // asynchronous: nothing answers it
			}
			if err := s.respond(ctx, m, resp); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				s.log.Debug("replying to a request", "conn", sv.conn.ID, "err", err)
			}
		case <-sv.done:
			// Requests queued behind the end get the empty reply that
			// tells their gateway the session is gone, now rather than
			// at its timeout.
			for {
				select {
				case m := <-sv.queue:
					respondGone(m)
				default:
					return
				}
			}
		}
	}
}

// respond answers a request; a Settler's answer carries the position its
// writes are applied through.
func (s *Server) respond(ctx context.Context, m *nats.Msg, resp []byte) error {
	st, ok := s.h.(Settler)
	if !ok || len(resp) == 0 {
		return m.Respond(resp)
	}
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	p, err := st.Settle(ctx)
	if err != nil {
		// The answer goes anyway: the writes are done, only not known to
		// be in the keeper yet; the client may read the older values.
		s.log.Warn("answering before the request's objdb writes are confirmed", "conn", m.Header.Get(HdrConn), "err", err)
	}
	if p.IsZero() {
		return m.Respond(resp)
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(objdb.HdrPosition, p.String())
	r.Data = resp
	return m.RespondMsg(r)
}

// settleTimeout bounds a Settle: objdb's write timeout, past which the
// keeper is not confirming anything anyway.
const settleTimeout = 5 * time.Second

// probe answers a gateway's probe (Probe): which of the connection ids
// it lists this instance does not know. Answered at once, beside the
// sessions' queues: a busy session must not make its instance look dead.
func (s *Server) probe(m *nats.Msg) {
	var ids []string
	if err := json.Unmarshal(m.Data, &ids); err != nil {
		s.log.Debug("undecodable session probe", "err", err)
	}
	gone := []string{}
	s.mu.Lock()
	for _, id := range ids {
		if s.sessions[id] == nil {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	b, _ := json.Marshal(ProbeReply{Gone: gone})
	_ = m.Respond(b)
}

// respondGone tells a gateway that the session of its request is gone (an
// asynchronous request has no one to tell).
func respondGone(m *nats.Msg) {
	if m.Reply != "" {
		_ = m.Respond(nil)
	}
}

func (s *Server) drop(id string) {
	s.mu.Lock()
	sv, ok := s.sessions[id]
	if ok {
		delete(s.sessions, id)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	close(sv.done)
	sv.s.Close()
}

// expire drops the sessions of gateways that stopped saying they are
// alive, and forgets those gateways; it reports whether some gateway is
// still followed.
func (s *Server) expire(now time.Time) bool {
	s.mu.Lock()
	var dead []string
	for gw, t := range s.alive {
		if now.Sub(t) > s.GatewayTimeout {
			dead = append(dead, gw)
		}
	}
	var ids []string
	for _, gw := range dead {
		delete(s.alive, gw)
		if sub := s.aliveSub[gw]; sub != nil {
			_ = sub.Unsubscribe()
		}
		delete(s.aliveSub, gw)
		for id, sv := range s.sessions {
			if sv.conn.gateway == gw {
				ids = append(ids, id)
			}
		}
	}
	following := len(s.alive) > 0
	s.mu.Unlock()
	for _, id := range ids {
		s.log.Info("dropping a session of a silent gateway", "conn", id)
		s.drop(id)
	}
	return following
}
