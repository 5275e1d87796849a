package libqb

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildQbipcc compiles testdata/qbipcc.c against libqb, skipping visibly
// when the machine lacks libqb's development files or gcc.
func buildQbipcc(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/include/qb/qbipcc.h"); err != nil {
		t.Skipf("libqb's headers are missing (apt-get install libqb-dev): skipping the libqb client")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skipf("gcc is missing: skipping the libqb client")
	}
	bin := filepath.Join(t.TempDir(), "qbipcc")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/qbipcc.c", "-lqb").CombinedOutput(); err != nil {
		t.Fatalf("building qbipcc: %v\n%s", err, out)
	}
	return bin
}

// libqb's own client, on either transport the server chooses: round trips
// of every size up to the connection's, 200 events read through the
// descriptor qb_ipcc_fd_get returns, then a disconnect that leaves
// nothing behind. On SHM that descriptor's peer is this process — what
// Pacemaker checks; on SOCKET it is a datagram socket without a peer.
func TestLibqbClient(t *testing.T) {
	bin := buildQbipcc(t)
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, srv := startServerOn(t, echo{admit: true}, tr, func(*Server) {})
			out, err := exec.Command(bin, service, "check").CombinedOutput()
			if err != nil {
				t.Fatalf("qbipcc: %v\n%s", err, out)
			}
			var pid, uid, gid int
			if _, err := fmt.Sscanf(strings.TrimPrefix(string(out), "OK\n"), "peer %d %d %d", &pid, &uid, &gid); err != nil || !strings.HasPrefix(string(out), "OK\n") {
				t.Fatalf("qbipcc printed %q", out)
			}
			t.Logf("SO_PEERCRED of qb_ipcc_fd_get's descriptor: pid %d uid %d gid %d", pid, uid, gid)
			if tr == TransportSHM && (pid != os.Getpid() || uid != os.Geteuid() || gid != os.Getegid()) {
				t.Errorf("peer pid %d uid %d gid %d, want the server's %d %d %d", pid, uid, gid, os.Getpid(), os.Geteuid(), os.Getegid())
			}
			waitFor(t, "the connection gone", func() bool { return srv.Conns() == 0 })
			assertNoConnectionDirs(t, srv)
		})
	}
}

// A libqb client killed while connected leaves nothing behind: the setup
// socket's EOF tears the connection down, rings and directory included.
func TestLibqbClientKilled(t *testing.T) {
	bin := buildQbipcc(t)
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			service, srv := startServerOn(t, echo{admit: true}, tr, func(*Server) {})
			for range 5 {
				cmd := exec.Command(bin, service, "hold")
				stdout, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 6)
				if n, _ := stdout.Read(b); string(b[:n]) != "ready\n" {
					_ = cmd.Process.Kill()
					t.Fatalf("qbipcc hold: %q", b[:n])
				}
				entries, _ := os.ReadDir(srv.ShmDir)
				if len(entries) != 1 {
					t.Errorf("%d connection directories with one client", len(entries))
				}
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				waitFor(t, "the killed client's connection gone", func() bool { return srv.Conns() == 0 })
				assertNoConnectionDirs(t, srv)
			}
		})
	}
}

func assertNoConnectionDirs(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, err := os.ReadDir(srv.ShmDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %s", srv.ShmDir, entries[0].Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkLibqbClient is libqb's own client (testdata/qbipcc.c, another
// process) making b.N synchronous round trips of 64 bytes, as a libcmap
// get does, against the echo service on SHM. Besides the wall time it
// reports what the server process spent per round trip — CPU time and
// context switches (getrusage: the client is not in it) — which the
// machine's other load disturbs far less than the wall time.
func BenchmarkLibqbClient(b *testing.B) {
	bin := buildQbipcc(b)
	service, _ := startServerOn(b, echo{admit: true}, TransportSHM, func(*Server) {})
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	out, err := exec.Command(bin, service, "bench", strconv.Itoa(b.N)).CombinedOutput()
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if err != nil || !strings.HasPrefix(string(out), "OK") {
		b.Fatalf("qbipcc bench: %v\n%s", err, out)
	}
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "server-cpu-ns/op")
	b.ReportMetric(float64(after.Nvcsw+after.Nivcsw-before.Nvcsw-before.Nivcsw)/float64(b.N), "server-ctxsw/op")
}

// BenchmarkLibqbClients is BenchmarkLibqbClient with several libqb
// clients at once (testdata/qbipcc.c processes, b.N round trips between
// them) on one server, as several libcmap clients share a gateway: the
// case where one connection's look for its client's next request meets
// the others' requests. procs=1 holds the server to one processor, as the
// node's governor holds an idle gateway (node/procgov). Besides ops/s it
// reports the server's CPU and context switches per round trip
// (getrusage) and the clients' CPU per round trip.
func BenchmarkLibqbClients(b *testing.B) {
	bin := buildQbipcc(b)
	for _, procs := range []int{1, runtime.GOMAXPROCS(0)} {
		for _, clients := range []int{3, 8} {
			b.Run(fmt.Sprintf("procs=%d/clients=%d", procs, clients), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				service, _ := startServerOn(b, echo{admit: true}, TransportSHM, func(*Server) {})
				per := max(b.N/clients, 1)
				cmds := make([]*exec.Cmd, clients)
				outs := make([]strings.Builder, clients)
				for i := range cmds {
					cmds[i] = exec.Command(bin, service, "bench", strconv.Itoa(per))
					cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
				}
				var before, after syscall.Rusage
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
				b.ResetTimer()
				start := time.Now()
				for _, cmd := range cmds {
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
				}
				var clientCPU time.Duration
				for i, cmd := range cmds {
					err := cmd.Wait()
					if err != nil || !strings.HasPrefix(outs[i].String(), "OK") {
						b.Fatalf("qbipcc bench: %v\n%s", err, outs[i].String())
					}
					clientCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
				}
				wall := time.Since(start)
				b.StopTimer()
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
				ops := float64(per * clients)
				cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
				b.ReportMetric(ops/wall.Seconds(), "ops/s")
				b.ReportMetric(float64(cpu.Nanoseconds())/ops, "server-cpu-ns/op")
				b.ReportMetric(float64(clientCPU.Nanoseconds())/ops, "clients-cpu-ns/op")
				b.ReportMetric(float64(after.Nvcsw+after.Nivcsw-before.Nvcsw-before.Nivcsw)/ops, "server-ctxsw/op")
			})
		}
	}
}

