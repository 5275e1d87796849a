// Package qbclient is a libqb IPC client in Go: enough of what libqb's
// qb_ipcc_* do for corosync's libraries (connect, one request at a time,
// events, flow control) over both connection types the server may choose
// — SHM (three rings in /dev/shm, notifications on the setup socket) and
// SOCKET (datagram sockets and a control file) — to test and measure a
// server without C.
package qbclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbrb"
)

// Layout of libqb's structs on 64-bit Linux.
const (
	ReqHeaderSize    = libqb.ReqHeaderSize
	ResHeaderSize    = libqb.ResHeaderSize
	connRequestSize  = 24
	pathMax          = 4096
	connResponseSize = ResHeaderSize + 4 + 4 + 8 + 3*pathMax
)

// fcEnableMax is libqb's default fc_enable_max: a request waits while the
// flow-control level is set and at most this (level 2, FlowAsync, holds
// only the calls a client raised its own limit for).
const fcEnableMax = 1

// Client is one connection.
type Client struct {
	setup, req, evt int
	buf             []byte // one receive buffer, reused
	// SHM: the rings; nil on SOCKET.
	reqRing, respRing, evtRing *qbrb.Ring
	// Base is the connection's base name (SOCKET: of its sockets; SHM:
	// the request ring's), in the connection's directory; Control its
	// control file (SOCKET only).
	Base, Control string
}

// Dial connects to service. A server's refusal comes back as the
// syscall.Errno it answered with (EACCES, EAGAIN, …).
func Dial(service string, maxMsgSize uint32) (*Client, error) {
	c := &Client{setup: -1, req: -1, evt: -1}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.setup, err = syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err != nil {
		return nil, err
	}
	a, err := libqb.AbstractAddr(service)
	if err != nil {
		return nil, err
	}
	if err := syscall.Connect(c.setup, a); err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", service, err)
	}
	_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 10})
	req := make([]byte, connRequestSize)
	binary.LittleEndian.PutUint32(req, 0xffffffff) // QB_IPC_MSG_AUTHENTICATE
	binary.LittleEndian.PutUint32(req[8:], connRequestSize)
	binary.LittleEndian.PutUint32(req[16:], maxMsgSize)
	if _, err := syscall.Write(c.setup, req); err != nil {
		return nil, fmt.Errorf("sending the connection request: %w", err)
	}
	resp := make([]byte, connResponseSize)
	for got := 0; got < len(resp); {
		n, err := syscall.Read(c.setup, resp[got:])
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if n <= 0 {
			return nil, fmt.Errorf("reading the connection response after %d bytes: %v", got, err)
		}
		got += n
	}
	if e := int32(binary.LittleEndian.Uint32(resp[16:])); e != 0 {
		return nil, fmt.Errorf("%s refused the connection: %w", service, syscall.Errno(-e))
	}
	names := [3]string{cstring(resp[40 : 40+pathMax]), cstring(resp[40+pathMax : 40+2*pathMax]), cstring(resp[40+2*pathMax:])}
	switch typ := binary.LittleEndian.Uint32(resp[24:]); typ {
	case 1: // QB_IPC_SHM
		c.Base = names[0]
		if c.reqRing, err = qbrb.Open(names[0], qbrb.UserDataSize); err == nil {
			if c.respRing, err = qbrb.Open(names[1], 0); err == nil {
				c.evtRing, err = qbrb.Open(names[2], 0)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("opening the rings: %w", err)
		}
	case 0: // QB_IPC_SOCKET
		c.Control, c.Base = names[0], names[1]
		if c.req, err = bound(c.Base+"-response", c.Base+"-request"); err != nil {
			return nil, err
		}
		if c.evt, err = bound(c.Base+"-event", ""); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("connection type %d: %w", typ, syscall.ENOTSUP)
	}
	ok = true
	return c, nil
}

// SHM reports whether the server chose the shared-memory transport.
func (c *Client) SHM() bool { return c.reqRing != nil }

// SetupFD is the setup socket: what libqb's qb_ipcc_fd_get returns on SHM,
// whose peer is the server.
func (c *Client) SetupFD() int { return c.setup }

func bound(local, remote string) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	la, err := libqb.AbstractAddr(local)
	if err == nil {
		err = syscall.Bind(fd, la)
	}
	if err == nil && remote != "" {
		var ra *syscall.SockaddrUnix
		if ra, err = libqb.AbstractAddr(remote); err == nil {
			err = syscall.Connect(fd, ra)
		}
	}
	if err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("socket %s: %w", local, err)
	}
	return fd, nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Request sends a whole request message (header included) and waits up to
// timeout for the whole response. The server's end of the connection
// comes back as an error.
func (c *Client) Request(msg []byte, timeout time.Duration) ([]byte, error) {
	if c.SHM() {
		return c.requestSHM(msg, timeout)
	}
	if fc, err := c.FlowControl(); err == nil && fc > 0 && fc <= fcEnableMax {
		return nil, fmt.Errorf("flow controlled: %w", syscall.EAGAIN)
	}
	for {
		_, err := syscall.Write(c.req, msg)
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return nil, fmt.Errorf("sending a request: %w", err)
			}
			break
		}
	}
	return c.recv(c.req, timeout)
}

