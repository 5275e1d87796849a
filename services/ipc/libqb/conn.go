package libqb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Conn is one client connection.
type Conn struct {
	ID      uint64
	Service string
	Creds   Creds

	srv      *Server
	log      *slog.Logger
	setup    *os.File // the setup stream socket, through the poller
	setupRaw syscall.RawConn
	setupFD  int // for the directory's name only: libqb names it after the descriptor
	dir      string
	maxSize  int

	trMu sync.Mutex
	tr   transport // set once the connection is admitted

	events   eventQueue
	done     chan struct{} // closed at shutdown
	doneOnce sync.Once

	// Flow control of the requests: the event backlog's and the
	// service's (SetFlowControl).
	fcMu      sync.Mutex
	fcEvents  bool
	fcService int32
	fcShown   int32 // the level last shown to the client

	counters connCounters
	// served is set, under the server's mu, once the client has its
	// connection response; procName is known from then on.
	served   bool
	procName string
}

// Flow-control levels of the request channel, as libqb's
// qb_ipcs_request_rate_limit sets them: a client refuses a request while
// the level is set and at most the request's own limit, which libqb
// clients keep at 1 except around corosync's asynchronous calls (libcpg
// raises it to 2 for its multicast).
const (
	FlowOff   int32 = 0
	FlowAll   int32 = 1 // QB_IPCS_RATE_OFF: every request waits
	FlowAsync int32 = 2 // QB_IPCS_RATE_OFF_2: only the asynchronous calls wait
)

// SetFlowControl is the service's own flow control of the connection's
// requests: corosync raises FlowAsync on CPG's connections while its
// totem queue is full or a sync runs. The connection's event backlog,
// when it has one, holds every request whatever the service says.
func (c *Conn) SetFlowControl(level int32) {
	c.fcMu.Lock()
	c.fcService = level
	c.applyFlowControl()
	c.fcMu.Unlock()
}

// eventFlowControl is the event backlog's flow control.
func (c *Conn) eventFlowControl(on bool) {
	c.fcMu.Lock()
	c.fcEvents = on
	c.applyFlowControl()
	c.fcMu.Unlock()
}

// applyFlowControl shows the level in force to the client. Called with
// fcMu held.
func (c *Conn) applyFlowControl() {
	c.trMu.Lock()
	tr := c.tr
	c.trMu.Unlock()
	if tr == nil {
		return
	}
	level := c.fcService
	if c.fcEvents {
		level = FlowAll
	}
	tr.setFlowControl(level)
	if level != c.fcShown {
		c.fcShown = level
		c.counters.flowControl.Store(level)
		c.counters.flowControlCount.Add(1)
	}
}

// transport is what differs between libqb's connection types: where
// requests, responses and events travel, and how flow control is shown.
type transport interface {
	// response fills the connection response's type and three names.
	response() (typ int32, request, response, event string)
	// serveRequests reads requests and answers each with handle's
	// response until the connection ends; handle's nil ends it, its
	// NoResponse (empty) answers nothing. msg is the transport's buffer,
	// valid until handle returns.
	serveRequests(handle func(msg []byte) []byte)
	// sendEvent hands one event to the client now, or fails with an
	// error for which retryable is true when the client has no room yet.
	sendEvent(msg []byte) error
	// setFlowControl sets the request channel's flow_control level
	// (FlowOff, FlowAll, FlowAsync): while it holds a request, libqb
	// clients refuse to send it (qb_ipcc_send returns -EAGAIN, corosync's
	// libraries CS_ERR_TRY_AGAIN).
	setFlowControl(level int32)
	// wake interrupts serveRequests; release frees what the transport
	// holds, once nothing uses it any more.
	wake()
	release()
}

