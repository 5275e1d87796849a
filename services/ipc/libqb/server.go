// Package libqb serves libqb's IPC of the SOCKET type, so that unmodified
// corosync clients (libcmap, corosync-cmapctl, …) connect to corobus.
//
// The protocol, as libqb 2.0 speaks it on Linux:
//
//   - setup: the client connects to the abstract stream socket named after
//     the service (sun_path NUL, the name, NUL padding: libqb passes the
//     full sizeof(struct sockaddr_un) and the padding is part of the name),
//     sends qb_ipc_connection_request {hdr{id -1, size 24}, max_msg_size},
//     and the kernel attaches its pid/uid/gid (SO_PASSCRED);
//   - the server makes /dev/shm/qb-<srvpid>-<clipid>-<fd>-XXXXXX/, a
//     24-byte control file "<dir>/qb-control-<svc>" (three {sent,
//     flow_control} int32 pairs: request, response, event) and two abstract
//     datagram sockets "<dir>/qb-<svc>-request" and "…-event-tx", and
//     answers qb_ipc_connection_response (12 328 bytes: hdr, type 0 =
//     SOCKET, max_msg_size, connection, then three PATH_MAX strings: the
//     control file, the base name, unused);
//   - the client binds "…-response" and "…-event" and connects them to the
//     server's sockets; requests and responses travel on the request pair,
//     events on the event pair; every message starts with its header, the
//     size field giving its length;
//   - the connection ends when the setup socket reaches EOF.
//
// Datagrams are bounded by the sockets' buffers: libqb raises SO_SNDBUF and
// SO_RCVBUF to max_msg_size, which the kernel caps at net.core.wmem_max /
// rmem_max (212 992 by default), so larger messages need those raised.
package libqb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Message ids of libqb itself.
const (
	msgAuthenticate = -1
	msgDisconnect   = -3
)

// Sizes of libqb's structs on 64-bit Linux (every field aligned to 8).
const (
	ReqHeaderSize     = 16
	ResHeaderSize     = 24
	connRequestSize   = 24
	pathMax           = 4096
	connResponseSize  = ResHeaderSize + 4 + 4 + 8 + 3*pathMax
	controlSize       = 24
	sockaddrPathLen   = 108
	defaultMaxMsgSize = 8192
)

// Creds are a client's credentials, from the kernel.
type Creds struct{ PID, UID, GID uint32 }

// Handler serves one service's connections.
type Handler interface {
	// Admit decides whether a client may connect (corosync's uidgid).
	Admit(c Creds) bool
	// Open starts a connection's state; events go through conn.SendEvent.
	Open(conn *Conn) (Session, error)
}

// Session is one connection's state.
type Session interface {
	// Request handles one whole request message (header included) and
	// returns the whole response message, or nil to end the connection.
	// Requests of a connection are handled one at a time, in order.
	Request(ctx context.Context, msg []byte) []byte
	Close()
}

// Server serves services on their abstract socket names.
type Server struct {
	log *slog.Logger
	// ShmDir is where connection directories are made (/dev/shm).
	ShmDir string
	// MaxMsgSize is the largest message the server accepts.
	MaxMsgSize int
	// EventQueueHigh is how many bytes of events may wait for a client
	// that does not read them before its requests are flow-controlled;
	// EventQueueMax is where the client is disconnected instead.
	EventQueueHigh, EventQueueMax int

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	serving sync.WaitGroup
	nextID  atomic.Uint64
}

// NewServer returns a server; Listen adds services to it.
func NewServer(log *slog.Logger) *Server {
	return &Server{log: log, ShmDir: "/dev/shm", MaxMsgSize: 1 << 20,
		EventQueueHigh: 1 << 20, EventQueueMax: 64 << 20, conns: map[*Conn]struct{}{}}
}

// AbstractAddr is the abstract unix address of name padded to the full
// sockaddr_un, as libqb binds and connects.
func AbstractAddr(name string) (*syscall.SockaddrUnix, error) {
	if len(name)+1 > sockaddrPathLen {
		return nil, fmt.Errorf("socket name %q too long", name)
	}
	b := make([]byte, sockaddrPathLen)
	b[0] = '@'
	copy(b[1:], name)
	return &syscall.SockaddrUnix{Name: string(b)}, nil
}

