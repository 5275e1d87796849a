package libqb

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// eventQueue carries a connection's events to the client's event socket
// without ever blocking the code that produces them (a cmap tracker, a CPG
// delivery shared by every member): an event the socket cannot take now
// waits in the queue, in order, for the connection's writer. A client that
// lets its events back up past the high-water mark has its requests
// flow-controlled through the control file until the queue is half
// drained — corosync does the same through libqb when its queues fill —
// and one that lets them reach the maximum is disconnected rather than
// allowed to hold the node's memory.
type eventQueue struct {
	c         *Conn
	high, max int

	mu sync.Mutex
	q  [][]byte
	// spare are buffers of events sent, for the next ones to queue: a
	// client that reads a little behind (CPG's 64 KiB deliveries) would
	// otherwise cost an allocation per event.
	spare      [][]byte
	spareBytes int
	bytes      int
	throttled  bool
	stopped    bool
	// sent counts the events sent since the queue last started or
	// emptied (corosync's sent, Server.Stats).
	sent uint32
	wake chan struct{}
	done chan struct{}
}

func (q *eventQueue) init(c *Conn, high, max int) {
	q.c, q.high, q.max = c, high, max
	q.wake = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *eventQueue) push(msg []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return fmt.Errorf("event to connection %d: closed", q.c.ID)
	}
	if len(q.q) == 0 {
		err := q.c.tr.sendEvent(msg)
		if err == nil {
			q.c.counters.dispatched.Add(1)
			q.sent++
			return nil
		}
		if !retryable(err) {
			return err
		}
		q.c.counters.sendRetries.Add(1)
		q.sent = 0 // the queue starts
	}
	if q.bytes+len(msg) > q.max {
		q.stopped = true
		close(q.done)
		q.c.log.Error("libqb: client does not read its events; disconnecting it", "conn", q.c.ID,
			"service", q.c.Service, "pid", q.c.Creds.PID, "queued_bytes", q.bytes)
		q.c.shutdown()
		return fmt.Errorf("event to connection %d: %d bytes of events queued, the client does not read them", q.c.ID, q.bytes)
	}
	q.q = append(q.q, q.copyOf(msg))
	q.bytes += len(msg)
	if !q.throttled && q.bytes >= q.high {
		q.throttled = true
		q.c.eventFlowControl(true)
		q.c.log.Info("libqb: client's events back up; flow-controlling its requests", "conn", q.c.ID,
			"service", q.c.Service, "pid", q.c.Creds.PID, "queued_bytes", q.bytes)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// run is the connection's event writer: it empties the queue as fast as
// the client reads.
func (q *eventQueue) run() {
	const minPause, maxPause = 100 * time.Microsecond, 20 * time.Millisecond
	for {
		select {
		case <-q.wake:
		case <-q.done:
			return
		}
		pause := minPause
		for {
			q.mu.Lock()
			if q.stopped || len(q.q) == 0 {
				q.mu.Unlock()
				break
			}
			err := q.c.tr.sendEvent(q.q[0])
			if err == nil {
				q.c.counters.dispatched.Add(1)
				q.sent++
				q.bytes -= len(q.q[0])
				if b := q.q[0]; q.spareBytes+cap(b) <= maxSpareBytes {
					q.spare = append(q.spare, b)
					q.spareBytes += cap(b)
				}
				q.q[0] = nil
				q.q = q.q[1:]
				if len(q.q) == 0 {
					q.sent = 0
				}
				if q.throttled && q.bytes <= q.high/2 {
					q.throttled = false
					q.c.eventFlowControl(false)
					q.c.log.Info("libqb: client caught up with its events; requests flow again", "conn", q.c.ID, "service", q.c.Service)
				}
				q.mu.Unlock()
				pause = minPause
				continue
			}
			q.mu.Unlock()
			if !retryable(err) {
				q.c.log.Debug("libqb: event not sent", "conn", q.c.ID, "err", err)
				return
			}
			q.c.counters.sendRetries.Add(1)
			// Neither a client's datagram socket nor its ring has a
			// readiness to wait for on the sending side: poll, backing off.
			select {
			case <-q.done:
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, maxPause)
		}
	}
}

// counts reports the events waiting and those sent since the queue last
// started or emptied.
func (q *eventQueue) counts() (queued, sent uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return uint32(len(q.q)), q.sent
}

// clearSent resets sent (Server.ClearStats).
func (q *eventQueue) clearSent() {
	q.mu.Lock()
	q.sent = 0
	q.mu.Unlock()
}

// maxSpareBytes bounds what a connection keeps in spare buffers.
const maxSpareBytes = 1 << 20

// copyOf copies msg into a spare buffer large enough, or a new one.
// Called with mu held.
func (q *eventQueue) copyOf(msg []byte) []byte {
	for i := len(q.spare) - 1; i >= 0; i-- {
		if b := q.spare[i]; cap(b) >= len(msg) {
			q.spare[i] = q.spare[len(q.spare)-1]
			q.spare[len(q.spare)-1] = nil
			q.spare = q.spare[:len(q.spare)-1]
			q.spareBytes -= cap(b)
			return append(b[:0], msg...)
		}
	}
	return bytes.Clone(msg)
}

// stop ends the writer; queued events are dropped with the connection.
func (q *eventQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.stopped {
		q.stopped = true
		close(q.done)
	}
	q.q, q.bytes, q.spare, q.spareBytes = nil, 0, nil, 0
}

// retryable tells a client that has no room for an event yet (a full
// socket or ring, or a socket it has not bound yet, right after the
// handshake) from a connection that is gone.
func retryable(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
