package libqb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
)

// recorder admits everyone, echoes every request and remembers the
// message ids it served.
type recorder struct {
	mu  sync.Mutex
	ids []int32
}

func (r *recorder) Admit(Creds) bool { return true }
func (r *recorder) Open(c *Conn) (Session, error) {
	return recorderSession{r, echoSession{c}}, nil
}

type recorderSession struct {
	r *recorder
	echoSession
}

func (s recorderSession) Request(ctx context.Context, msg []byte) []byte {
	s.r.mu.Lock()
	s.r.ids = append(s.r.ids, int32(binary.LittleEndian.Uint32(msg)))
	s.r.mu.Unlock()
	return s.echoSession.Request(ctx, msg)
}

func (r *recorder) served() []int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int32(nil), r.ids...)
}

// logBuffer keeps the server's log for the test to read, and shows it in
// the test's output.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// A request datagram is served only when the connection's own client sent
// it: another user, or another process of the same user, that sends into
// a live session's request socket — from anywhere, even from the client's
// response name taken before the client bound it — is dropped and logged
// once, and the client is served as before. Once the client's first
// request came, the kernel refuses other senders outright.
func TestForeignRequestsDropped(t *testing.T) {
	rec := &recorder{}
	logs := &logBuffer{t: t}
	service, _ := startServerLogging(t, rec, logs, func(s *Server) { s.Transport = TransportSocket })
	c, resp := dial(t, service, connRequest(-1, 24, 8192))
	if len(resp) != connResponseSize {
		t.Fatalf("handshake answered with %d bytes", len(resp))
	}
	reqName := c.base + "-request"
	attack := hex.EncodeToString(request(666, []byte("uidgid.uid.65534"), ReqHeaderSize+16))
	inject := func(t *testing.T, uid int, from string) string {
		t.Helper()
		bind := "-"
		if from != "" {
			bind = hex.EncodeToString([]byte(from))
		}
		return startHelper(t, uid, "inject", reqName, bind, attack).line(t)
	}
	// Before the client bound its sockets.
	for _, tc := range []struct {
		name string
		uid  int
		from string
	}{
		{"another user", 65534, ""},
		{"another user bound to the client's response name", 65534, c.base + "-response"},
		// Go shows an abstract name up to its first NUL: this one reads
		// as the client's, but the kernel's are different names.
		{"another user bound to a name that only looks like the client's", 65534, c.base + "-response\x00x"},
		{"another process of the client's user", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inject(t, tc.uid, tc.from); got != "sent" {
				t.Fatalf("the attacker could not even send: %s", got)
			}
		})
	}
	c.open(t)
	if got := c.roundTrip(t, request(7, []byte("mine"), ReqHeaderSize+4)); len(got) != ResHeaderSize+ReqHeaderSize+4 {
		t.Fatalf("the client's own request: %d bytes back", len(got))
	}
	t.Run("after the client's first request", func(t *testing.T) {
		if got := inject(t, 65534, ""); !strings.Contains(got, "operation not permitted") {
			t.Errorf("a foreign sender after the first request: %q, want the kernel's EPERM", got)
		}
	})
	if got := c.roundTrip(t, request(8, nil, ReqHeaderSize)); len(got) != ResHeaderSize+ReqHeaderSize {
		t.Fatalf("the client's second request: %d bytes back", len(got))
	}
	if got := rec.served(); fmt.Sprint(got) != "[7 8]" {
		t.Errorf("served requests %v, want only the client's [7 8]", got)
	}
	if n := logs.count("dropped a request datagram"); n != 1 {
		t.Errorf("the drops were logged %d times, want once per connection", n)
	}
}