// serve runs one connection: the handshake, then requests until the
// client leaves.
func (s *Server) serve(ctx context.Context, service string, h Handler, fd int) {
	c := &Conn{ID: s.nextID.Add(1), Service: service, srv: s, log: s.log, setupFD: fd, done: make(chan struct{})}
	c.setup = os.NewFile(uintptr(fd), "libqb setup")
	high, limit := s.EventQueueHigh, s.EventQueueMax
	if l, ok := h.(EventLimiter); ok {
		if hh, mm := l.EventLimits(); hh > 0 && mm >= hh {
			high, limit = hh, mm
		}
	}
	c.events.init(c, high, limit)
	var err error
	if c.setupRaw, err = c.setup.SyscallConn(); err != nil {
		_ = c.setup.Close()
		return
	}
	s.track(c, true)
	defer s.track(c, false)
	defer c.close()

	_ = c.setup.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	creds, maxSize, err := c.readConnRequest()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.limited.Warn("handshake timeout "+service, "libqb: closing a connection that sent no connection request in time",
				"service", service, "timeout", s.HandshakeTimeout)
		} else if ctx.Err() == nil {
			s.limited.Warn("bad handshake "+service, "libqb: bad connection request; closing", "service", service, "err", err)
		}
		return
	}
	c.Creds = creds
	c.maxSize = min(max(maxSize, defaultMaxMsgSize), s.MaxMsgSize)
	if !h.Admit(creds) {
		s.limited.Warn(fmt.Sprintf("refused uid %d gid %d", creds.UID, creds.GID), "libqb: refusing a client",
			"service", service, "pid", creds.PID, "uid", creds.UID, "gid", creds.GID)
		_ = c.writeSetup(connResponse(-int32(syscall.EACCES), 0, 0, "", "", ""))
		return
	}
	if err := c.setupTransport(); err != nil {
		s.limited.Warn("setup "+service, "libqb: setting up a connection", "service", service, "err", err)
		_ = c.writeSetup(connResponse(-int32(syscall.ENOMEM), 0, 0, "", "", ""))
		return
	}
	sess, err := h.Open(c)
	// The handler may have waited for its service (the gateway waits
	// for one the node is still starting): the answer gets its own time.
	_ = c.setup.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	if err != nil {
		// libqb's clients see the errno: EAGAIN becomes CS_ERR_TRY_AGAIN
		// in corosync's libraries, anything else a refusal.
		code := syscall.EACCES
		var errno syscall.Errno
		if errors.As(err, &errno) {
			code = errno
		}
		// A client retrying while a service is not ready would repeat
		// this every second: once a minute, with a count.
		s.limited.Warn("refused by "+service+" "+code.Error(), "libqb: service refused the connection", "service", service, "err", err)
		_ = c.writeSetup(connResponse(-int32(code), 0, 0, "", "", ""))
		return
	}
	defer sess.Close()
	typ, req, resp, evt := c.tr.response()
	if err := c.writeSetup(connResponse(0, typ, uint32(c.maxSize), req, resp, evt)); err != nil {
		return
	}
	// From here the connection lives as long as the client: no deadline.
	_ = c.setup.SetDeadline(time.Time{})
	s.served(c, procName(c.Creds.PID))
	go c.events.run()
	borrow := false
	if b, ok := sess.(Borrower); ok {
		borrow = b.BorrowsRequests()
	}
	var ids int32
	var refusal []byte
	if r, ok := h.(RequestRange); ok {
		ids, refusal = r.RequestIDs()
	}
	c.tr.serveRequests(func(msg []byte) []byte {
		c.counters.requests.Add(1)
		// The transport checked the header (checkRequest): its id is there.
		if id := int32(binary.LittleEndian.Uint32(msg)); ids > 0 && (id < 0 || id >= ids) {
			c.counters.invalidRequest.Add(1)
			return refusal
		}
		// msg is the transport's buffer, the next request's too.
		if !borrow {
			msg = bytes.Clone(msg)
		}
		resp := sess.Request(ctx, msg)
		if resp == nil {
			s.log.Info("libqb: the service ended the connection", "conn", c.ID, "service", c.Service, "pid", c.Creds.PID)
		}
		return resp
	})
}

