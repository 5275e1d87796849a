// Package qbclient is a libqb SOCKET IPC client in Go: enough of what
// libqb's qb_ipcc_* do for corosync's libraries (connect, one request at a
// time, events, the control file) to test and measure a server without C.
package qbclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/corobus/corobus/services/ipc/libqb"
)

// Layout of libqb's structs on 64-bit Linux.
const (
	ReqHeaderSize    = libqb.ReqHeaderSize
	ResHeaderSize    = libqb.ResHeaderSize
	connRequestSize  = 24
	pathMax          = 4096
	connResponseSize = ResHeaderSize + 4 + 4 + 8 + 3*pathMax
)

// Client is one connection.
type Client struct {
	setup, req, evt int
	buf             []byte // one receive buffer, reused
	// Base is the connection's socket base name; Control its control file.
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
	c.Control = cstring(resp[40 : 40+pathMax])
	c.Base = cstring(resp[40+pathMax : 40+2*pathMax])
	if c.req, err = bound(c.Base+"-response", c.Base+"-request"); err != nil {
		return nil, err
	}
	if c.evt, err = bound(c.Base+"-event", ""); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

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
// timeout for the whole response. io.EOF-like endings (the server closed
// the connection) come back as errors.
func (c *Client) Request(msg []byte, timeout time.Duration) ([]byte, error) {
	if fc, err := c.FlowControl(); err == nil && fc > 0 {
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

// Send sends a request message without waiting for a response (an
// asynchronous call, such as CPG's multicast) and without looking at the
// flow-control flag.
func (c *Client) Send(msg []byte) error {
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
	return c.recv(c.req, timeout)
}

// Event waits up to timeout for the next event message.
func (c *Client) Event(timeout time.Duration) ([]byte, error) {
	return c.recv(c.evt, timeout)
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

// FlowControl is the request channel's flow_control flag in the control
// file: while it is set, libqb clients do not send.
func (c *Client) FlowControl() (int32, error) {
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
// up to timeout.
func (c *Client) Closed(timeout time.Duration) bool {
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	for {
		n, err := syscall.Read(c.setup, make([]byte, 1))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return n == 0 && err == nil
	}
}

// Close ends the connection: the server sees the setup socket's EOF.
func (c *Client) Close() {
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
