package libqb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/corobus/corobus/services/ipc/libqb/qbrb"
)

// shmTransport is libqb's SHM connection type (QB_IPC_SHM, what corosync
// serves on Linux; lib/ipc_shm.c): three rings in the connection's
// directory (qbrb), "<dir>/qb-request-<svc>", "…-response-…" and
// "…-event-…", each a -header and a -data file, made by the server and
// handed to the client's uid and gid, mode 0600. The setup socket stays
// the connection's signal path:
//
//   - a request is a chunk the client writes into the request ring (and
//     posts its semaphore), then one byte on the setup socket — libqb's
//     needs_sock_for_poll — so that the server waits on its poller, never
//     on a semaphore;
//   - a response is a chunk in the response ring, its semaphore posted:
//     the client sleeps on that semaphore's futex;
//   - an event is a chunk in the event ring, its semaphore posted, then
//     one byte on the setup socket, which is the descriptor the client's
//     cmap_fd_get & co. return for polling — and whose peer credentials
//     (SO_PEERCRED) are the server's, which Pacemaker checks;
//   - flow control is the request ring's int32 of user data; the client
//     sends nothing while it is set, and reads a request ring whose
//     ref_count is not 2 as a closed connection.
//
// The client owns the files and can write anything into them, or shrink
// them: qbrb trusts nothing it reads there and turns a fault into an
// error. A client that breaks the protocol — a byte without a committed
// chunk and a posted semaphore, a chunk that lies, a corrupt ring — has its
// connection closed and logged once; nothing it does reaches another
// connection.
type shmTransport struct {
	c              *Conn
	req, resp, evt *qbrb.Ring

	// mu guards the rings against their release: an event or a flow
	// control change may race the connection's end.
	mu     sync.RWMutex
	closed bool

	// The serving goroutine's own (serveRequests): debt is the bytes read
	// from the setup socket less the requests served — below zero,
	// requests served whose bytes are still to be read; above zero,
	// requests announced and not served yet, which the client must have
	// posted first. unsure: a wake-up was served without reading the
	// socket, so what woke it may have been the EOF too.
	debt   int
	unsure bool
	// scratch takes the bytes respond's wait reads.
	scratch [64]byte

	// Event notifications (bytes on the setup socket) the socket had no
	// room for yet; the notifier writes them once it has.
	notesMu sync.Mutex
	notes   int
	note    [1]byte // the notification byte, without an allocation per event
	kick    chan struct{}
}

func newShmTransport(c *Conn) (t *shmTransport, err error) {
	t = &shmTransport{c: c, kick: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			t.release()
		}
	}()
	desc := filepath.Join(c.dir, "qb")
	uid, gid := int(c.Creds.UID), int(c.Creds.GID)
	for _, r := range []struct {
		ring **qbrb.Ring
		kind string
	}{{&t.req, "request"}, {&t.resp, "response"}, {&t.evt, "event"}} {
		if *r.ring, err = qbrb.Create(desc+"-"+r.kind+"-"+c.Service, c.maxSize, uid, gid); err != nil {
			return nil, fmt.Errorf("making the %s ring: %w", r.kind, err)
		}
	}
	go t.notifier()
	return t, nil
}

func (t *shmTransport) response() (int32, string, string, string) {
	return 1, t.req.Name(), t.resp.Name(), t.evt.Name()
}

// withRings runs f unless the rings are released.
func (t *shmTransport) withRings(f func() error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return fmt.Errorf("connection %d: closed", t.c.ID)
	}
	return f()
}

