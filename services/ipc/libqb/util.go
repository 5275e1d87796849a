package libqb

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// unixEpoch is a deadline long past: setting it wakes a goroutine parked
// on the poller.
var unixEpoch = time.Unix(1, 0)

// errShutdown ends a wait on a connection that is shutting down.
var errShutdown = errors.New("connection shut down")

func atomicAdd32(b []byte, delta int32) {
	atomic.AddInt32((*int32)(unsafe.Pointer(&b[0])), delta)
}

func atomicStore32(b []byte, v int32) {
	atomic.StoreInt32((*int32)(unsafe.Pointer(&b[0])), v)
}

// backoff calls try until it reports done or fails, pausing between tries
// (50 µs, doubling to 10 ms): for what has no readiness to wait for on
// the poller (room in a client's datagram socket or ring). It gives up
// when the connection shuts down.
func backoff(c *Conn, try func() (done bool, err error)) error {
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		done, err := try()
		if done || err != nil {
			return err
		}
		select {
		case <-c.done:
			return errShutdown
		case <-time.After(pause):
		}
	}
}

// recvNow and sendNow are recvfrom(2) and sendto(2) with MSG_DONTWAIT on
// a descriptor of the connection: they never block, so they go as raw
// system calls, without the Go scheduler's bookkeeping around a call that
// may block — which, in a process otherwise idle between a synchronous
// client's requests, woke the runtime's monitor thread at every request
// (two more context switches and a sleep of its own each time).
func recvNow(fd int, b []byte, flags int) (int, error) {
	// The pointer converted in the call's arguments: the buffer is kept
	// alive through the call (go:uintptrkeepalive).
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(flags|syscall.MSG_DONTWAIT), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sendNow(fd int, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
