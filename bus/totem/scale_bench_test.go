package totem_test

import (
	"context"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem"
)

// BenchmarkScale measures a cluster of N nodes in one process, each a real
// embedded bus (bus.StartServer: what `corobus bus` runs, JetStream on,
// explicit routes to every node of the nodelist) with a real totem node on
// it (corosync's default timeouts: token 1 s, join 50 ms, consensus 1.2 s).
// Per node count it reports:
//
//   - form_s: from starting every node at once to every node having a
//     route to every other and one totem view of all N (routes_s and
//     view_s are the two parts' own times from the same start; heard_s,
//     from the same start, when every node had heard every other's
//     heartbeat: between the routes and the view, the heartbeats'
//     crossing of the last routes, then what the view agreement took);
//   - meta_s: from the same start to the first JetStream meta leader
//     (0 if none within 30 s): not part of form_s, but the same CPUs;
//   - form_cpu_s: the CPU time the process spent forming, read when
//     formed (not after the wait for the meta leader): the work,
//     whatever share of a loaded machine it got (form_s is wall time);
//   - views: regular configurations node 1 installed while forming (1 is
//     one view, no merges);
//   - msgs/s, p50_us, p99_us: ordered multicast of 64-byte messages by a
//     Client on node 2 (not the sequencer), as BenchmarkMcast measures it;
//   - viewchange_s: from killing node N (its totem and its server, no lame
//     duck) to every survivor having installed the view of the other N-1.
//
// Each run of the function forms a cluster of its own: run it with a fixed
// -benchtime (e.g. -benchtime=5000x) so that it forms few; -v logs the
// formation's progress four times a second.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{3, 8, 16, 32} {
		b.Run("nodes="+strconv.Itoa(n), func(b *testing.B) { benchScale(b, n) })
	}
}

type scaleNode struct {
	srv    *bus.Server
	nc     *nats.Conn
	tn     *totem.Node
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *scaleNode) kill() {
	s.cancel()
	<-s.done
	s.nc.Close()
	s.srv.Shutdown(false)
}