// serveRequests serves the requests the client posts, until its EOF.
//
// The goroutine stays inside one read of the setup socket for the
// connection's life: its callback serves what the request ring holds and
// returns to wait on the poller, woken by the next byte. A request's
// chunk is committed and its semaphore posted before its byte is sent
// (libqb's qb_ipcc_send), so a wake-up finds the ring posted and is
// served from it, without reading the socket: the bytes pile up and are
// read a batch at a time (notesBatch). Reading them one by one, as
// before, cost two system calls per request — the byte, then the
// EAGAIN that re-arms the poller — besides the poller's own and the
// response's futex wake.
//
// What is not read may hide the client's EOF behind it: a client that
// dies right after posting a request wakes the goroutine once, for both.
// So whenever it waits with bytes unread after a wake-up it did not read,
// a read deadline (eofCheck) makes it read them later: a dead client's
// connection ends within that, its EOF otherwise seen at once.
//
// While a synchronous client keeps coming back within microseconds, the
// goroutine looks for the next request in the ring before waiting
// (spinner).
func (t *shmTransport) serveRequests(handle func([]byte) []byte) {
	c := t.c
	notes := make([]byte, 256)
	buf := make([]byte, c.maxSize)
	sp := spinner{max: c.srv.SpinMax}
	// armed: eofCheck's deadline is set.
	armed := false
	// serve takes one posted request and answers it; false ends the
	// connection.
	serve := func() bool {
		var size int
		err := t.withRings(func() error {
			ok, err := t.req.TryWait()
			if err == nil && !ok {
				err = errors.New("a request's semaphore taken under the server")
			}
			if err == nil {
				size, err = t.req.Read(buf)
			}
			return err
		})
		if err != nil {
			t.broke(err)
			return false
		}
		msg := buf[:size]
		id, err := checkRequest(msg)
		if err != nil {
			c.log.Warn("libqb: malformed request; closing", "conn", c.ID, "pid", c.Creds.PID, "err", err)
			return false
		}
		if id == msgDisconnect {
			return false
		}
		t.debt--
		resp := handle(msg)
		if resp == nil {
			return false
		}
		if len(resp) == 0 {
			return true // an asynchronous call: nothing answers it
		}
		if err := t.respond(resp); err != nil {
			if !errors.Is(err, errShutdown) {
				c.log.Warn("libqb: response not sent; closing", "conn", c.ID, "pid", c.Creds.PID, "err", err)
			}
			return false
		}
		c.counters.responses.Add(1) // written, as libqb counts them
		sp.responded()
		c.srv.servedConn.Store(c.ID)
		c.srv.servedAt.Store(sp.last.UnixNano())
		return true
	}
	// posted tells whether a request waits in the ring.
	posted := func() (bool, error) {
		var n uint32
		err := t.withRings(func() (err error) { n, err = t.req.Pending(); return err })
		if err != nil {
			t.broke(err)
		}
		return n > 0, err
	}
	drain := func(fd int) bool { return t.drain(fd, notes) }
	// step serves the requests in the ring, looking for more while the
	// spinner lets it; false ends the connection.
	step := func(fd int) bool {
		p, err := posted()
		for err == nil {
			if p {
				if !serve() {
					return false
				}
			}
			if -t.debt >= notesBatch && !drain(fd) {
				return false
			}
			// The next request: looked for while the spinner lets it,
			// else taken if it is posted already.
			window := sp.window()
			if window <= 0 || c.srv.othersBusy(c.ID, window) || !c.srv.spinning.CompareAndSwap(false, true) {
				if p, err = posted(); err == nil && !p {
					return true
				}
				continue
			}
			err = t.withRings(func() (err error) {
				p, err = t.req.Poll(window)
				return err
			})
			c.srv.spinning.Store(false)
			if err != nil {
				t.broke(err)
				return false
			}
			sp.polled(p)
			if !p {
				return true
			}
		}
		return false
	}
	for {
		ended := false
		entered := false
		err := c.setupRaw.Read(func(fdp uintptr) bool {
			fd := int(fdp)
			if !entered {
				// Entering resets the poller's readiness: what came before
				// is read, not waited for.
				entered = true
				if !drain(fd) {
					ended = true
					return true
				}
			} else {
				p, err := posted()
				if err != nil {
					ended = true
					return true
				}
				if !p {
					// Woken with nothing posted: bytes of requests
					// served already, or the EOF.
					if !drain(fd) {
						ended = true
						return true
					}
				} else {
					sp.woke()
					t.unsure = true
				}
			}
			if !step(fd) {
				ended = true
				return true
			}
			if t.unsure && !armed {
				armed = true
				_ = c.setup.SetReadDeadline(time.Now().Add(eofCheck))
			}
			return false
		})
		if ended || c.isDone() {
			return
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		// eofCheck's deadline: clear it and enter again, which reads.
		armed = false
		_ = c.setup.SetReadDeadline(time.Time{})
		if c.isDone() {
			return // a shutdown's deadline, set between the two looks
		}
	}
}

// broke logs, once per connection (its end follows), that the client
// broke the protocol; not when the rings went with the connection's own
// end.
func (t *shmTransport) broke(err error) {
	c := t.c
	if c.isDone() {
		return
	}
	c.log.Warn("libqb: the client broke the shared-memory protocol; closing", "conn", c.ID, "service", c.Service,
		"pid", c.Creds.PID, "uid", c.Creds.UID, "err", err)
}

// drain reads what the setup socket holds, to EAGAIN, into scratch;
// false at its EOF or when it announced requests the client did not post.
// Only the connection's serving goroutine calls it.
func (t *shmTransport) drain(fd int, scratch []byte) bool {
	for {
		n, err := recvNow(fd, scratch, 0)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			t.unsure = false
			if t.debt <= 0 {
				return true
			}
			var p uint32
			if err := t.withRings(func() (err error) { p, err = t.req.Pending(); return err }); err != nil {
				t.broke(err)
				return false
			}
			if int(p) >= t.debt {
				return true
			}
			t.broke(errors.New("a request announced on the setup socket, but its semaphore was not posted"))
			return false
		case errors.Is(err, syscall.EINTR):
		case err != nil || n == 0:
			return false
		default:
			t.debt += n
		}
	}
}

