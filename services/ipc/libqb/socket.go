package libqb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"
)

// socketTransport is libqb's SOCKET connection type (QB_IPC_SOCKET):
//
//   - a 24-byte control file "<dir>/qb-control-<svc>" (three {sent,
//     flow_control} int32 pairs: request, response, event), mapped by both;
//   - two abstract datagram sockets of the server, "<dir>/qb-<svc>-request"
//     and "…-event-tx"; the client binds "…-response" and "…-event" and
//     connects them to the server's. Requests and responses travel on the
//     request pair, events on the event pair; every message starts with
//     its header, the size field giving its length.
//
// Anyone in the network namespace can send to an abstract socket, so a
// request is served only when it comes from the client's own response
// socket (the sender's address) sent by the client's process (pid, uid
// and gid as the kernel attaches them, SO_PASSCRED): anything else is
// dropped. Once the client's first request came, the request socket is
// connected to the client's, as libqb's server does on its first send,
// and the kernel refuses other senders outright (EPERM).
//
// Datagrams are bounded by the sockets' buffers: libqb raises SO_SNDBUF and
// SO_RCVBUF to max_msg_size, which the kernel caps at net.core.wmem_max /
// rmem_max (212 992 by default), so larger messages need those raised.
type socketTransport struct {
	c       *Conn
	base    string
	ctlPath string
	req     *os.File // bound <base>-request, SO_PASSCRED
	reqRaw  syscall.RawConn
	evt     *os.File // bound <base>-event-tx
	evtRaw  syscall.RawConn
	respTo  *syscall.SockaddrUnix
	evtTo   *syscall.SockaddrUnix
	// client is the client's response socket's address as the kernel
	// reports a sender: the family and the full padded path.
	client    syscall.RawSockaddrUnix
	connected bool
	foreign   int // datagrams dropped because someone else sent them

	ctlMu sync.Mutex
	ctl   []byte // the mapped control file; nil once released
}

func newSocketTransport(c *Conn) (*socketTransport, error) {
	desc := filepath.Join(c.dir, "qb")
	t := &socketTransport{c: c, base: desc + "-" + c.Service, ctlPath: desc + "-control-" + c.Service}
	ok := false
	defer func() {
		if !ok {
			t.release()
		}
	}()
	f, err := os.OpenFile(t.ctlPath, os.O_CREATE|os.O_EXCL|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("making the control file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(controlSize); err != nil {
		return nil, err
	}
	_ = f.Chown(int(c.Creds.UID), int(c.Creds.GID))
	if t.ctl, err = syscall.Mmap(int(f.Fd()), 0, controlSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the control file: %w", err)
	}
	if t.req, t.reqRaw, err = dgram(t.base+"-request", c.maxSize, true); err != nil {
		return nil, err
	}
	if t.evt, t.evtRaw, err = dgram(t.base+"-event-tx", c.maxSize, false); err != nil {
		return nil, err
	}
	if t.respTo, err = AbstractAddr(t.base + "-response"); err != nil {
		return nil, err
	}
	if t.evtTo, err = AbstractAddr(t.base + "-event"); err != nil {
		return nil, err
	}
	t.client.Family = syscall.AF_UNIX
	for i, b := range []byte(t.base + "-response") {
		t.client.Path[i+1] = int8(b)
	}
	ok = true
	return t, nil
}

// dgram binds an abstract datagram socket, non-blocking, on the poller.
func dgram(name string, size int, passcred bool) (*os.File, syscall.RawConn, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("datagram socket: %w", err)
	}
	addr, err := AbstractAddr(name)
	if err == nil {
		err = syscall.Bind(fd, addr)
	}
	if err == nil && passcred {
		err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}
	if err != nil {
		syscall.Close(fd)
		return nil, nil, fmt.Errorf("binding %s: %w", name, err)
	}
	for _, opt := range []int{syscall.SO_SNDBUF, syscall.SO_RCVBUF} {
		if cur, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, opt); err == nil && cur <= size {
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, size)
		}
	}
	f := os.NewFile(uintptr(fd), name)
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, raw, nil
}

func (t *socketTransport) response() (int32, string, string, string) {
	return 0, t.ctlPath, t.base, ""
}

// add adjusts one of the control file's counters (ch 0 request, 1
// response, 2 event).
func (t *socketTransport) add(ch int, delta int32) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	if t.ctl != nil {
		atomicAdd32(t.ctl[ch*8:], delta)
	}
}

func (t *socketTransport) setFlowControl(v int32) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	if t.ctl != nil {
		atomicStore32(t.ctl[4:], v)
	}
}

