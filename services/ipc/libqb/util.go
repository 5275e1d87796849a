package libqb

import (
	"errors"
	"sync/atomic"
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