// notesBatch is how many requests' bytes may pile up in the setup socket
// before they are read; far below what the socket holds (one byte per
// request, a few hundred before a sender would block).
const notesBatch = 32

// eofCheck bounds how long a dead client's connection may outlive it when
// its EOF came with a request (serveRequests).
const eofCheck = 200 * time.Millisecond

// othersBusy tells whether a connection other than id was served within
// window: clients that take turns on the CPUs. A look would then spin on
// a CPU that one of them needs to send the request looked for (several
// synchronous clients on a two-CPU machine), so the connection waits on
// the poller instead.
func (s *Server) othersBusy(id uint64, window time.Duration) bool {
	return s.servedConn.Load() != id && time.Now().UnixNano()-s.servedAt.Load() < int64(window)
}

// DefaultSpinMax is Server.SpinMax's default.
const DefaultSpinMax = 50 * time.Microsecond

// spinner decides, for one connection, whether to look for the next
// request in the ring before waiting on the poller, and for how long.
//
// A synchronous client (a libcmap get loop) sends its next request a few
// microseconds after it has its response. Waiting for it on the poller
// costs the server a sleep and a wake-up per request, and the client one
// more when the response comes after it went to sleep on its response
// semaphore. On an idle machine each wake-up is a sleeping CPU's (on the
// project's 2-vCPU VM, whose idle vCPUs halt at once, one client's gets
// ran at a third of the rate they reach on a busy machine:
// docs/architecture.md). Looking at the request semaphore instead, the
// server takes the request at once, and often answers it before the
// client sleeps — what corosync gets from running SCHED_RR, which
// preempts its client on the client's own CPU.
//
// A look costs CPU that another process may want, so it is earned: only
// after a request that came within max of the response before it (woken
// on the poller), and only while looks find requests. A look that finds
// none (the client stopped, or it waits for a CPU: several busy clients)
// stops the looks for the next 16 requests, twice as many after each
// further miss (a look that finds one halves it again), up to 1024: a
// miss costs at most max per that many requests. And one connection of a
// server looks at a time, and only while no other connection was served
// within max (othersBusy): several synchronous clients take turns on the
// CPUs, and a look would spin on a CPU that the client it waits for, or
// another, needs. Three nodes, eight libcmap clients setting node keys,
// machine at rest, three alternated pairs: 93 000–122 000 sets/s at
// 15.7–20.9 us of the cluster's CPU per set before, 115 000–158 000 at
// 12.2–16.7 after; one client unchanged (docs/architecture.md).
type spinner struct {
	max     time.Duration
	last    time.Time // the last response
	earned  bool      // the last request came soon after its response
	skip    int       // requests to serve before the next look
	backoff int       // skip after the next miss
}