// serveRequests reads requests until the setup socket closes. The setup
// socket carries nothing after the handshake: its EOF is the client's
// goodbye.
func (t *socketTransport) serveRequests(handle func([]byte) []byte) {
	c := t.c
	eof := make(chan struct{})
	go func() {
		defer close(eof)
		b := make([]byte, 64)
		for {
			if n, err := c.readSetup(b); n <= 0 || err != nil {
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
		n, err := t.receive(buf)
		if err != nil {
			select {
			case <-eof:
			default:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					c.log.Warn("libqb: request not received; closing", "conn", c.ID, "err", err)
				}
			}
			return
		}
		t.add(0, -1)
		msg := buf[:n]
		id, err := checkRequest(msg)
		if err != nil {
			c.log.Warn("libqb: malformed request; closing", "conn", c.ID, "pid", c.Creds.PID, "err", err)
			return
		}
		if id == msgDisconnect {
			return
		}
		resp := handle(msg)
		if resp == nil {
			return
		}
		if len(resp) == 0 {
			continue // an asynchronous call: nothing answers it
		}
		if err := t.respond(resp); err != nil {
			c.log.Debug("libqb: response not sent", "conn", c.ID, "err", err)
			return
		}
		c.counters.responses.Add(1) // written, as libqb counts them
		t.add(1, 1)
	}
}

// receive reads the next request datagram of the client.
func (t *socketTransport) receive(buf []byte) (int, error) {
	for {
		var n int
		var err error
		if perr := t.reqRaw.Read(func(fd uintptr) bool {
			n, err = t.recvFromClient(int(fd), buf)
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

// recvFromClient reads datagrams until one comes from the client, dropping
// the others. It returns EAGAIN once the socket is empty.
func (t *socketTransport) recvFromClient(fd int, buf []byte) (int, error) {
	var oob [32]byte // CmsgSpace(SizeofUcred)
	for {
		var from syscall.RawSockaddrUnix
		n, namelen, oobn, err := recvmsgFrom(fd, buf, &from, oob[:])
		if err != nil {
			return 0, err
		}
		uc := ucredOf(oob[:oobn])
		if namelen == syscall.SizeofSockaddrUnix && from == t.client && uc != nil &&
			uint32(uc.Pid) == t.c.Creds.PID && uc.Uid == t.c.Creds.UID && uc.Gid == t.c.Creds.GID {
			if n > len(buf) {
				return 0, fmt.Errorf("request of %d bytes, larger than the connection's %d", n, len(buf))
			}
			if !t.connected {
				// From now on the kernel refuses other senders.
				t.connected = syscall.Connect(fd, t.respTo) == nil
			}
			return n, nil
		}
		t.foreign++
		if t.foreign == 1 {
			args := []any{"conn", t.c.ID, "service", t.c.Service, "client_pid", t.c.Creds.PID, "client_uid", t.c.Creds.UID}
			if uc != nil {
				args = append(args, "sender_pid", uc.Pid, "sender_uid", uc.Uid, "sender_gid", uc.Gid)
			}
			t.c.log.Warn("libqb: dropped a request datagram that the connection's client did not send", args...)
		}
	}
}

// recvmsgFrom is recvmsg(2) keeping the sender's address as the kernel
// gave it, with its length: an abstract name is compared whole, not up to
// its first NUL as syscall.Recvmsg reports it. MSG_TRUNC makes n the
// datagram's real length.
func recvmsgFrom(fd int, p []byte, from *syscall.RawSockaddrUnix, oob []byte) (n, namelen, oobn int, err error) {
	var iov syscall.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	msg := syscall.Msghdr{Name: (*byte)(unsafe.Pointer(from)), Namelen: syscall.SizeofSockaddrUnix, Iov: &iov, Iovlen: 1}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := syscall.Syscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)),
		syscall.MSG_DONTWAIT|syscall.MSG_TRUNC|syscall.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Namelen), int(msg.Controllen), nil
}

// ucredOf reads SCM_CREDENTIALS when it is the control data's first
// message (the only one a unix socket with SO_PASSCRED attaches).
func ucredOf(oob []byte) *syscall.Ucred {
	hdr := syscall.CmsgLen(0)
	if len(oob) < hdr+syscall.SizeofUcred {
		return nil
	}
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if h.Level != syscall.SOL_SOCKET || h.Type != syscall.SCM_CREDENTIALS || int(h.Len) < syscall.CmsgLen(syscall.SizeofUcred) {
		return nil
	}
	uc := *(*syscall.Ucred)(unsafe.Pointer(&oob[hdr]))
	return &uc
}

// respond sends a response. A synchronous client has room for it; one
// that pipelines requests may not, and a unix datagram socket has no
// readiness to wait for on the sending side, so that case polls.
func (t *socketTransport) respond(resp []byte) error {
	return backoff(t.c, func() (bool, error) {
		var err error
		if cerr := t.reqRaw.Control(func(fd uintptr) {
			err = syscall.Sendto(int(fd), resp, syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, t.respTo)
		}); cerr != nil {
			return false, cerr
		}
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			return false, nil
		}
		return true, err
	})
}

// sendEvent tries to hand one event to the client's socket now.
func (t *socketTransport) sendEvent(msg []byte) error {
	var err error
	if cerr := t.evtRaw.Control(func(fd uintptr) {
		err = syscall.Sendto(int(fd), msg, syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, t.evtTo)
	}); cerr != nil {
		return fmt.Errorf("event to connection %d: %w", t.c.ID, cerr)
	}
	if err != nil {
		return fmt.Errorf("event to connection %d: %w", t.c.ID, err)
	}
	t.add(2, 1)
	return nil
}

func (t *socketTransport) wake() {
	if t.req != nil {
		_ = t.req.SetReadDeadline(unixEpoch)
	}
}

func (t *socketTransport) release() {
	if t.req != nil {
		_ = t.req.Close()
	}
	if t.evt != nil {
		_ = t.evt.Close()
	}
	t.ctlMu.Lock()
	if t.ctl != nil {
		_ = syscall.Munmap(t.ctl)
		t.ctl = nil
	}
	t.ctlMu.Unlock()
	if t.foreign > 1 {
		t.c.log.Warn("libqb: request datagrams dropped over the connection's life", "conn", t.c.ID, "dropped", t.foreign)
	}
}
