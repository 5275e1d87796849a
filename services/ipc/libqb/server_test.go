package libqb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
)

type echo struct{ admit bool }

func (e echo) Admit(Creds) bool { return e.admit }
func (e echo) Open(c *Conn) (Session, error) {
	return echoSession{c}, nil
}

type echoSession struct{ c *Conn }

// Request answers with a response header and the request's bytes. A
// request with id 9 first sends as many 2 KiB events as its body's first
// byte times 100, numbered in their first four bytes.
func (s echoSession) Request(_ context.Context, msg []byte) []byte {
	if binary.LittleEndian.Uint32(msg) == 9 && len(msg) > ReqHeaderSize {
		for i := range int(msg[ReqHeaderSize]) * 100 {
			ev := make([]byte, 2048)
			binary.LittleEndian.PutUint32(ev, uint32(i))
			binary.LittleEndian.PutUint32(ev[8:], uint32(len(ev)))
			if err := s.c.SendEvent(ev); err != nil {
				break
			}
		}
	}
	out := make([]byte, ResHeaderSize+len(msg))
	binary.LittleEndian.PutUint32(out, binary.LittleEndian.Uint32(msg))
	binary.LittleEndian.PutUint32(out[8:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[16:], 1)
	copy(out[ResHeaderSize:], msg)
	return out
}
func (echoSession) Close() {}

// rawClient speaks libqb's client side by hand, so that tests can also
// send what no real client would.
type rawClient struct {
	setup, req, evt int
	// The connection response's three names: SOCKET's base name and
	// control file, SHM's response, request and event rings.
	base, control, eventName string
}

func dial(t *testing.T, service string, request []byte) (*rawClient, []byte) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := AbstractAddr(service)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err = syscall.Connect(fd, addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the listener is starting
	}
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	// Never hang a test on a server that does not answer.
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	if err := writeAll(fd, request); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, connResponseSize)
	got := 0
	for got < len(resp) {
		n, _ := recv(fd, resp[got:])
		if n <= 0 {
			return &rawClient{setup: fd}, resp[:got]
		}
		got += n
	}
	return &rawClient{setup: fd, base: cstring(resp[40+pathMax:]), control: cstring(resp[40:]), eventName: cstring(resp[40+2*pathMax:])}, resp
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func (c *rawClient) open(t *testing.T) {
	t.Helper()
	if c.base == "" {
		t.Fatal("no connection: the handshake was not answered")
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := AbstractAddr(c.base + "-response")
	remote, _ := AbstractAddr(c.base + "-request")
	if err := syscall.Bind(fd, local); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Connect(fd, remote); err != nil {
		t.Fatal(err)
	}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	c.req = fd
	t.Cleanup(func() { syscall.Close(fd) })
	efd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	local, _ = AbstractAddr(c.base + "-event")
	if err := syscall.Bind(efd, local); err != nil {
		t.Fatal(err)
	}
	_ = syscall.SetsockoptTimeval(efd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	c.evt = efd
	t.Cleanup(func() { syscall.Close(efd) })
}

// closedBy waits for the server to close the setup socket.
func (c *rawClient) closedBy(t *testing.T) bool {
	t.Helper()
	_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	n, _ := recv(c.setup, make([]byte, 1))
	return n == 0
}

// flowControl reads the request channel's flow_control flag as the client
// library does, from the control file.
func (c *rawClient) flowControl(t *testing.T) int32 {
	t.Helper()
	b, err := os.ReadFile(c.control)
	if err != nil || len(b) != controlSize {
		t.Fatalf("control file: %d bytes, %v", len(b), err)
	}
	return int32(binary.LittleEndian.Uint32(b[4:]))
}

func (c *rawClient) roundTrip(t *testing.T, msg []byte) []byte {
	t.Helper()
	if _, err := syscall.Write(c.req, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	n, err := recv(c.req, buf)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	return buf[:n]
}

func request(id int32, body []byte, size int32) []byte {
	b := make([]byte, ReqHeaderSize+len(body))
	binary.LittleEndian.PutUint32(b, uint32(id))
	binary.LittleEndian.PutUint32(b[8:], uint32(size))
	copy(b[ReqHeaderSize:], body)
	return b
}

func startServer(t *testing.T, h Handler) string {
	t.Helper()
	return startServerWith(t, h, func(*Server) {})
}

func startServerWith(t *testing.T, h Handler, tune func(*Server)) string {
	t.Helper()
	// Short names: the base of a connection's socket names (directory,
	// "qb-", service) must fit an abstract sockaddr_un. Connection
	// directories go to the test's own directory, not to the /dev/shm
	// that other tests inspect.
	service, _ := startServerLogging(t, h, bustest.Writer(t), func(s *Server) {
		// rawClient speaks the SOCKET transport.
		s.Transport = TransportSocket
		tune(s)
	})
	return service
}

func TestRoundTripAndTeardown(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, _ := startServerOn(t, echo{admit: true}, tr, func(*Server) {})
			c := connect(t, service)
			dir := c.directory()
			for i, size := range []int{0, 5, 1000, 8000} {
				msg := request(int32(7+i), bytes.Repeat([]byte{byte(i)}, size), int32(ReqHeaderSize+size))
				if got := c.roundTrip(t, msg); !bytes.Equal(got[ResHeaderSize:], msg) {
					t.Fatalf("echo of %d bytes = %d bytes", size, len(got))
				}
			}
			switch c := c.(type) {
			case *rawClient:
				syscall.Close(c.setup)
			case *shmClient:
				syscall.Close(c.setup)
			}
			waitGone(t, dir)
		})
	}
}

