package libqb

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

type echo struct{ admit bool }

func (e echo) Admit(Creds) bool { return e.admit }
func (e echo) Open(c *Conn) (Session, error) {
	return echoSession{c}, nil
}

type echoSession struct{ c *Conn }

// Request answers with a response header and the request's bytes.
func (s echoSession) Request(_ context.Context, msg []byte) []byte {
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
	setup, req int
	base       string
}

func dial(t *testing.T, service string, request []byte) (*rawClient, []byte) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := abstractAddr(service)
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
		n, err := syscall.Read(fd, resp[got:])
		if n <= 0 {
			_ = err
			return &rawClient{setup: fd}, resp[:got]
		}
		got += n
	}
	return &rawClient{setup: fd, base: cstring(resp[40+pathMax:])}, resp
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func (c *rawClient) open(t *testing.T) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := abstractAddr(c.base + "-response")
	remote, _ := abstractAddr(c.base + "-request")
	if err := syscall.Bind(fd, local); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Connect(fd, remote); err != nil {
		t.Fatal(err)
	}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	c.req = fd
	t.Cleanup(func() { syscall.Close(fd) })
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
	// Short names: the base of a connection's socket names (directory,
	// "qb-", service) must fit an abstract sockaddr_un.
	service := fmt.Sprintf("cbt-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	srv := NewServer(slog.New(slog.DiscardHandler))
	// Connection directories go to the test's own directory, not to the
	// /dev/shm that other tests inspect.
	shm, err := os.MkdirTemp("", "qb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	srv.ShmDir = shm
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Listen(ctx, service, h) }()
	t.Cleanup(func() { cancel(); <-done })
	return service
}

func TestRoundTripAndTeardown(t *testing.T) {
	service := startServer(t, echo{admit: true})
	c, resp := dial(t, service, connRequest(-1, 24, 8192))
	if len(resp) != connResponseSize || int32(binary.LittleEndian.Uint32(resp[16:])) != 0 {
		t.Fatalf("handshake response of %d bytes, error %d", len(resp), int32(binary.LittleEndian.Uint32(resp[16:])))
	}
	dir := c.base[:strings.LastIndexByte(c.base, '/')]
	if _, err := os.Stat(cstring(resp[40:])); err != nil {
		t.Errorf("control file: %v", err)
	}
	c.open(t)
	msg := request(7, []byte("hello"), ReqHeaderSize+5)
	if _, err := syscall.Write(c.req, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := syscall.Read(c.req, buf)
	if err != nil || !bytes.Equal(buf[ResHeaderSize:n], msg) {
		t.Fatalf("echo = %q, %v", buf[:max(n, 0)], err)
	}
	syscall.Close(c.setup)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists after the client went away", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefusedClient(t *testing.T) {
	service := startServer(t, echo{admit: false})
	_, resp := dial(t, service, connRequest(-1, 24, 8192))
	if len(resp) != connResponseSize || int32(binary.LittleEndian.Uint32(resp[16:])) != -int32(syscall.EACCES) {
		t.Errorf("refusal: %d bytes, error %d; want -EACCES", len(resp), int32(binary.LittleEndian.Uint32(resp[16:])))
	}
}
