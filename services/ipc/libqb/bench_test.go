package libqb_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
	"github.com/corobus/corobus/services/ipc/libqb/qbrb"
)

// echoHandler answers every request with a response header and the
// request's body: the server's own cost, without a service behind it.
type echoHandler struct{}

func (echoHandler) Admit(libqb.Creds) bool                  { return true }
func (echoHandler) Open(*libqb.Conn) (libqb.Session, error) { return echoSession{}, nil }

type echoSession struct{}

func (echoSession) Request(_ context.Context, msg []byte) []byte {
	out := make([]byte, libqb.ResHeaderSize+len(msg)-libqb.ReqHeaderSize)
	copy(out, msg[:4])
	binary.LittleEndian.PutUint32(out[8:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[16:], 1)
	copy(out[libqb.ResHeaderSize:], msg[libqb.ReqHeaderSize:])
	return out
}
func (echoSession) Close() {}

// BenchmarkRoundTrip is one synchronous client's request and response
// through the server, on each transport: the IPC hot path a cmap get
// pays before its service runs (qbclient plays libqb's client; on SHM it
// sleeps on the response semaphore's futex as libqb does).
func BenchmarkRoundTrip(b *testing.B) {
	for _, tr := range []libqb.Transport{libqb.TransportSHM, libqb.TransportSocket} {
		for _, size := range []int{64, 4096} {
			b.Run(fmt.Sprintf("%s/%dB", tr, size), func(b *testing.B) {
				srv := libqb.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
				srv.Transport = tr
				dir, err := os.MkdirTemp("", "qb")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
				srv.ShmDir = dir
				service := fmt.Sprintf("cbb-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- srv.Listen(ctx, service, echoHandler{}) }()
				defer func() { cancel(); <-done }()
				var c *qbclient.Client
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					if c, err = qbclient.Dial(service, 1<<16); err == nil || time.Now().After(deadline) {
						break
					}
				}
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				msg := qbclient.NewRequest(1, make([]byte, size))
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := c.Request(msg, 5*time.Second); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// sinkSession takes asynchronous requests as CPG's multicast does: it
// copies each one's body into a buffer of its own (the totem message) and
// answers nothing. borrow is what it tells the server (libqb.Borrower).
type sinkSession struct {
	borrow bool
	buf    []byte
	got    chan struct{}
}

func (s *sinkSession) Request(_ context.Context, msg []byte) []byte {
	s.buf = append(s.buf[:0], msg[libqb.ReqHeaderSize:]...)
	s.got <- struct{}{}
	return libqb.NoResponse
}
func (s *sinkSession) Close()                {}
func (s *sinkSession) BorrowsRequests() bool { return s.borrow }

type sinkHandler struct{ s *sinkSession }

func (h sinkHandler) Admit(libqb.Creds) bool                  { return true }
func (h sinkHandler) Open(*libqb.Conn) (libqb.Session, error) { return h.s, nil }

// BenchmarkAsyncRequest is a client's stream of 64 KiB asynchronous
// requests over SHM (cpg_mcast_joined's), with the server copying each
// request for the session (borrow=false) or lending it its buffer.
func BenchmarkAsyncRequest(b *testing.B) {
	for _, borrow := range []bool{false, true} {
		b.Run(fmt.Sprintf("borrow=%v", borrow), func(b *testing.B) {
			srv := libqb.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
			dir, err := os.MkdirTemp("", "qb")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(dir)
			srv.ShmDir = dir
			sess := &sinkSession{borrow: borrow, got: make(chan struct{}, 1<<16)}
			service := fmt.Sprintf("cba-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Listen(ctx, service, sinkHandler{sess}) }()
			defer func() { cancel(); <-done }()
			var c *qbclient.Client
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if c, err = qbclient.Dial(service, 1<<20); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := qbclient.NewRequest(1, make([]byte, 64<<10))
			b.SetBytes(64 << 10)
			b.ReportAllocs()
			for b.Loop() {
				for {
					err := c.Send(msg)
					if err == nil {
						break
					}
					if !errors.Is(err, qbrb.ErrNoRoom) {
						b.Fatal(err)
					}
					<-sess.got // the server took one: room again
				}
			}
			for len(sess.got) > 0 {
				<-sess.got
			}
		})
	}
}