func benchScale(b *testing.B, n int) {
	b.StopTimer()
	subj, err := bus.NewSubjects("corobus.scale")
	if err != nil {
		b.Fatal(err)
	}
	ports := bustest.FreePorts(b, 2*n)
	var routes []string
	var expected []uint32
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[n+i]))
		expected = append(expected, uint32(i+1))
	}
	// The stores first: cleanups run last-registered first, and a store
	// must outlive its server.
	var dirs []string
	for range n {
		dirs = append(dirs, b.TempDir())
	}
	nodes := make([]*scaleNode, n)
	b.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range nodes {
			if s != nil {
				wg.Go(s.kill)
			}
		}
		wg.Wait()
	})
	// SCALE_FORM_PROFILE=prefix: a CPU profile of the formation alone
	// (from the start to formed, as form_cpu_s counts), in prefix.<n>.
	var profStop func()
	if prefix := os.Getenv("SCALE_FORM_PROFILE"); prefix != "" {
		f, err := os.Create(prefix + "." + strconv.Itoa(n))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		profStop = func() { pprof.StopCPUProfile(); _ = f.Close() }
		defer func() {
			if profStop != nil { // not formed
				profStop()
			}
		}()
	}
	// Every node starts at once, as a cluster booted together: its server,
	// then (as the bus process's totem hook does) its totem.
	start, cpu0 := time.Now(), cpuTime()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			id := uint32(i + 1)
			sc := bus.ServerConfig{
				NodeID: id, ClusterName: "scale", Listen: "127.0.0.1", ClientPort: ports[i],
				RouteHost: "127.0.0.1", RoutePort: ports[n+i], Routes: routes,
				StoreDir: dirs[i], LameDuck: time.Second, Logger: slog.New(slog.DiscardHandler),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv, err := bus.StartServer(ctx, sc)
			if err != nil {
				errs <- err
				return
			}
			// A loaded machine may miss the server's auth timeout on
			// the in-process pipe: try again, as the bus's hooks would
			// be restarted.
			var nc *nats.Conn
			for range 5 {
				if nc, err = srv.Connect("totem", nats.NoEcho()); err == nil {
					break
				}
			}
			if err != nil {
				srv.Shutdown(false)
				errs <- err
				return
			}
			cfg := totem.DefaultConfig(id, subj)
			cfg.Expected = expected
			cfg.Addr = "127.0.0.1"
			tn, err := totem.New(nc, cfg, totem.Callbacks{})
			if err != nil {
				nc.Close()
				srv.Shutdown(false)
				errs <- err
				return
			}
			tctx, tcancel := context.WithCancel(context.Background())
			s := &scaleNode{srv: srv, nc: nc, tn: tn, cancel: tcancel, done: make(chan struct{})}
			go func() { defer close(s.done); _ = tn.Run(tctx) }()
			nodes[i] = s
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if testing.Verbose() {
		b.Logf("%.2fs every server started", time.Since(start).Seconds())
	}
	var routesAt, heardAt, viewAt, metaAt, formCPU time.Duration
	deadline := start.Add(60 * time.Second)
	lastLog := start
	// The meta leader is not part of the formation (totem does not use
	// JetStream; the object database does), but it costs the same CPUs
	// at the same time: waited for, at most 30 s, and reported.
	for routesAt == 0 || viewAt == 0 || (metaAt == 0 && time.Since(start) < 30*time.Second) {
		if time.Now().After(deadline) {
			b.Fatalf("%d nodes not formed after 60 s (routes %s, view %s)", n, routesAt, viewAt)
		}
		time.Sleep(5 * time.Millisecond)
		if testing.Verbose() && time.Since(lastLog) > 250*time.Millisecond {
			lastLog = time.Now()
			pairs, full, op := 0, 0, 0
			for _, s := range nodes {
				r := s.srv.NATS().NumRemotes()
				pairs += r
				if r == n-1 {
					full++
				}
				if st := s.tn.Status(); st.State == "operational" && len(st.Members) == n {
					op++
				}
			}
			b.Logf("%.2fs routes %d/%d, %d nodes full; %d nodes in a view of all; meta leader %v", time.Since(start).Seconds(), pairs, n*(n-1), full, op, metaAt != 0)
		}
		if routesAt == 0 && slices.IndexFunc(nodes, func(s *scaleNode) bool { return s.srv.NATS().NumRemotes() != n-1 }) < 0 {
			routesAt = time.Since(start)
		}
		if heardAt == 0 && !slices.ContainsFunc(nodes, func(s *scaleNode) bool { return len(s.tn.Status().Reachable) != n }) {
			heardAt = time.Since(start)
		}
		if viewAt == 0 && oneView(nodes, n) {
			viewAt = time.Since(start)
			if heardAt == 0 {
				heardAt = viewAt
			}
		}
		if formCPU == 0 && routesAt != 0 && viewAt != 0 {
			formCPU = cpuTime() - cpu0
			if profStop != nil {
				profStop()
				profStop = nil
			}
		}
		if metaAt == 0 && slices.ContainsFunc(nodes, func(s *scaleNode) bool { return s.srv.NATS().JetStreamIsLeader() }) {
			metaAt = time.Since(start)
		}
	}
	if testing.Verbose() {
		b.Logf("all routes up %.2fs, JetStream meta leader %.2fs, one totem view of all %.2fs", routesAt.Seconds(), metaAt.Seconds(), viewAt.Seconds())
	}
	views := nodes[0].tn.Status().Views

	// Multicast on the formed cluster, from node 2 through its own totem
	// (node 1 sequences). Until 30 Nov the client submitted to node 1's
	// totem wherever it was connected: the figures were the sequencer's.
	sender, senderID := nodes[1], uint32(2)
	if n < 2 {
		sender, senderID = nodes[0], 1
	}
	nc, err := sender.srv.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	benchMcast(b, nc, subj, senderID, 64, "bench", false)

	// Kill the last node; the others must install the view without it.
	b.StopTimer()
	last := nodes[n-1]
	nodes[n-1] = nil
	killAt := time.Now()
	last.kill()
	deadline = killAt.Add(30 * time.Second)
	for !oneView(nodes, n-1) {
		if time.Now().After(deadline) {
			b.Fatalf("survivors did not install a view of %d after 30 s", n-1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	change := time.Since(killAt)

	b.ReportMetric(max(routesAt, viewAt).Seconds(), "form_s")
	b.ReportMetric(routesAt.Seconds(), "routes_s")
	b.ReportMetric(viewAt.Seconds(), "view_s")
	b.ReportMetric(heardAt.Seconds(), "heard_s")
	b.ReportMetric(metaAt.Seconds(), "meta_s") // 0: no leader within 30 s
	b.ReportMetric(float64(views), "views")
	b.ReportMetric(formCPU.Seconds(), "form_cpu_s")
	b.ReportMetric(change.Seconds(), "viewchange_s")
}

// oneView reports whether every running node is operational in one ring
// of want members.
func oneView(nodes []*scaleNode, want int) bool {
	var ring totem.RingID
	for _, s := range nodes {
		if s == nil {
			continue
		}
		st := s.tn.Status()
		if st.State != "operational" || len(st.Members) != want {
			return false
		}
		if ring.IsZero() {
			ring = st.Ring
		} else if st.Ring != ring {
			return false
		}
	}
	return true
}

// cpuTime is the CPU time (user and system) this process has used: on a
// shared machine, the work a phase did, whatever the others let it have.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