// requestSHM is qb_ipcc_sendv_recv on SHM: the request ring's flow
// control and reference count checked, the chunk written, a byte on the
// setup socket, then a wait on the response ring's semaphore.
func (c *Client) requestSHM(msg []byte, timeout time.Duration) ([]byte, error) {
	if n, err := c.reqRing.RefCount(); err != nil || n != 2 {
		return nil, fmt.Errorf("request ring's ref_count %d (%v): %w", n, err, syscall.ENOTCONN)
	}
	if fc, err := c.reqRing.UserData32(); err != nil || (fc > 0 && fc <= fcEnableMax) {
		return nil, fmt.Errorf("flow controlled (%v): %w", err, syscall.EAGAIN)
	}
	if err := c.reqRing.Write(msg); err != nil {
		return nil, fmt.Errorf("writing a request: %w", err)
	}
	if err := c.writeSetup([]byte{msg[0]}); err != nil {
		return nil, fmt.Errorf("notifying a request: %w", err)
	}
	if err := c.respRing.Wait(timeout); err != nil {
		if n, _ := c.reqRing.RefCount(); n != 2 {
			return nil, fmt.Errorf("no response: the server closed the connection: %w", syscall.ENOTCONN)
		}
		return nil, fmt.Errorf("no response: %w", err)
	}
	return c.readRing(c.respRing)
}

func (c *Client) readRing(r *qbrb.Ring) ([]byte, error) {
	if c.buf == nil {
		c.buf = make([]byte, 1<<20)
	}
	n, err := r.Read(c.buf)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), c.buf[:n]...), nil
}

func (c *Client) writeSetup(b []byte) error {
	for {
		_, err := syscall.Write(c.setup, b)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Send sends a request message without waiting for a response (an
// asynchronous call, such as CPG's multicast) and without looking at the
// flow-control flag.
func (c *Client) Send(msg []byte) error {
	if c.SHM() {
		if err := c.reqRing.Write(msg); err != nil {
			return fmt.Errorf("writing a request: %w", err)
		}
		if err := c.writeSetup([]byte{msg[0]}); err != nil {
			return fmt.Errorf("notifying a request: %w", err)
		}
		return nil
	}
	for {
		_, err := syscall.Write(c.req, msg)
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return fmt.Errorf("sending a request: %w", err)
			}
			return nil
		}
	}
}

// Response waits up to timeout for the next response message (of a
// request sent with Send).
func (c *Client) Response(timeout time.Duration) ([]byte, error) {
	if c.SHM() {
		if err := c.respRing.Wait(timeout); err != nil {
			return nil, fmt.Errorf("no response: %w", err)
		}
		return c.readRing(c.respRing)
	}
	return c.recv(c.req, timeout)
}

// Event waits up to timeout for the next event message.
func (c *Client) Event(timeout time.Duration) ([]byte, error) {
	if !c.SHM() {
		return c.recv(c.evt, timeout)
	}
	// The notification first (qb_ipcc_event_recv polls the setup socket),
	// then the chunk.
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	var b [1]byte
	for {
		n, err := syscall.Read(c.setup, b[:])
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errors.New("connection shut down")
		}
		break
	}
	if err := c.evtRing.Wait(timeout); err != nil {
		return nil, fmt.Errorf("event notified but not in the ring: %w", err)
	}
	return c.readRing(c.evtRing)
}

// recv reads one datagram and returns a copy of it.
func (c *Client) recv(fd int, timeout time.Duration) ([]byte, error) {
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	if c.buf == nil {
		c.buf = make([]byte, 1<<20)
	}
	for {
		n, err := syscall.Read(fd, c.buf)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errors.New("connection shut down")
		}
		return append([]byte(nil), c.buf[:n]...), nil
	}
}

// FlowControl is the request channel's flow_control flag (SOCKET: in the
// control file; SHM: the request ring's user data): while it is set,
// libqb clients do not send.
func (c *Client) FlowControl() (int32, error) {
	if c.SHM() {
		return c.reqRing.UserData32()
	}
	b, err := os.ReadFile(c.Control)
	if err != nil {
		return 0, err
	}
	if len(b) < 8 {
		return 0, fmt.Errorf("control file of %d bytes", len(b))
	}
	return int32(binary.LittleEndian.Uint32(b[4:])), nil
}

// Closed reports whether the server has closed the connection, waiting
// up to timeout (event notifications on the setup socket are skipped).
func (c *Client) Closed(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		tv := syscall.NsecToTimeval(left.Nanoseconds())
		_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		n, err := syscall.Read(c.setup, make([]byte, 64))
		if errors.Is(err, syscall.EINTR) || (err == nil && n > 0) {
			continue
		}
		return n == 0 && err == nil
	}
}

// Close ends the connection: the server sees the setup socket's EOF.
func (c *Client) Close() {
	for _, r := range []*qbrb.Ring{c.reqRing, c.respRing, c.evtRing} {
		if r != nil {
			_ = r.Close()
		}
	}
	c.reqRing, c.respRing, c.evtRing = nil, nil, nil
	for _, fd := range []int{c.evt, c.req, c.setup} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
	c.evt, c.req, c.setup = -1, -1, -1
}

// NewRequest builds a request message: header {id, size} and body.
func NewRequest(id int32, body []byte) []byte {
	b := make([]byte, ReqHeaderSize+len(body))
	binary.LittleEndian.PutUint32(b, uint32(id))
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)))
	copy(b[ReqHeaderSize:], body)
	return b
}

// ResponseError is a response's error field (a cs_error_t for corosync's
// services).
func ResponseError(resp []byte) int32 {
	if len(resp) < ResHeaderSize {
		return -1
	}
	return int32(binary.LittleEndian.Uint32(resp[16:]))
}