// setupTransport makes the connection's directory and the transport's
// files and sockets in it.
func (c *Conn) setupTransport() error {
	dir, err := os.MkdirTemp(c.srv.ShmDir, fmt.Sprintf("qb-%d-%d-%d-", os.Getpid(), c.Creds.PID, c.setupFD))
	if err != nil {
		return fmt.Errorf("making the connection directory: %w", err)
	}
	c.dir = dir
	var t transport
	if c.srv.Transport == TransportSocket {
		t, err = newSocketTransport(c)
	} else {
		t, err = newShmTransport(c)
	}
	if err != nil {
		return err
	}
	c.trMu.Lock()
	c.tr = t
	c.trMu.Unlock()
	// As libqb's server: the client's own directory, which its group may
	// enter; made 0700 and handed over only once what it holds exists.
	if err := os.Chmod(dir, 0o770); err != nil {
		return fmt.Errorf("connection directory: %w", err)
	}
	_ = os.Chown(dir, int(c.Creds.UID), int(c.Creds.GID))
	return nil
}

// SendEvent sends a whole event message (header included) to the client,
// or queues it behind those the client has not taken yet. It never blocks
// on the client. Safe for concurrent use.
func (c *Conn) SendEvent(msg []byte) error {
	return c.events.push(msg)
}

// Disconnect ends the connection from the server's side, as a dying
// corosync ends its clients': the client's next call or dispatch fails
// (CS_ERR_LIBRARY, its connection-lost callbacks run), and the session is
// closed. Safe for concurrent use, and more than once.
func (c *Conn) Disconnect() { c.shutdown() }

// shutdown wakes the connection's goroutines; close releases everything.
func (c *Conn) shutdown() {
	c.doneOnce.Do(func() { close(c.done) })
	// A goroutine parked on the poller wakes on a deadline.
	_ = c.setup.SetDeadline(unixEpoch)
	_ = c.setupRaw.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	if t := c.transport(); t != nil {
		t.wake()
	}
}

func (c *Conn) transport() transport {
	c.trMu.Lock()
	defer c.trMu.Unlock()
	return c.tr
}