// The connection directory is the client's, as libqb's server makes it:
// 0770 and owned by the client's uid and gid, its files 0600 and the
// client's (SOCKET: the control file; SHM: the three rings' headers and
// data); another user can neither list the one nor open the others.
func TestConnectionDirectoryModes(t *testing.T) {
	for _, tr := range []Transport{TransportSHM, TransportSocket} {
		t.Run(tr.String(), func(t *testing.T) {
			var shm string
			service, _ := startServerLogging(t, echo{admit: true}, bustest.Writer(t), func(s *Server) {
				// Like /dev/shm: anyone may enter and create.
				if err := os.Chmod(s.ShmDir, 0o1777); err != nil {
					t.Fatal(err)
				}
				shm = s.ShmDir
				s.Transport = tr
			})
			client := startHelper(t, 65534, "client", service)
			var first, second string
			if _, err := fmt.Sscanf(client.line(t), "base %s control %s", &second, &first); err != nil {
				t.Fatal(err)
			}
			dir := first[:strings.LastIndexByte(first, '/')]
			if !strings.HasPrefix(dir, shm+"/qb-") {
				t.Fatalf("connection directory %s is not in %s", dir, shm)
			}
			files := []string{first} // SOCKET: the control file
			if tr == TransportSHM {
				// The request, response and event rings.
				files = nil
				for _, kind := range []string{"request", "response", "event"} {
					for _, part := range []string{"header", "data"} {
						files = append(files, dir+"/qb-"+kind+"-"+service+"-"+part)
					}
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != len(files) {
				t.Errorf("the directory holds %d entries (%v), want %d", len(entries), err, len(files))
			}
			want := map[string]os.FileMode{dir: os.ModeDir | 0o770}
			for _, f := range files {
				want[f] = 0o600
			}
			for path, mode := range want {
				fi, err := os.Lstat(path)
				if err != nil {
					t.Error(err)
					continue
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode() != mode || st.Uid != 65534 || st.Gid != 65534 {
					t.Errorf("%s: mode %v owner %d:%d, want %v 65534:65534", path, fi.Mode(), st.Uid, st.Gid, mode)
				}
			}
			probe := func(uid int) string {
				h := startHelper(t, uid, "probe", dir, files[0])
				return h.line(t) + "; " + h.line(t)
			}
			if got := probe(4242); got != "readdir: permission denied; open: permission denied" {
				t.Errorf("another user: %s", got)
			}
			if got := probe(65534); got != "readdir: ok; open: ok" {
				t.Errorf("the client's user: %s", got)
			}
		})
	}
}

// 20 000 connections of an unprivileged user that never send their
// request hold no thread of the server each: the server's thread count
// stays bounded, connections over the per-uid limit are refused with
// -EAGAIN at once, the silent ones are closed at the handshake deadline,
// and root's client is served throughout.
func TestSilentConnectionsFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000 connections: skipped in -short")
	}
	// Four attacking processes of one user: a process may hold at most
	// RLIMIT_NOFILE descriptors, which this machine may not let a test
	// raise (no CAP_SYS_RESOURCE in a container).
	const flood, procs, perUID = 20000, 4, 256
	var srv *Server
	service, srv := startServerLogging(t, echo{admit: true}, bustest.Writer(t), func(s *Server) {
		s.HandshakeTimeout = 3 * time.Second
		s.MaxConnsPerUID = perUID
		s.Transport = TransportSocket // root's client here is rawClient
	})
	root, _ := dial(t, service, connRequest(-1, 24, 8192))
	root.open(t)
	root.roundTrip(t, request(1, nil, ReqHeaderSize))

	base := threadCount(t) // the runtime keeps the threads earlier tests made
	_, stopSampling := sampleThreads(t)
	var attackers []*helper
	for range procs {
		attackers = append(attackers, startHelper(t, 65534, "flood", service, strconv.Itoa(flood/procs)))
	}
	connected := 0
	for _, h := range attackers {
		var n, failed int
		if _, err := fmt.Sscanf(h.line(t), "connected %d failed %d", &n, &failed); err != nil {
			t.Fatal(err)
		}
		if failed > 0 {
			t.Errorf("%d of an attacker's connects failed", failed)
		}
		connected += n
	}
	t.Logf("the attackers made %d connections", connected)
	// While the attacker holds them: root's connection is served, and a
	// new one of root's is admitted and served.
	root.roundTrip(t, request(2, nil, ReqHeaderSize))
	fresh, resp := dial(t, service, connRequest(-1, 24, 8192))
	if e := int32(binary.LittleEndian.Uint32(resp[16:])); len(resp) != connResponseSize || e != 0 {
		t.Fatalf("root's new connection during the flood: %d bytes, error %d", len(resp), e)
	}
	fresh.open(t)
	fresh.roundTrip(t, request(3, nil, ReqHeaderSize))

	var open, refused, closed int
	deadline := time.Now().Add(2 * time.Minute)
	for {
		open, refused, closed = 0, 0, 0
		for _, h := range attackers {
			var o, r, c int
			h.send(t, "count")
			if _, err := fmt.Sscanf(h.line(t), "open %d refused %d closed %d", &o, &r, &c); err != nil {
				t.Fatal(err)
			}
			open, refused, closed = open+o, refused+r, closed+c
		}
		if open == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	threads := stopSampling()
	t.Logf("attackers' connections: %d refused at the limit, %d closed at the handshake deadline, %d still open; threads peaked at %d, from %d",
		refused, closed, open, threads, base)
	if connected != flood {
		t.Errorf("the attackers made %d connections, want %d", connected, flood)
	}
	if open != 0 {
		t.Errorf("%d silent connections still open after the handshake deadline", open)
	}
	if refused < connected-2*perUID || refused+closed != connected {
		t.Errorf("of %d connections %d refused and %d closed; want all but about %d refused", connected, refused, closed, perUID)
	}
	if threads-base > 48 {
		t.Errorf("the process's threads grew by %d during the flood; want a bound independent of the connections", threads-base)
	}
	root.roundTrip(t, request(4, nil, ReqHeaderSize))
	waitFor(t, "only root's two connections left", func() bool { return srv.Conns() == 2 })
}

// sampleThreads follows this process's thread count until stopped, and
// returns its peak.
func sampleThreads(t *testing.T) (peak func() int, stop func() int) {
	t.Helper()
	var mu sync.Mutex
	top := threadCount(t)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			n := threadCount(t)
			mu.Lock()
			top = max(top, n)
			mu.Unlock()
		}
	}()
	peak = func() int { mu.Lock(); defer mu.Unlock(); return top }
	stop = func() int { close(done); <-stopped; return peak() }
	return peak, stop
}

