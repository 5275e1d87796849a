package libqb

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
)

// peek reads a 32-bit word of a ring's file.
func peek(t *testing.T, path string, off int64) uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

// poke writes a 32-bit word into a ring's file at off, as the client may
// through its mapping (write(2) and a shared mapping see the same pages).
func poke(t *testing.T, path string, off int64, v uint32) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// A client that corrupts its shared memory — a chunk size that lies, a
// write pointer beyond the ring, a request announced but its semaphore
// never posted, a chunk never committed (killed mid-write), files shrunk
// under the server's mappings — has its connection closed, logged once,
// and its directory removed; another client is served meanwhile and
// after.
func TestSHMCorruptClient(t *testing.T) {
	logs := &logBuffer{t: t}
	service, _ := startServerLogging(t, echo{admit: true}, logs, func(s *Server) { s.Transport = TransportSHM })
	good := connect(t, service)
	good.roundTrip(t, request(1, nil, ReqHeaderSize))
	for _, tc := range []struct {
		name    string
		corrupt func(c *shmClient, hdr, data string)
	}{
		{"chunk size that lies", func(c *shmClient, hdr, data string) {
			at := 4 * int64(peek(t, hdr, 0)) // write_pt: where the chunk goes
			if err := c.req.Write(request(5, []byte("x"), ReqHeaderSize+1)); err != nil {
				t.Fatal(err)
			}
			poke(t, data, at, 0x7ffffff0)
		}},
		{"chunk size past what was written", func(c *shmClient, hdr, data string) {
			at := 4 * int64(peek(t, hdr, 0))
			if err := c.req.Write(request(5, []byte("x"), ReqHeaderSize+1)); err != nil {
				t.Fatal(err)
			}
			poke(t, data, at, 8000)
		}},
		{"write pointer beyond the ring", func(c *shmClient, hdr, data string) {
			if err := c.req.Write(request(5, []byte("x"), ReqHeaderSize+1)); err != nil {
				t.Fatal(err)
			}
			poke(t, hdr, 0, 1<<30)
		}},
		// The byte alone (notify, below): a request announced whose
		// semaphore was never posted. Writing a chunk and taking its token
		// back would race the server, which looks at the ring after each
		// response and may serve the chunk before the token goes.
		{"semaphore never posted", func(c *shmClient, hdr, data string) {}},
		{"killed mid-write", func(c *shmClient, hdr, data string) {
			at := 4 * int64(peek(t, hdr, 0))
			if err := c.req.Write(request(5, []byte("x"), ReqHeaderSize+1)); err != nil {
				t.Fatal(err)
			}
			poke(t, data, at+4, 0xA110CED0) // magic: allocated, never committed
		}},
		{"data file truncated", func(c *shmClient, hdr, data string) {
			if err := c.req.Write(request(5, []byte("x"), ReqHeaderSize+1)); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(data, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"header file truncated", func(c *shmClient, hdr, data string) {
			if err := os.Truncate(hdr, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := logs.count("broke the shared-memory protocol")
			c := connect(t, service).(*shmClient)
			c.roundTrip(t, request(2, []byte("fine so far"), ReqHeaderSize+11))
			dir := c.directory()
			tc.corrupt(c, c.req.Name()+"-header", c.req.Name()+"-data")
			// The server may find the corruption before the byte: it
			// looks at the request ring after each response.
			if _, err := syscall.Write(c.setup, []byte{1}); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			if !c.closedBy(t) {
				t.Fatal("the corrupting client's connection is still open")
			}
			waitGone(t, dir)
			if n := logs.count("broke the shared-memory protocol") - before; n != 1 {
				t.Errorf("logged %d times, want once", n)
			}
			if got := good.roundTrip(t, request(3, nil, ReqHeaderSize)); len(got) != ResHeaderSize+ReqHeaderSize {
				t.Errorf("the other client: %d bytes", len(got))
			}
		})
	}
}

// A client that died waiting on its response semaphore leaves its waiter
// count behind: posting to it costs a wake-up of nobody, not a hang. A
// client that pipelines requests without reading the responses holds only
// its own connection's goroutine, and its end releases it.
func TestSHMStuckClients(t *testing.T) {
	service, _ := startServerLogging(t, echo{admit: true}, bustest.Writer(t), func(s *Server) { s.Transport = TransportSHM })
	good := connect(t, service)
	t.Run("waiter left behind", func(t *testing.T) {
		c := connect(t, service).(*shmClient)
		poke(t, c.resp.Name()+"-header", 8212, 3)
		for i := range 5 {
			c.roundTrip(t, request(int32(i), nil, ReqHeaderSize))
		}
	})
	t.Run("responses never read", func(t *testing.T) {
		c := connect(t, service).(*shmClient)
		dir := c.directory()
		// Each response echoes 5 KiB: the response ring holds two, the
		// third waits for room that never comes.
		for i := range 3 {
			msg := request(int32(i), make([]byte, 5<<10), ReqHeaderSize+5<<10)
			waitFor(t, "room in the request ring", func() bool { return c.req.Write(msg) == nil })
			c.notify(t)
		}
		time.Sleep(100 * time.Millisecond)
		good.roundTrip(t, request(9, nil, ReqHeaderSize))
		_ = c.req.Close()
		_ = c.resp.Close()
		_ = c.evt.Close()
		if err := syscall.Close(c.setup); err != nil {
			t.Fatal(err)
		}
		waitGone(t, dir)
	})
	good.roundTrip(t, request(10, nil, ReqHeaderSize))
}

// A client killed right after posting a request — its byte and its EOF
// reach the server together, and the server answers from the ring
// without reading the socket — still has its connection ended and its
// directory removed.
func TestSHMClientDiesWithRequest(t *testing.T) {
	service, _ := startServerLogging(t, echo{admit: true}, bustest.Writer(t), func(s *Server) { s.Transport = TransportSHM })
	good := connect(t, service)
	for i := range 10 {
		c := connect(t, service).(*shmClient)
		dir := c.directory()
		for j := range 3 {
			c.roundTrip(t, request(int32(j), nil, ReqHeaderSize))
		}
		c.send(t, request(int32(i), []byte("last words"), ReqHeaderSize+10))
		if err := syscall.Close(c.setup); err != nil {
			t.Fatal(err)
		}
		_ = c.req.Close()
		_ = c.resp.Close()
		_ = c.evt.Close()
		waitGone(t, dir)
	}
	good.roundTrip(t, request(99, nil, ReqHeaderSize))
}
