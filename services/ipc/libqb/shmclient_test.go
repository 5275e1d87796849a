package libqb

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/services/ipc/libqb/qbrb"
)

// testClient is a hand-made libqb client of either transport, so that the
// server's tests run on both and can send what no real client would.
type testClient interface {
	// send sends a request (SOCKET: a datagram; SHM: a chunk and its
	// notification byte) without waiting for the response.
	send(t *testing.T, msg []byte)
	roundTrip(t *testing.T, msg []byte) []byte
	event(t *testing.T) []byte
	flowControl(t *testing.T) int32
	closedBy(t *testing.T) bool
	directory() string
}

var transports = []Transport{TransportSHM, TransportSocket}

// startServerOn starts a server of transport tr.
func startServerOn(t testing.TB, h Handler, tr Transport, tune func(*Server)) (string, *Server) {
	t.Helper()
	return startServerLogging(t, h, bustest.Writer(t), func(s *Server) {
		s.Transport = tr
		tune(s)
	})
}

// connect dials service and opens the connection the server chose.
func connect(t *testing.T, service string) testClient {
	t.Helper()
	c, resp := dial(t, service, connRequest(-1, 24, 8192))
	if len(resp) != connResponseSize {
		t.Fatalf("handshake answered with %d bytes", len(resp))
	}
	if e := int32(leU32(resp[16:])); e != 0 {
		t.Fatalf("handshake refused: %d", e)
	}
	if leU32(resp[24:]) == 1 {
		return c.openSHM(t)
	}
	c.open(t)
	return c
}

func leU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (c *rawClient) directory() string { return c.base[:strings.LastIndexByte(c.base, '/')] }

func (c *rawClient) send(t *testing.T, msg []byte) {
	t.Helper()
	if _, err := syscall.Write(c.req, msg); err != nil {
		t.Fatal(err)
	}
}

func (c *rawClient) event(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := recv(c.evt, buf)
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	return buf[:n]
}

// shmClient is the SHM side of a rawClient: the three rings, mapped as
// libqb's client maps them, and the setup socket.
type shmClient struct {
	setup          int
	req, resp, evt *qbrb.Ring
}

func (c *rawClient) openSHM(t *testing.T) *shmClient {
	t.Helper()
	s := &shmClient{setup: c.setup}
	var err error
	for _, r := range []struct {
		ring     **qbrb.Ring
		name     string
		userData int
	}{{&s.req, c.control, qbrb.UserDataSize}, {&s.resp, c.base, 0}, {&s.evt, c.eventName, 0}} {
		if *r.ring, err = qbrb.Open(r.name, r.userData); err != nil {
			t.Fatal(err)
		}
		ring := *r.ring
		t.Cleanup(func() { _ = ring.Close() })
	}
	return s
}

func (c *shmClient) directory() string {
	n := c.req.Name()
	return n[:strings.LastIndexByte(n, '/')]
}

func (c *shmClient) send(t *testing.T, msg []byte) {
	t.Helper()
	if err := c.req.Write(msg); err != nil {
		t.Fatalf("writing a request: %v", err)
	}
	c.notify(t)
}

// notify sends the byte that announces a request.
func (c *shmClient) notify(t *testing.T) {
	t.Helper()
	if _, err := syscall.Write(c.setup, []byte{1}); err != nil {
		t.Fatal(err)
	}
}

func (c *shmClient) roundTrip(t *testing.T, msg []byte) []byte {
	t.Helper()
	c.send(t, msg)
	if err := c.resp.Wait(5 * time.Second); err != nil {
		t.Fatalf("no response: %v", err)
	}
	buf := make([]byte, 1<<16)
	n, err := c.resp.Read(buf)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	return buf[:n]
}

func (c *shmClient) event(t *testing.T) []byte {
	t.Helper()
	var b [1]byte
	if n, err := recv(c.setup, b[:]); n != 1 {
		t.Fatalf("no event notification: %d, %v", n, err)
	}
	if err := c.evt.Wait(5 * time.Second); err != nil {
		t.Fatalf("event notified, not in the ring: %v", err)
	}
	buf := make([]byte, 1<<16)
	n, err := c.evt.Read(buf)
	if err != nil {
		t.Fatalf("event: %v", err)
	}
	return buf[:n]
}

func (c *shmClient) flowControl(t *testing.T) int32 {
	t.Helper()
	v, err := c.req.UserData32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// closedBy waits for the server to close the setup socket, skipping
// event notifications.
func (c *shmClient) closedBy(t *testing.T) bool {
	t.Helper()
	_ = syscall.SetsockoptTimeval(c.setup, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	buf := make([]byte, 256)
	for {
		n, err := recv(c.setup, buf)
		if n > 0 {
			continue
		}
		return n == 0 && !errors.Is(err, syscall.EAGAIN)
	}
}