// Listen opens the setup socket of service and serves it until ctx ends.
func (s *Server) Listen(ctx context.Context, service string, h Handler) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("libqb %s: socket: %w", service, err)
	}
	addr, err := AbstractAddr(service)
	if err != nil {
		syscall.Close(fd)
		return err
	}
	if err := syscall.Bind(fd, addr); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("libqb %s: binding the abstract socket (is corosync running in this network namespace?): %w", service, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("libqb %s: SO_PASSCRED: %w", service, err)
	}
	if err := syscall.Listen(fd, 64); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("libqb %s: listen: %w", service, err)
	}
	// The descriptor is closed only once the shutdown that wakes Accept
	// has certainly run: its number is the next socket's once closed.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = syscall.Shutdown(fd, syscall.SHUT_RDWR); close(woken) })
	defer func() {
		if !stop() {
			<-woken
		}
		syscall.Close(fd)
	}()
	for {
		cfd, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
		if err != nil {
			if ctx.Err() != nil {
				// Return only once every connection has released its
				// directory and sockets.
				s.closeAll()
				s.serving.Wait()
				return nil
			}
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ECONNABORTED) {
				continue
			}
			return fmt.Errorf("libqb %s: accept: %w", service, err)
		}
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.serve(ctx, service, h, cfd)
		}()
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Only wake the connections: each one's own goroutine releases its
	// resources once it has stopped using them.
	for _, c := range conns {
		c.shutdown()
	}
}

// Conn is one client connection.
type Conn struct {
	ID      uint64
	Service string
	Creds   Creds

	setup   int
	req     int // bound <base>-request
	reqFile *os.File
	reqRaw  syscall.RawConn
	evt     int // bound <base>-event-tx
	base    string
	ctlPath string
	dir     string
	respTo  *syscall.SockaddrUnix
	evtTo   *syscall.SockaddrUnix
	maxSize int
	log     *slog.Logger

	// fdMu guards the descriptors and the control file against their
	// release: a descriptor number is reused by the next socket the
	// process opens, so nothing may touch one after close.
	fdMu   sync.Mutex
	closed bool
	ctl    []byte // the mmapped control file

	events eventQueue
}

// add adjusts one of the control file's counters (ch 0 request, 1
// response, 2 event). The control file may already be unmapped when a
// late event races the connection's end: then there is nothing to count.
func (c *Conn) add(ch int, delta int32) {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.ctl == nil {
		return
	}
	addCounter(c.ctl, ch, delta)
}

func addCounter(ctl []byte, ch int, delta int32) {
	atomic.AddInt32((*int32)(unsafe.Pointer(&ctl[ch*8])), delta)
}

// setRequestFlowControl raises or lowers the request channel's
// flow_control flag in the control file: while it is set, libqb clients
// refuse to send (qb_ipcc_send returns -EAGAIN, corosync's libraries
// CS_ERR_TRY_AGAIN).
func (c *Conn) setRequestFlowControl(on bool) {
	v := int32(0)
	if on {
		v = 1
	}
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.ctl == nil {
		return
	}
	atomic.StoreInt32((*int32)(unsafe.Pointer(&c.ctl[4])), v)
}