func (c *Conn) close() {
	c.events.stop()
	c.shutdown()
	if t := c.transport(); t != nil {
		t.release()
	}
	// Bytes left unread (the SHM transport reads requests' bytes in
	// batches) would make the kernel give the client ECONNRESET instead of
	// the end of the stream: read them first.
	_ = c.setupRaw.Control(func(fd uintptr) {
		var b [256]byte
		for {
			n, err := recvNow(int(fd), b[:], 0)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if n <= 0 || err != nil {
				return
			}
		}
	})
	// The descriptor is released only once no call uses it: its number
	// is the next socket's once closed.
	_ = c.setup.Close()
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// readSetup reads what the client sent on the setup socket: 0 and nil at
// its EOF.
func (c *Conn) readSetup(b []byte) (int, error) {
	for {
		var n int
		var err error
		if perr := c.setupRaw.Read(func(fd uintptr) bool {
			n, err = recvNow(int(fd), b, 0)
			return !errors.Is(err, syscall.EAGAIN)
		}); perr != nil {
			return 0, perr
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return n, err
	}
}

// writeSetup writes all of b on the setup socket, waiting for room on the
// poller (under the connection's deadline).
func (c *Conn) writeSetup(b []byte) error {
	for len(b) > 0 {
		var n int
		var err error
		if perr := c.setupRaw.Write(func(fd uintptr) bool {
			n, err = sendNow(int(fd), b)
			return !errors.Is(err, syscall.EAGAIN)
		}); perr != nil {
			return perr
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readConnRequest reads qb_ipc_connection_request and the credentials the
// kernel attached to it.
func (c *Conn) readConnRequest() (Creds, int, error) {
	buf := make([]byte, connRequestSize)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	got := 0
	var creds *syscall.Ucred
	for got < connRequestSize {
		var n, oobn int
		var err error
		if perr := c.setupRaw.Read(func(fd uintptr) bool {
			n, oobn, _, _, err = syscall.Recvmsg(int(fd), buf[got:], oob, syscall.MSG_DONTWAIT)
			return !errors.Is(err, syscall.EAGAIN)
		}); perr != nil {
			return Creds{}, 0, perr
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return Creds{}, 0, fmt.Errorf("reading the connection request: %w", err)
		}
		if n == 0 {
			return Creds{}, 0, errors.New("client closed before its connection request")
		}
		if creds == nil && oobn > 0 {
			creds = parseCreds(oob[:oobn])
		}
		got += n
	}
	if creds == nil {
		return Creds{}, 0, errors.New("no credentials with the connection request")
	}
	maxSize, err := parseConnRequest(buf)
	if err != nil {
		return Creds{}, 0, err
	}
	return Creds{PID: uint32(creds.Pid), UID: creds.Uid, GID: creds.Gid}, maxSize, nil
}

// parseCreds finds SCM_CREDENTIALS in a control message buffer.
func parseCreds(oob []byte) *syscall.Ucred {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		if uc, err := syscall.ParseUnixCredentials(&m); err == nil {
			return uc
		}
	}
	return nil
}

// parseConnRequest checks qb_ipc_connection_request and returns the
// client's max_msg_size.
func parseConnRequest(buf []byte) (int, error) {
	if len(buf) != connRequestSize {
		return 0, fmt.Errorf("connection request of %d bytes, want %d", len(buf), connRequestSize)
	}
	id := int32(binary.LittleEndian.Uint32(buf))
	size := int32(binary.LittleEndian.Uint32(buf[8:]))
	if id != msgAuthenticate || size != connRequestSize {
		return 0, fmt.Errorf("connection request with id %d size %d, want %d and %d", id, size, msgAuthenticate, connRequestSize)
	}
	return int(binary.LittleEndian.Uint32(buf[16:])), nil
}

// connResponse builds qb_ipc_connection_response: typ is the
// connection_type (0 SOCKET, 1 SHM), the three strings its request,
// response and event names.
func connResponse(errCode, typ int32, maxSize uint32, request, response, event string) []byte {
	b := make([]byte, connResponseSize)
	binary.LittleEndian.PutUint32(b[0:], uint32(0xffffffff)) // id -1: AUTHENTICATE
	binary.LittleEndian.PutUint32(b[8:], connResponseSize)
	binary.LittleEndian.PutUint32(b[16:], uint32(errCode))
	binary.LittleEndian.PutUint32(b[24:], uint32(typ))
	binary.LittleEndian.PutUint32(b[28:], maxSize)
	// connection at 32: an opaque value the client only echoes.
	binary.LittleEndian.PutUint64(b[32:], 1)
	copy(b[40:40+pathMax-1], request)
	copy(b[40+pathMax:40+2*pathMax-1], response)
	copy(b[40+2*pathMax:40+3*pathMax-1], event)
	return b
}

// NoResponse is what Session.Request returns for a request that gets no
// response: corosync's asynchronous calls (CPG's multicast), which the
// client sends without waiting.
var NoResponse = []byte{}

// ErrorResponse is a bare response header carrying a cs_error_t, with
// message id 0: what corosync answers a request it does not run (for
// CS_ERR_TRY_AGAIN while it is overloaded or syncing). corosync's client
// libraries read the error before anything else.
func ErrorResponse(code int32) []byte {
	b := make([]byte, ResHeaderSize)
	binary.LittleEndian.PutUint32(b[8:], ResHeaderSize)
	binary.LittleEndian.PutUint32(b[16:], uint32(code))
	return b
}

// checkRequest validates a request's header against its length: the
// message id, or an error saying why the connection must close.
func checkRequest(msg []byte) (int32, error) {
	if len(msg) < ReqHeaderSize {
		return 0, fmt.Errorf("request of %d bytes, shorter than its header", len(msg))
	}
	id := int32(binary.LittleEndian.Uint32(msg))
	if id == msgDisconnect {
		return id, nil
	}
	if size := int(int32(binary.LittleEndian.Uint32(msg[8:]))); size != len(msg) {
		return id, fmt.Errorf("request size field %d disagrees with the message's %d bytes", size, len(msg))
	}
	return id, nil
}

// isDone tells whether the connection is shutting down.
func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