func threadCount(t *testing.T) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Error(err)
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startServerLogging is startServerWith with the server's log written to
// w, returning the server too.
func startServerLogging(t testing.TB, h Handler, w interface{ Write([]byte) (int, error) }, tune func(*Server)) (string, *Server) {
	t.Helper()
	service := fmt.Sprintf("cbt-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	srv := NewServer(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	shm, err := os.MkdirTemp("", "qb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	srv.ShmDir = shm
	tune(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Listen(ctx, service, h) }()
	t.Cleanup(func() { cancel(); <-done })
	// Clients that do not retry (libqb's, the helpers) connect at once.
	waitFor(t, "the server listening", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Listen: %v", err)
		default:
		}
		return listening(service)
	})
	return service, srv
}

// listening reports whether a socket is bound to service's padded
// abstract name (/proc/net/unix shows the name's NULs as '@').
func listening(service string) bool {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return true // cannot tell: let the clients find out
	}
	return strings.Contains(string(b), " @"+service+"@")
}

// Established connections hold no thread either: 300 clients that made a
// request and wait leave the server's thread count where it was, on
// either transport (SHM's requests are announced on the setup socket:
// the server never sleeps on a client's semaphore).
func TestManyConnectionsFewThreads(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, srv := startServerOn(t, echo{admit: true}, tr, func(*Server) {})
			base := threadCount(t) // the runtime keeps the threads earlier tests made
			_, stop := sampleThreads(t)
			var clients []testClient
			for i := range 300 {
				c := connect(t, service)
				c.roundTrip(t, request(int32(i), nil, ReqHeaderSize))
				clients = append(clients, c)
			}
			if n := srv.Conns(); n != 300 {
				t.Errorf("%d connections, want 300", n)
			}
			for _, c := range clients[:10] {
				c.roundTrip(t, request(1, nil, ReqHeaderSize))
			}
			threads := stop()
			t.Logf("300 %s connections: the process's threads peaked at %d, from %d", tr, threads, base)
			if threads-base > 48 {
				t.Errorf("threads grew by %d with 300 idle connections", threads-base)
			}
		})
	}
}
