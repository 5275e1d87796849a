package bus

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// rawDialer dials a bus's client port for nats.go (nats.SetCustomDialer)
// and hands back a connection whose reads and writes go as raw system
// calls. The socket is non-blocking and Go's poller does the waiting, so
// neither call can block; as scheduled system calls, each woke the Go
// runtime's monitor thread whenever the process had gone idle, and the
// monitor then polled every 20 µs for a millisecond or more: in the IPC
// gateway during eight clients' cluster-key sets on three nodes (a nats.go
// request per set, the process idle between them), 28 % of its CPU samples
// were the monitor's sleeps (docs/architecture.md). libqb's socket calls
// go the same way for the same reason (services/ipc/libqb).
type rawDialer struct {
	timeout time.Duration
}

func (d rawDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: d.timeout}).Dial(network, address)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("bus connection %s: %w", address, err)
	}
	return &rawTCPConn{TCPConn: tc, rc: rc}, nil
}

// rawTCPConn is a TCP connection read and written with raw system calls
// on its non-blocking descriptor, waiting on Go's poller for readiness
// (and so under the connection's deadlines).
type rawTCPConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func (c *rawTCPConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		var n int
		var errno syscall.Errno
		if err := c.rc.Read(func(fd uintptr) bool {
			n, errno = rawIO(syscall.SYS_READ, fd, b)
			return errno != syscall.EAGAIN
		}); err != nil {
			return 0, err
		}
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errno}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *rawTCPConn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		var n int
		var errno syscall.Errno
		if err := c.rc.Write(func(fd uintptr) bool {
			n, errno = rawIO(syscall.SYS_WRITE, fd, b[written:])
			return errno != syscall.EAGAIN
		}); err != nil {
			return written, err
		}
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return written, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errno}
		}
		written += n
	}
	return written, nil
}

// rawIO is read(2) or write(2) of b on fd, without the scheduler's
// bookkeeping: fd is non-blocking.
func rawIO(trap uintptr, fd uintptr, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}
