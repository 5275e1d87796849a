// Package libqb serves libqb's IPC, so that unmodified corosync clients
// (libcmap, corosync-cmapctl, …) connect to corobus.
//
// The protocol, as libqb 2.0 speaks it on Linux:
//
//   - setup: the client connects to the abstract stream socket named after
//     the service (sun_path NUL, the name, NUL padding: libqb passes the
//     full sizeof(struct sockaddr_un) and the padding is part of the name),
//     sends qb_ipc_connection_request {hdr{id -1, size 24}, max_msg_size},
//     and the kernel attaches its pid/uid/gid (SO_PASSCRED);
//   - the server makes /dev/shm/qb-<srvpid>-<clipid>-<fd>-XXXXXX/ (mode
//     0770, owned by the client's uid and gid) and answers
//     qb_ipc_connection_response (12 328 bytes: hdr, connection_type,
//     max_msg_size, connection, then three PATH_MAX strings) — what the
//     directory holds and what the strings name depends on the transport
//     (socket.go, shm.go);
//   - the connection ends when the setup socket reaches EOF.
//
// Every descriptor goes through the runtime's poller: a connection that
// waits — in its handshake, between requests — holds a parked goroutine,
// never an OS thread, so that any number of silent connections cannot
// exhaust the process's threads. Connections are bounded in total and per
// uid, and a handshake that does not arrive in time is closed.
package libqb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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

// Defaults of the server's limits (ipc.max_connections,
// ipc.max_connections_per_uid): far above what an HA stack opens
// (Pacemaker's daemons hold a few connections each, its tools one at a
// time), far below what exhausts a process.
const (
	DefaultMaxConns         = 4096
	DefaultMaxConnsPerUID   = 512
	DefaultHandshakeTimeout = 10 * time.Second
)

// Transport is a libqb connection type.
type Transport int

// The connection types served: libqb's QB_IPC_SHM and QB_IPC_SOCKET.
const (
	TransportSHM Transport = iota
	TransportSocket
)

func (t Transport) String() string {
	if t == TransportSocket {
		return "socket"
	}
	return "shm"
}

// ParseTransport reads ipc.transport's spelling: shm or socket.
func ParseTransport(s string) (Transport, error) {
	switch s {
	case "shm", "":
		return TransportSHM, nil
	case "socket":
		return TransportSocket, nil
	}
	return 0, fmt.Errorf("unknown IPC transport %q (shm or socket)", s)
}

// Creds are a client's credentials, from the kernel.
type Creds struct{ PID, UID, GID uint32 }

// Handler serves one service's connections.
type Handler interface {
	// Admit decides whether a client may connect (corosync's uidgid).
	Admit(c Creds) bool
	// Open starts a connection's state; events go through conn.SendEvent.
	Open(conn *Conn) (Session, error)
}

// EventLimiter is a Handler that sets its own connections' event backlog
// limits (Server.EventQueueHigh, EventQueueMax), where the server's do not
// fit the service: a CPG client receives its own 16 MiB message back while
// it is still sending it, without reading.
type EventLimiter interface {
	EventLimits() (high, max int)
}

// A RequestRange is a Handler whose service has the request ids 0 to n-1
// and no others, as each of corosync's services has its handlers
// (lib_engine_count). A request of another id reaches no session: it is
// answered refusal and counted (invalid_request), as corosync's
// dispatcher answers and counts it (cs_ipcs_msg_process). n <= 0: every
// id reaches the session.
type RequestRange interface {
	RequestIDs() (n int32, refusal []byte)
}

// Session is one connection's state.
type Session interface {
	// Request handles one whole request message (header included) and
	// returns the whole response message, NoResponse for a call that
	// corosync answers with nothing (CPG's multicast), or nil to end the
	// connection.
	// Requests of a connection are handled one at a time, in order.
	Request(ctx context.Context, msg []byte) []byte
	Close()
}

// A Borrower is a Session whose Request keeps nothing of msg once it
// returns (it copies what it keeps): the server then lends it the request
// in the transport's own buffer instead of a copy of its own — a CPG
// multicast of 64 KiB was copied, and allocated, once more for nothing.
type Borrower interface {
	BorrowsRequests() bool
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
	// MaxConns bounds the connections in handshake or served, in total;
	// MaxConnsPerUID those of one uid (as the kernel reports the
	// connecting process, SO_PEERCRED). A connection over either limit
	// is answered -EAGAIN (CS_ERR_TRY_AGAIN in corosync's libraries) and
	// closed. Zero: no limit.
	MaxConns, MaxConnsPerUID int
	// HandshakeTimeout is how long a new connection has to send its
	// connection request before it is closed.
	HandshakeTimeout time.Duration
	// Transport is the connection type offered to clients (libqb's
	// server chooses; the client follows): SHM, as corosync, by default.
	Transport Transport
	// SpinMax is the longest a connection's server looks for a
	// synchronous client's next request in shared memory, without
	// sleeping, before it waits on the poller (shm only; 0: never).
	// See spinner.
	SpinMax time.Duration

	limited *logLimiter
	// spinning: one connection of the server spins at a time.
	spinning atomic.Bool
	// served is when (Unix ns) and by which connection the server last
	// answered a request: a connection looks only while no other one
	// has been served within the look's window (othersBusy). The two are
	// stored apart, so a reader may pair one response's time with
	// another's connection: a hint for the look, which a wrong answer
	// only makes wait on the poller or look once.
	servedAt   atomic.Int64
	servedConn atomic.Uint64

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	total   int
	perUID  map[uint32]int
	serving sync.WaitGroup
	nextID  atomic.Uint64
	// closed counts the connections served and closed (Stats).
	closed atomic.Uint64
}