// shutdown wakes the connection's goroutines; close releases everything.
func (c *Conn) shutdown() {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.closed {
		return
	}
	_ = syscall.Shutdown(c.setup, syscall.SHUT_RDWR)
	if c.reqFile != nil {
		// A reader parked on the runtime's poller wakes on a deadline.
		_ = c.reqFile.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *Conn) close() {
	c.events.stop()
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	_ = syscall.Shutdown(c.setup, syscall.SHUT_RDWR)
	syscall.Close(c.setup)
	if c.reqFile != nil {
		_ = c.reqFile.Close()
	} else if c.req > 0 {
		syscall.Close(c.req)
	}
	if c.evt > 0 {
		syscall.Close(c.evt)
	}
	if c.ctl != nil {
		_ = syscall.Munmap(c.ctl)
		c.ctl = nil
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// serve runs one connection: the handshake, then requests until the
// setup socket closes.
func (s *Server) serve(ctx context.Context, service string, h Handler, fd int) {
	c := &Conn{ID: s.nextID.Add(1), Service: service, setup: fd, log: s.log}
	c.events.init(c, s.EventQueueHigh, s.EventQueueMax)
	defer c.close()
	creds, maxSize, err := readConnRequest(fd)
	if err != nil {
		s.log.Warn("libqb: bad connection request; closing", "service", service, "err", err)
		return
	}
	c.Creds = creds
	c.maxSize = min(max(maxSize, defaultMaxMsgSize), s.MaxMsgSize)
	if !h.Admit(creds) {
		s.log.Warn("libqb: refusing a client", "service", service, "pid", creds.PID, "uid", creds.UID, "gid", creds.GID)
		_ = writeAll(fd, connResponse(-int32(syscall.EACCES), 0, "", ""))
		return
	}
	if err := s.setupConn(c, service); err != nil {
		s.log.Warn("libqb: setting up a connection", "service", service, "err", err)
		_ = writeAll(fd, connResponse(-int32(syscall.ENOMEM), 0, "", ""))
		return
	}
	sess, err := h.Open(c)
	if err != nil {
		// libqb's clients see the errno: EAGAIN becomes CS_ERR_TRY_AGAIN
		// in corosync's libraries, anything else a refusal.
		code := syscall.EACCES
		var errno syscall.Errno
		if errors.As(err, &errno) {
			code = errno
		}
		s.log.Warn("libqb: service refused the connection", "service", service, "err", err)
		_ = writeAll(fd, connResponse(-int32(code), 0, "", ""))
		return
	}
	defer sess.Close()
	if err := writeAll(fd, connResponse(0, uint32(c.maxSize), c.ctlPath, c.base)); err != nil {
		return
	}
	go c.events.run()
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	s.requests(ctx, c, sess)
}

// setupConn makes the connection's directory, control file and sockets.
func (s *Server) setupConn(c *Conn, service string) error {
	dir, err := os.MkdirTemp(s.ShmDir, fmt.Sprintf("qb-%d-%d-%d-", os.Getpid(), c.Creds.PID, c.setup))
	if err != nil {
		return fmt.Errorf("making the connection directory: %w", err)
	}
	c.dir = dir
	_ = os.Chmod(dir, 0o770)
	_ = os.Chown(dir, int(c.Creds.UID), int(c.Creds.GID))
	desc := filepath.Join(dir, "qb")
	c.base = desc + "-" + service
	c.ctlPath = desc + "-control-" + service
	f, err := os.OpenFile(c.ctlPath, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("making the control file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(controlSize); err != nil {
		return err
	}
	_ = f.Chown(int(c.Creds.UID), int(c.Creds.GID))
	c.ctl, err = syscall.Mmap(int(f.Fd()), 0, controlSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the control file: %w", err)
	}
	if c.req, err = dgram(c.base+"-request", c.maxSize); err != nil {
		return err
	}
	// Requests go through the runtime's poller: a goroutine parked on it
	// wakes faster than a thread blocked in recvfrom gets its P back.
	if err := syscall.SetNonblock(c.req, true); err != nil {
		return fmt.Errorf("request socket: %w", err)
	}
	c.reqFile = os.NewFile(uintptr(c.req), c.base+"-request")
	if c.reqRaw, err = c.reqFile.SyscallConn(); err != nil {
		return fmt.Errorf("request socket: %w", err)
	}
	if c.evt, err = dgram(c.base+"-event-tx", c.maxSize); err != nil {
		return err
	}
	if c.respTo, err = AbstractAddr(c.base + "-response"); err != nil {
		return err
	}
	c.evtTo, err = AbstractAddr(c.base + "-event")
	return err
}

func dgram(name string, size int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("datagram socket: %w", err)
	}
	addr, err := AbstractAddr(name)
	if err == nil {
		err = syscall.Bind(fd, addr)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("binding %s: %w", name, err)
	}
	for _, opt := range []int{syscall.SO_SNDBUF, syscall.SO_RCVBUF} {
		if cur, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, opt); err == nil && cur <= size {
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, size)
		}
	}
	return fd, nil
}

// requests reads requests until the setup socket closes. The setup socket
// carries nothing after the handshake: its EOF is the client's goodbye.
func (s *Server) requests(ctx context.Context, c *Conn, sess Session) {
	eof := make(chan struct{})
	go func() {
		b := make([]byte, 64)
		for {
			n, err := syscall.Read(c.setup, b)
			if n <= 0 && !errors.Is(err, syscall.EINTR) {
				close(eof)
				// Wake the request reader.
				c.shutdown()
				return
			}
		}
	}()
	// The setup reader must be gone before the descriptors are closed.
	defer func() { c.shutdown(); <-eof }()
	buf := make([]byte, c.maxSize)
	for {
		n, err, rerr := c.receive(buf)
		if rerr != nil {
			return
		}
		select {
		case <-eof:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		if n == 0 {
			return
		}
		c.add(0, -1)
		msg := buf[:n]
		if n < ReqHeaderSize {
			s.log.Warn("libqb: request shorter than its header; closing", "conn", c.ID, "bytes", n)
			return
		}
		size := int(int32(binary.LittleEndian.Uint32(msg[8:])))
		id := int32(binary.LittleEndian.Uint32(msg))
		if id == msgDisconnect {
			return
		}
		if size != n {
			s.log.Warn("libqb: request size field disagrees with the message; closing", "conn", c.ID, "size", size, "bytes", n)
			return
		}
		resp := sess.Request(ctx, append([]byte(nil), msg...))
		if resp == nil {
			s.log.Info("libqb: the service ended the connection", "conn", c.ID, "service", c.Service, "pid", c.Creds.PID)
			return
		}
		if err := c.respond(resp); err != nil {
			s.log.Debug("libqb: response not sent", "conn", c.ID, "err", err)
			return
		}
		c.add(1, 1)
	}
}

// readConnRequest reads qb_ipc_connection_request and the credentials the
// kernel attached to it.
func readConnRequest(fd int) (Creds, int, error) {
	buf := make([]byte, connRequestSize)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	got := 0
	var creds *syscall.Ucred
	for got < connRequestSize {
		n, oobn, _, _, err := syscall.Recvmsg(fd, buf[got:], oob, 0)
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
			if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if uc, err := syscall.ParseUnixCredentials(&m); err == nil {
						creds = uc
					}
				}
			}
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

// connResponse builds qb_ipc_connection_response.
func connResponse(errCode int32, maxSize uint32, control, base string) []byte {
	b := make([]byte, connResponseSize)
	binary.LittleEndian.PutUint32(b[0:], uint32(0xffffffff)) // id -1: AUTHENTICATE
	binary.LittleEndian.PutUint32(b[8:], connResponseSize)
	binary.LittleEndian.PutUint32(b[16:], uint32(errCode))
	// connection_type 0 = QB_IPC_SOCKET at 24; max_msg_size at 28;
	// connection at 32 (an opaque value the client only echoes).
	binary.LittleEndian.PutUint32(b[28:], maxSize)
	binary.LittleEndian.PutUint64(b[32:], 1)
	copy(b[40:40+pathMax-1], control)
	copy(b[40+pathMax:40+2*pathMax-1], base)
	return b
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return err
		}
		b = b[n:]
	}
	return nil
}

// receive reads the next request datagram: n and the recvfrom error, or
// the poller's error once the connection is shut down.
func (c *Conn) receive(buf []byte) (n int, err, perr error) {
	perr = c.reqRaw.Read(func(fd uintptr) bool {
		n, _, err = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN)
	})
	return n, err, perr
}

// respond sends a response. A synchronous client has room for it; one
// that pipelines requests may not, and a unix datagram socket has no
// readiness to wait for on the sending side, so that case polls.
func (c *Conn) respond(resp []byte) error {
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		var err error
		if cerr := c.reqRaw.Control(func(fd uintptr) {
			err = syscall.Sendto(int(fd), resp, syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, c.respTo)
		}); cerr != nil {
			return cerr
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
			return err
		}
		time.Sleep(pause)
	}
}

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