func TestRefusedClient(t *testing.T) {
	service := startServer(t, echo{admit: false})
	_, resp := dial(t, service, connRequest(-1, 24, 8192))
	if len(resp) != connResponseSize || int32(binary.LittleEndian.Uint32(resp[16:])) != -int32(syscall.EACCES) {
		t.Errorf("refusal: %d bytes, error %d; want -EACCES", len(resp), int32(binary.LittleEndian.Uint32(resp[16:])))
	}
}

// Malformed input closes the connection; it never crashes the server,
// which goes on serving the next client.
func TestMalformedInput(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, _ := startServerOn(t, echo{admit: true}, tr, func(*Server) {})
			cases := []struct {
				name string
				send []byte
			}{
				{"short request", []byte{1, 2, 3}},
				{"lying size", request(7, []byte("x"), 999)},
				{"negative size", request(7, []byte("x"), -5)},
			}
			if tr == TransportSocket {
				// SHM: a chunk larger than the ring is the corruption tests'.
				cases = append(cases, struct {
					name string
					send []byte
				}{"oversized", request(7, make([]byte, 64<<10), ReqHeaderSize+64<<10)})
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := connect(t, service)
					dir := c.directory()
					c.send(t, tc.send)
					if !c.closedBy(t) {
						t.Errorf("connection not closed after %s", tc.name)
					}
					waitGone(t, dir)
				})
			}
			t.Run("garbage handshake", func(t *testing.T) {
				c, resp := dial(t, service, connRequest(5, 24, 8192))
				if len(resp) != 0 || !c.closedBy(t) {
					t.Errorf("answered a garbage handshake with %d bytes", len(resp))
				}
			})
			c := connect(t, service)
			if got := c.roundTrip(t, request(1, nil, ReqHeaderSize)); len(got) != ResHeaderSize+ReqHeaderSize {
				t.Errorf("server stopped serving: %d bytes", len(got))
			}
		})
	}
}

// A client that does not read its events has its requests flow-controlled
// (SOCKET: through the control file; SHM: the request ring's user data)
// until it catches up, and gets every event, in order.
func TestEventFlowControl(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, _ := startServerOn(t, echo{admit: true}, tr, func(s *Server) { s.EventQueueHigh = 64 << 10 })
			c := connect(t, service)
			if fc := c.flowControl(t); fc != 0 {
				t.Fatalf("flow control %d before any event", fc)
			}
			c.roundTrip(t, request(9, []byte{20}, ReqHeaderSize+1)) // 2000 events, 4 MB
			if fc := c.flowControl(t); fc != 1 {
				t.Fatalf("flow control %d with 4 MB of unread events, want 1", fc)
			}
			for i := range 2000 {
				ev := c.event(t)
				if len(ev) != 2048 {
					t.Fatalf("event %d: %d bytes", i, len(ev))
				}
				if got := binary.LittleEndian.Uint32(ev); got != uint32(i) {
					t.Fatalf("event %d arrived as number %d", i, got)
				}
			}
			waitFor(t, "flow control lifted once the client read everything", func() bool { return c.flowControl(t) == 0 })
		})
	}
}

// A client that lets its events pile up to the maximum is disconnected,
// and its directory goes.
func TestEventQueueLimit(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, _ := startServerOn(t, echo{admit: true}, tr, func(s *Server) { s.EventQueueHigh, s.EventQueueMax = 64<<10, 1<<20 })
			c := connect(t, service)
			dir := c.directory()
			// No response comes: the connection ends while the request runs.
			c.send(t, request(9, []byte{20}, ReqHeaderSize+1))
			if !c.closedBy(t) {
				t.Fatal("connection not closed with its event queue full")
			}
			waitGone(t, dir)
		})
	}
}

func waitGone(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists after the connection ended", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return err
		}
		b = b[n:]
	}
	return nil
}

// recv reads, retrying when the runtime's signals interrupt the call.
func recv(fd int, b []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, b)
		if !errors.Is(err, syscall.EINTR) {
			return n, err
		}
	}
}