// NewServer returns a server; Listen adds services to it.
func NewServer(log *slog.Logger) *Server {
	return &Server{log: log, ShmDir: "/dev/shm", MaxMsgSize: 1 << 20,
		EventQueueHigh: 1 << 20, EventQueueMax: 64 << 20,
		MaxConns: DefaultMaxConns, MaxConnsPerUID: DefaultMaxConnsPerUID, HandshakeTimeout: DefaultHandshakeTimeout,
		SpinMax: DefaultSpinMax,
		limited: newLogLimiter(log, time.Minute),
		conns:   map[*Conn]struct{}{}, perUID: map[uint32]int{}}
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
// It returns once every connection has released its resources.
func (s *Server) Listen(ctx context.Context, service string, h Handler) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
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
	if err := syscall.Listen(fd, 1024); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("libqb %s: listen: %w", service, err)
	}
	lf := os.NewFile(uintptr(fd), "@"+service)
	defer lf.Close()
	raw, err := lf.SyscallConn()
	if err != nil {
		return fmt.Errorf("libqb %s: %w", service, err)
	}
	// The accept loop is parked on the poller; the end of ctx wakes it.
	stop := context.AfterFunc(ctx, func() { _ = lf.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		var cfd int
		var aerr error
		if err := raw.Read(func(fd uintptr) bool {
			cfd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
			return !errors.Is(aerr, syscall.EAGAIN)
		}); err != nil {
			aerr = err
		}
		if aerr == nil {
			s.accept(ctx, service, h, cfd)
			continue
		}
		if ctx.Err() != nil {
			s.closeAll()
			s.serving.Wait()
			return nil
		}
		switch {
		case errors.Is(aerr, syscall.EINTR), errors.Is(aerr, syscall.ECONNABORTED):
		case errors.Is(aerr, syscall.EMFILE), errors.Is(aerr, syscall.ENFILE),
			errors.Is(aerr, syscall.ENOBUFS), errors.Is(aerr, syscall.ENOMEM):
			// The pending connection stays in the backlog: pause rather
			// than spin on it.
			s.limited.Warn("accept "+service, "libqb: cannot accept connections; pausing", "service", service, "err", aerr)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		default:
			return fmt.Errorf("libqb %s: accept: %w", service, aerr)
		}
	}
}

// accept counts a new connection against the limits and serves it, or
// refuses it at once.
func (s *Server) accept(ctx context.Context, service string, h Handler, fd int) {
	uid := uint32(math.MaxUint32)
	if uc, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
		uid = uc.Uid
	}
	if limit, n := s.reserve(uid); n > 0 {
		s.limited.Warn(limit+" "+strconv.FormatUint(uint64(uid), 10), "libqb: refusing a connection: "+limit+" reached",
			"service", service, "uid", uid, "limit", n)
		refuse(fd, syscall.EAGAIN)
		return
	}
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		defer s.release(uid)
		s.serve(ctx, service, h, fd)
	}()
}

// reserve counts a connection of uid, or names the limit it would pass.
func (s *Server) reserve(uid uint32) (limit string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.MaxConns > 0 && s.total >= s.MaxConns {
		return "ipc.max_connections", s.MaxConns
	}
	if s.MaxConnsPerUID > 0 && s.perUID[uid] >= s.MaxConnsPerUID {
		return "ipc.max_connections_per_uid", s.MaxConnsPerUID
	}
	s.total++
	s.perUID[uid]++
	return "", 0
}

func (s *Server) release(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.perUID[uid]--; s.perUID[uid] <= 0 {
		delete(s.perUID, uid)
	}
}

// refuse answers a connection that is not served with libqb's connection
// response carrying -code, without waiting for anything: the response
// fits the socket's buffer, and the client reads it before it sees the
// close. The request, when it came already, is read first, so that the
// close does not reset the connection under the client.
func refuse(fd int, code syscall.Errno) {
	defer syscall.Close(fd)
	_ = syscall.Sendto(fd, connResponse(-int32(code), 0, 0, "", "", ""), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, nil)
	var b [connRequestSize]byte
	_, _, _ = syscall.Recvfrom(fd, b[:], syscall.MSG_DONTWAIT)
}

// track registers a connection, so that closeAll reaches it.
func (s *Server) track(c *Conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.conns[c] = struct{}{}
		return
	}
	delete(s.conns, c)
	if c.served {
		s.closed.Add(1)
	}
}

// served marks c served from now on (Stats lists it), its client's
// command name read once, as corosync reads it when a client connects.
func (s *Server) served(c *Conn, procName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.served, c.procName = true, procName
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

// Conns reports the connections in handshake or served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
