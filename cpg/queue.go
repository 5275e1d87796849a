package cpg

import (
	"sync"

	"github.com/corobus/corobus/services/cpg/cpgwire"
)

// eventQueue hands the callbacks to Events in order without ever
// blocking the bus connection's delivery: what the program has not read
// yet waits here. It also joins partial deliveries, as libcpg does.
type eventQueue struct {
	mu      sync.Mutex
	q       []Event
	bytes   int // of the messages waiting
	wake    chan struct{}
	closed  bool
	out     chan Event
	partial map[[2]uint32][]byte
}

func (q *eventQueue) init(out chan Event) {
	q.out = out
	q.wake = make(chan struct{}, 1)
	q.partial = map[[2]uint32][]byte{}
	go q.run()
}

// push queues a callback; false when the program lets its callbacks back
// up past maxBacklog (the handle is then closed, as the gateway
// disconnects a libcpg client that does not read its events).
func (q *eventQueue) push(e Event) bool {
	q.mu.Lock()
	ok := true
	if !q.closed {
		if q.bytes+len(e.Data) > maxBacklog {
			ok = false
		} else {
			q.q = append(q.q, e)
			q.bytes += len(e.Data)
		}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return ok
}

// backlog is the size of the messages the program has not read yet.
func (q *eventQueue) backlog() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// Backlog limits: from highBacklog Mcast answers ErrTryAgain (the program
// must read Events), at maxBacklog the handle is closed.
const (
	highBacklog = 1 << 20
	maxBacklog  = 64 << 20
)

func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run() {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.q) == 0 {
			closed := q.closed
			q.mu.Unlock()
			if closed {
				return
			}
			<-q.wake
			continue
		}
		e := q.q[0]
		q.q[0] = Event{}
		q.q = q.q[1:]
		q.bytes -= len(e.Data)
		q.mu.Unlock()
		q.out <- e
	}
}

// assemble joins a partial delivery with the pieces of its sender before
// it; whole says the message is complete.
func (q *eventQueue) assemble(e cpgwire.Event) (data []byte, whole bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := [2]uint32{e.NodeID, e.PID}
	if e.FragType == cpgwire.PartialFirst {
		q.partial[k] = make([]byte, 0, e.MsgLen)
	}
	buf, ok := q.partial[k]
	if !ok {
		return nil, false // its first piece was before this handle joined
	}
	buf = append(buf, e.Data...)
	if e.FragType != cpgwire.PartialLast {
		q.partial[k] = buf
		return nil, false
	}
	delete(q.partial, k)
	return buf, true
}

// forget drops the partial messages of members that left.
func (q *eventQueue) forget(left []cpgwire.Address) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range left {
		delete(q.partial, [2]uint32{a.NodeID, a.PID})
	}
}