func (s *spinner) window() time.Duration {
	if s.max <= 0 || !s.earned || s.skip > 0 {
		return 0
	}
	return s.max
}

// responded: a response went out now.
func (s *spinner) responded() {
	s.last = time.Now()
	if s.skip > 0 {
		s.skip--
	}
}

// woke: a request came through the poller.
func (s *spinner) woke() {
	s.earned = !s.last.IsZero() && time.Since(s.last) <= s.max
}

// polled: a look found a request, or not.
func (s *spinner) polled(found bool) {
	if found {
		s.backoff /= 2
		return
	}
	s.backoff = min(max(2*s.backoff, 16), 1024)
	s.skip = s.backoff
	s.earned = false
}

// respond writes a response into the response ring. A synchronous client
// has read the previous one; one that pipelines requests and lets
// responses pile up gets its next one when it makes room, or its
// connection closed meanwhile.
func (t *shmTransport) respond(resp []byte) error {
	return backoff(t.c, func() (bool, error) {
		err := t.withRings(func() error { return t.resp.Write(resp) })
		if errors.Is(err, qbrb.ErrNoRoom) {
			// This goroutine is also the one that would see the client
			// leave: look for the setup socket's EOF while waiting (behind
			// the bytes of requests served already, which it reads).
			ok := false
			if cerr := t.c.setupRaw.Control(func(fd uintptr) { ok = t.drain(int(fd), t.scratch[:]) }); cerr != nil || !ok {
				return false, errShutdown
			}
			return false, nil
		}
		return true, err
	})
}

// sendEvent writes an event into the event ring and notifies the client
// with a byte on the setup socket. A full ring is the client's backlog:
// the event queue keeps the event and retries (EAGAIN).
func (t *shmTransport) sendEvent(msg []byte) error {
	err := t.withRings(func() error { return t.evt.Write(msg) })
	if errors.Is(err, qbrb.ErrNoRoom) {
		return fmt.Errorf("event to connection %d: ring full: %w", t.c.ID, syscall.EAGAIN)
	}
	if err != nil {
		return fmt.Errorf("event to connection %d: %w", t.c.ID, err)
	}
	t.notify()
	return nil
}

// notify sends one event notification now, or leaves it to the notifier
// when the socket is full (or others wait already).
func (t *shmTransport) notify() {
	t.notesMu.Lock()
	defer t.notesMu.Unlock()
	if t.notes == 0 {
		var n int
		var err error
		if cerr := t.c.setupRaw.Control(func(fd uintptr) {
			n, err = sendNow(int(fd), t.note[:])
		}); cerr == nil && err == nil && n == 1 {
			return
		}
	}
	t.notes++
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// notifier writes the notifications the setup socket had no room for,
// waiting for room on the poller.
func (t *shmTransport) notifier() {
	zeros := make([]byte, 256)
	for {
		select {
		case <-t.kick:
		case <-t.c.done:
			return
		}
		for {
			t.notesMu.Lock()
			n := min(t.notes, len(zeros))
			t.notesMu.Unlock()
			if n == 0 {
				break
			}
			var sent int
			var err error
			if perr := t.c.setupRaw.Write(func(fd uintptr) bool {
				sent, err = sendNow(int(fd), zeros[:n])
				return !errors.Is(err, syscall.EAGAIN)
			}); perr != nil || (err != nil && !errors.Is(err, syscall.EINTR)) {
				return // the connection is ending
			}
			t.notesMu.Lock()
			t.notes -= sent
			t.notesMu.Unlock()
		}
	}
}

func (t *shmTransport) setFlowControl(level int32) {
	_ = t.withRings(func() error { return t.req.SetUserData32(level) })
}

// wake: the connection's shutdown already wakes the setup socket's
// readers and writers, and the response retries.
func (t *shmTransport) wake() {}

func (t *shmTransport) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	for _, r := range []*qbrb.Ring{t.req, t.resp, t.evt} {
		if r != nil {
			if err := r.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.c.log.Debug("libqb: removing a ring", "conn", t.c.ID, "ring", r.Name(), "err", err)
			}
		}
	}
}
