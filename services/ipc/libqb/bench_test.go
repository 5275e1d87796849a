package libqb_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
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