// A server that looks for requests in the ring (Server.SpinMax) serves
// libqb's client as one that waits on the poller: thousands of round
// trips, then every size, events and a disconnect, nothing left behind.
// A long look window makes the looks find the requests, so that most
// are taken before their byte on the setup socket is read.
func TestLibqbClientSpinning(t *testing.T) {
	bin := buildQbipcc(t)
	for _, spin := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(spin.String(), func(t *testing.T) {
			service, srv := startServerOn(t, echo{admit: true}, TransportSHM, func(s *Server) { s.SpinMax = spin })
			for _, args := range [][]string{{"bench", "20000"}, {"check"}} {
				out, err := exec.Command(bin, append([]string{service}, args...)...).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(out), "OK") {
					t.Fatalf("qbipcc %v: %v\n%s", args, err, out)
				}
				waitFor(t, "the connection gone", func() bool { return srv.Conns() == 0 })
				assertNoConnectionDirs(t, srv)
			}
		})
	}
}

// The spinner's policy: no look before a request came soon after its
// response; looks while they find requests; a miss stops them for 16
// requests, then 32, and a found one halves that again.
func TestSpinner(t *testing.T) {
	s := spinner{max: time.Hour}
	if s.window() != 0 {
		t.Fatal("a look before any request")
	}
	s.responded()
	s.woke()
	if s.window() != time.Hour {
		t.Fatalf("window %v after a prompt request, want %v", s.window(), time.Hour)
	}
	s.polled(true)
	if s.window() != time.Hour {
		t.Fatal("no look after a look that found a request")
	}
	s.polled(false)
	for i := range 16 {
		if s.window() != 0 {
			t.Fatalf("a look %d requests after a miss", i)
		}
		s.responded()
		s.woke()
	}
	if s.window() == 0 {
		t.Fatal("no look 16 requests after a miss")
	}
	s.polled(false)
	if s.backoff != 32 {
		t.Fatalf("second miss in a row: skip %d, want 32", s.backoff)
	}
	s.skip = 0
	s.polled(true)
	if s.backoff != 16 {
		t.Fatalf("a found request after two misses: backoff %d, want 16", s.backoff)
	}
	late := spinner{max: time.Millisecond, last: time.Now().Add(-time.Hour)}
	late.woke()
	if late.window() != 0 {
		t.Fatal("a look after a request that came long after its response")
	}
	if (&spinner{}).window() != 0 {
		t.Fatal("a look with SpinMax 0")
	}
}

// A connection looks only while no other connection of its server was
// served within the look's window: several synchronous clients take turns
// on the CPUs, and a look would spin on one that a client needs.
func TestLooksWaitForOtherConnections(t *testing.T) {
	var srv Server
	if srv.othersBusy(1, time.Hour) {
		t.Fatal("busy before any request was served")
	}
	srv.servedConn.Store(1)
	srv.servedAt.Store(time.Now().UnixNano())
	if srv.othersBusy(1, time.Hour) {
		t.Fatal("a connection's own last response kept it from looking")
	}
	if !srv.othersBusy(2, time.Hour) {
		t.Fatal("another connection looked right after connection 1 was served")
	}
	srv.servedAt.Store(time.Now().Add(-time.Second).UnixNano())
	if srv.othersBusy(2, time.Millisecond) {
		t.Fatal("another connection kept from looking by a response older than the window")
	}
}
