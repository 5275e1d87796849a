// Package benchcompare is `task bench:compare`: a real corosync and corobus
// side by side, each in network namespaces of its own (tests/netcluster),
// on the same configuration, measured with the very same client binaries
// (clients/*.c, built here with gcc against Debian's libcmap and libcpg),
// the runs of the two alternating, one node and three. It prints one
// table with min / median / max per backend.
package benchcompare

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// Environment knobs (not COROBUS_…: corobus reads those as configuration).
const (
	envOn      = "BENCH_COMPARE" // set: run (the test skips otherwise)
	envRuns    = "BENCH_RUNS"    // runs per row and backend (default 5)
	envSecs    = "BENCH_SECS"    // seconds per measurement (default 2)
	envNodes   = "BENCH_NODES"   // topologies, e.g. "1,3" (default)
	envCorobus = "BENCH_COROBUS" // a corobus binary (default: built from the checkout)
	// Only the measurements whose name contains one of these
	// comma-separated words (or "|"-separated, when a word holds a comma:
	// BENCH_ONLY='cmap node key, 8 clients|'): BENCH_ONLY=idle measures
	// idle CPU alone.
	envOnly = "BENCH_ONLY"
	// Extra configuration keys of the corobus nodes only, as
	// key=value[,key=value…]: BENCH_COROBUS_KEYS=ipc.colocate= measures
	// another placement.
	envCorobusKeys = "BENCH_COROBUS_KEYS"
)

// corobusKeys parses BENCH_COROBUS_KEYS.
func corobusKeys() map[string]string {
	keys := map[string]string{}
	for _, kv := range strings.Split(os.Getenv(envCorobusKeys), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			keys[k] = v
		}
	}
	return keys
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// clients are the benchmark programs, built once.
type clients struct{ cmapBench, cpgTput, cpgLat string }

func buildClients(t *testing.T) clients {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skipf("gcc not installed: the clients are C programs against libcmap/libcpg: %v", err)
	}
	for _, h := range []string{"/usr/include/corosync/cmap.h", "/usr/include/corosync/cpg.h"} {
		if _, err := os.Stat(h); err != nil {
			t.Skipf("%s missing (Debian: libcmap-dev, libcpg-dev): %v", h, err)
		}
	}
	dir := t.TempDir()
	build := func(name, lib string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("gcc", "-O2", "-Wall", "-o", out, filepath.Join("clients", name+".c"), "-l"+lib)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", name, err, b)
		}
		return out
	}
	return clients{cmapBench: build("cmap_bench", "cmap"), cpgTput: build("cpg_tput", "cpg"), cpgLat: build("cpg_lat", "cpg")}
}

// errUnavailable is a row whose service the backend does not serve (yet).
type errUnavailable struct{ why string }

func (e errUnavailable) Error() string { return "not available: " + e.why }

var resultRe = regexp.MustCompile(`(\w+)=([0-9.]+)`)

// runClient runs a client in node n and returns the key=value pairs of its
// RESULT lines, prefixed by the word after RESULT ("set.ops_per_s").
func runClient(ctx context.Context, n *netcluster.Node, path string, args ...string) (map[string]float64, error) {
	cmd := n.Command(ctx, path, args...)
	out, err := cmd.Output()
	res := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if why, ok := strings.CutPrefix(line, "UNAVAILABLE "); ok {
			return nil, errUnavailable{why}
		}
		rest, ok := strings.CutPrefix(line, "RESULT ")
		if !ok {
			continue
		}
		word, _, _ := strings.Cut(rest, " ")
		if strings.Contains(word, "=") {
			word = ""
		} else {
			word += "."
		}
		for _, m := range resultRe.FindAllStringSubmatch(rest, -1) {
			v, _ := strconv.ParseFloat(m[2], 64)
			res[word+m[1]] = v
		}
	}
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("%s in node %d: %v: %s", filepath.Base(path), n.ID, err, strings.TrimSpace(stderr))
	}
	return res, nil
}

// row is one line of the table; measure gives its figures for one run on
// one backend (several rows may come from one measurement: see group).
type row struct {
	name string
	// group names the measurement the row's figure comes from, and key
	// the figure in it.
	group, key string
}

// measurement runs once per run and backend and fills several rows.
type measurement struct {
	name string
	run  func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error)
}

// cmapClients runs n cmap_bench clients, spread over the cluster's nodes,
// each on its own key (prefix + index), started together; the figures are
// the sums.
func cmapClients(prefix string, n int) func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
	return func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
		start := time.Now().Add(500 * time.Millisecond).UnixNano()
		sum := map[string]float64{}
		var wg sync.WaitGroup
		// The cluster's CPU over the set phase (the clients' first secs
		// seconds, from start) and the get phase (the rest): CPU per
		// operation, and where it goes.
		var before, after sample
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(time.Unix(0, start)))
			before = sampleCluster(c)
			time.Sleep(time.Until(time.Unix(0, start).Add(time.Duration(secs) * time.Second)))
			after = sampleCluster(c)
		}()
		firstErr := runSpread(ctx, c, n, func(i int) (string, []string) {
			return cl.cmapBench, []string{fmt.Sprintf("%s%d", prefix, i), strconv.Itoa(secs), strconv.FormatInt(start, 10)}
		}, func(res map[string]float64) {
			for k, v := range res {
				sum[k] += v
			}
		})
		wg.Wait()
		// The get phase runs from the end of the set phase to the
		// clients' end (each phase's figure carries a few operations of
		// the other: the phases are told apart by the clock).
		end := sampleCluster(c)
		for phase, window := range map[string][2]sample{"set": {before, after}, "get": {after, end}} {
			ops := sum[phase+".ops_per_s"] * float64(secs)
			if ops <= 0 {
				continue
			}
			addCPUPer(sum, phase+".cpu_us", window[0], window[1], ops)
			addSwitchesPer(sum, phase+".cs", window[0], window[1], ops)
		}
		return sum, firstErr
	}
}

// addCPUPer adds to res, under key, the cluster's CPU µs between two
// samples per unit of work (units of them: operations, messages, MB), and
// under key.<label> each kind of process's share.
func addCPUPer(res map[string]float64, key string, before, after sample, units float64) {
	for label, ticks := range cpuTicks(before, after) {
		us := float64(ticks) / userHZ * 1e6 / units
		res[key] += us
		res[key+"."+label] += us
	}
}

// addSwitchesPer adds to res, under key.<label> vol and key.<label>
// invol, each kind of process's context switches between two samples per
// unit of work: voluntary (it slept: a client waiting for its answer, a
// server with nothing to do) and involuntary (preempted: a server by the
// client it has just woken) apart. On the test machines a switch costs
// more than a set's work (docs/architecture.md, "Where a set's CPU goes
// with eight clients"), so these say where the CPU per set comes from.
// A process born between the samples counts from zero; kinds of process
// with fewer than minSwitches of either kind per unit are left out.
func addSwitchesPer(res map[string]float64, key string, before, after sample, units float64) {
	per := map[string]float64{}
	for pid, a := range after {
		b := before[pid]
		if a.vol >= b.vol && a.involunt >= b.involunt {
			per[a.label+" vol"] += float64(a.vol-b.vol) / units
			per[a.label+" invol"] += float64(a.involunt-b.involunt) / units
		}
	}
	for k, v := range per {
		if v >= minSwitches {
			res[key+"."+k] += v
		}
	}
}

// minSwitches is the fewest context switches per unit of work that
// addSwitchesPer reports: below it, a kind of process that only woke
// for its own timers.
const minSwitches = 0.005

// cpuTicks is the CPU ticks each kind of process spent between two
// samples (a process born between them counts from zero).
func cpuTicks(before, after sample) map[string]uint64 {
	out := map[string]uint64{}
	for pid, a := range after {
		b, ok := before[pid]
		switch {
		case !ok:
			out[a.label] += a.ticks
		case a.ticks >= b.ticks:
			out[a.label] += a.ticks - b.ticks
		}
	}
	return out
}

// cpgTput runs one cpg_tput client on node 1. Besides its figures, the
// cluster's CPU over the client's whole run (join and drain included)
// per MB it delivered: cpu_us_per_mb, and cpu_us_per_mb.<label> per kind
// of process (the client's own CPU is not counted).
func cpgTput(size int) func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
	return func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
		before := sampleCluster(c)
		res, err := runClient(ctx, c.Node(1), cl.cpgTput, strconv.Itoa(size), strconv.Itoa(secs), fmt.Sprintf("benchtput%d", size))
		after := sampleCluster(c)
		if err != nil {
			return res, err
		}
		if mb := res["mb_per_s"] * float64(secs); mb > 0 {
			addCPUPer(res, "cpu_us_per_mb", before, after, mb)
		}
		return res, nil
	}
}

// cpgLat runs cpg_lat on node 1 and, on a cluster, on the last node too:
// corobus's sequencer is its ring's lowest node, whose own messages take
// the shortest path, so node 1 alone would show only its best case
// (corosync's token goes round every node alike). The last node's
// figures are prefixed "other.".
func cpgLat(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
	res, err := runClient(ctx, c.Node(1), cl.cpgLat, "2000", "64", "benchlat")
	if err != nil || len(c.Nodes) < 2 {
		return res, err
	}
	other, err := runClient(ctx, c.Nodes[len(c.Nodes)-1], cl.cpgLat, "2000", "64", "benchlat")
	for k, v := range other {
		res["other."+k] = v
	}
	return res, err
}

// runSpread runs n clients at once, client i on node i mod the cluster's
// size with the command command(i) gives, and hands each one's results to
// take (one at a time). It returns the first client's error, after all
// have ended.
func runSpread(ctx context.Context, c *netcluster.Cluster, n int, command func(i int) (path string, args []string), take func(map[string]float64)) error {
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i := range n {
		node := c.Nodes[i%len(c.Nodes)]
		path, args := command(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := runClient(ctx, node, path, args...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			take(res)
		}()
	}
	wg.Wait()
	return firstErr
}

// cpgLatClients runs n cpg_lat clients together, spread over the
// cluster's nodes, each in a group of its own: n synchronous senders, each
// waiting for its own message's agreed delivery before the next — the shape
// of a write that is ordered by totem and acknowledged when delivered
// (docs/objdb.md, cluster keys). Figures: the aggregate rate (each client's
// messages over its mean round trip, summed), the mean round trip, and the
// CPU per message of every process of the cluster over the whole run.
func cpgLatClients(n int) func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
	return func(ctx context.Context, c *netcluster.Cluster, cl clients, secs int) (map[string]float64, error) {
		const perClient = 5000
		var rate, meanSum float64
		before := sampleCluster(c)
		err := runSpread(ctx, c, n, func(i int) (string, []string) {
			return cl.cpgLat, []string{strconv.Itoa(perClient), "64", fmt.Sprintf("benchlat8c%d", i)}
		}, func(res map[string]float64) {
			if m := res["mean_us"]; m > 0 {
				rate += 1e6 / m
				meanSum += m
			}
		})
		after := sampleCluster(c)
		if err != nil {
			return nil, err
		}
		res := map[string]float64{"msgs_per_s": rate, "mean_us": meanSum / float64(n)}
		addCPUPer(res, "cpu_us", before, after, float64(n*perClient))
		return res, nil
	}
}

var measurements = []measurement{
	{idleGroup, idleCPU},
	{"cmap node key, 1 client", cmapClients("runtime.bench.k", 1)},
	{"cmap node key, 8 clients", cmapClients("runtime.bench.k", 8)},
	{"cmap cluster key, 1 client", cmapClients("test.bench.k", 1)},
	{"cmap cluster key, 8 clients", cmapClients("test.bench.k", 8)},
	{"cpg 64 B", cpgTput(64)},
	{"cpg 1 KiB", cpgTput(1024)},
	{"cpg 64 KiB", cpgTput(65536)},
	{"cpg latency", cpgLat},
	{"cpg latency, 8 clients", cpgLatClients(8)},
}

var rows = []row{
	{"idle CPU, % of a core per node (all its processes, settled)", idleGroup, "idle.pct"},
	{"cmap set, node key (runtime.*), 1 client, ops/s", "cmap node key, 1 client", "set.ops_per_s"},
	{"cmap get, node key, 1 client, ops/s", "cmap node key, 1 client", "get.ops_per_s"},
	{"cmap set, node key, 8 clients, ops/s", "cmap node key, 8 clients", "set.ops_per_s"},
	{"cmap get, node key, 8 clients, ops/s", "cmap node key, 8 clients", "get.ops_per_s"},
	{"cmap set, node key, 1 client, CPU µs per set (every process of the cluster)", "cmap node key, 1 client", "set.cpu_us"},
	{"cmap get, node key, 1 client, CPU µs per get", "cmap node key, 1 client", "get.cpu_us"},
	{"cmap set, node key, 8 clients, CPU µs per set", "cmap node key, 8 clients", "set.cpu_us"},
	{"cmap get, node key, 8 clients, CPU µs per get", "cmap node key, 8 clients", "get.cpu_us"},
	{"cmap set, cluster key (test.*), 1 client, ops/s", "cmap cluster key, 1 client", "set.ops_per_s"},
	{"cmap set, cluster key, 8 clients, ops/s", "cmap cluster key, 8 clients", "set.ops_per_s"},
	{"cmap get, cluster key, 8 clients, ops/s", "cmap cluster key, 8 clients", "get.ops_per_s"},
	{"cmap set, cluster key, 8 clients, CPU µs per set (every process of the cluster)", "cmap cluster key, 8 clients", "set.cpu_us"},
	{"cpg_tput 64 B, msgs/s", "cpg 64 B", "msgs_per_s"},
	{"cpg_tput 1 KiB, msgs/s", "cpg 1 KiB", "msgs_per_s"},
	{"cpg_tput 64 KiB, MB/s", "cpg 64 KiB", "mb_per_s"},
	{"cpg_tput 64 KiB, CPU µs per MB (every process of the cluster, the client's run)", "cpg 64 KiB", "cpu_us_per_mb"},
	{"cpg_lat 64 B p50, µs", "cpg latency", "p50_us"},
	{"cpg_lat 64 B p99, µs", "cpg latency", "p99_us"},
	{"cpg_lat 64 B p50 from the last node, µs", "cpg latency", "other.p50_us"},
	{"cpg_lat 64 B p99 from the last node, µs", "cpg latency", "other.p99_us"},
	{"cpg_lat 64 B, 8 clients at once (a group each), msgs/s", "cpg latency, 8 clients", "msgs_per_s"},
	{"cpg_lat 64 B, 8 clients, mean round trip, µs", "cpg latency, 8 clients", "mean_us"},
	{"cpg_lat 64 B, 8 clients, CPU µs per message (every process of the cluster)", "cpg latency, 8 clients", "cpu_us"},
}

// figures collects, per topology, measurement and backend, the results
// of each run (or why there are none).
type figures struct {
	vals map[string][]map[string]float64 // backend/measurement → runs
	errs map[string]error                // backend/measurement → why not
}

// TestCompare is the side-by-side benchmark. It runs only when asked
// (task bench:compare sets BENCH_COMPARE=1): it takes minutes and wants
// the machine to itself.
func TestCompare(t *testing.T) {
	if os.Getenv(envOn) == "" {
		t.Skipf("the side-by-side benchmark runs on request: `task bench:compare` (or %s=1 go test -v ./tests/benchcompare)", envOn)
	}
	netcluster.RequireBackend(t, netcluster.Corosync)
	cl := buildClients(t)
	runs, secs := envInt(envRuns, 5), envInt(envSecs, 2)
	var topologies []int
	for _, s := range strings.Split(cmpOr(os.Getenv(envNodes), "1,3"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
			topologies = append(topologies, n)
		}
	}
	corobus := os.Getenv(envCorobus)
	if corobus == "" {
		corobus = netcluster.Build(t)
	}
	ctx := context.Background()
	all := map[int]*figures{}
	var mach machine
	for _, nodes := range topologies {
		f := &figures{vals: map[string][]map[string]float64{}, errs: map[string]error{}}
		all[nodes] = f
		backends := map[string]*netcluster.Cluster{
			"corosync": netcluster.Start(t, netcluster.Options{Nodes: nodes, Backend: netcluster.Corosync}),
			"corobus":  netcluster.Start(t, netcluster.Options{Nodes: nodes, Backend: netcluster.Corobus, Binary: corobus, Keys: corobusKeys()}),
		}
		for name, c := range backends {
			for _, n := range c.Nodes {
				cmapReady(t, n, name)
			}
		}
		for run := range runs {
			order := []string{"corosync", "corobus"}
			if run%2 == 1 {
				order = []string{"corobus", "corosync"}
			}
			for _, m := range measurements {
				if !selected(m.name) {
					continue
				}
				for _, b := range order {
					k := b + "/" + m.name
					if _, skip := f.errs[k]; skip {
						continue
					}
					res, err := m.run(ctx, backends[b], cl, secs)
					if err != nil {
						f.errs[k] = err
						t.Logf("%d node(s), %s, %s: %v", nodes, b, m.name, err)
						continue
					}
					f.vals[k] = append(f.vals[k], res)
				}
			}
			var own []int
			for _, c := range backends {
				for _, n := range c.Nodes {
					own = append(own, n.PIDs()...)
				}
			}
			mach.sample(own)
			t.Logf("%d node(s): run %d of %d done", nodes, run+1, runs)
		}
		for _, c := range backends {
			for _, n := range c.Nodes {
				_ = n.Stop()
			}
		}
	}
	what := corobus
	if k := os.Getenv(envCorobusKeys); k != "" {
		what += ", " + k
	}
	fmt.Print(table(topologies, all, runs, secs, what))
	fmt.Print("\n" + mach.String())
	fmt.Print(idleBreakdown(topologies, all))
	fmt.Print(setBreakdown(topologies, all, "cmap node key, 8 clients"))
	fmt.Print(switchBreakdown(topologies, all, "cmap node key, 8 clients"))
	fmt.Print(setBreakdown(topologies, all, "cmap cluster key, 8 clients"))
	fmt.Print(switchBreakdown(topologies, all, "cmap cluster key, 8 clients"))
	fmt.Print(breakdown(topologies, all, "cpg 64 KiB", "cpu_us_per_mb.", minMedMax, func(nodes int, backend string) string {
		return fmt.Sprintf("%d node(s), %s, cpg_tput 64 KiB: CPU µs per MB by process, the cluster's sum", nodes, backend)
	}))
	fmt.Print(breakdown(topologies, all, "cpg latency, 8 clients", "cpu_us.", minMedMax, func(nodes int, backend string) string {
		return fmt.Sprintf("%d node(s), %s, cpg_lat 64 B, 8 clients: CPU µs per message by process, the cluster's sum", nodes, backend)
	}))
}

// selected says whether BENCH_ONLY asks for this measurement.
func selected(name string) bool {
	only := os.Getenv(envOnly)
	if only == "" {
		return true
	}
	// Measurement names hold commas ("cmap node key, 8 clients"), so a
	// list with a "|" is split there alone: BENCH_ONLY='cmap node key, 8
	// clients' would also select every other 8-client measurement.
	sep := ","
	if strings.Contains(only, "|") {
		sep = "|"
	}
	for _, w := range strings.Split(only, sep) {
		if w = strings.TrimSpace(w); w != "" && strings.Contains(name, w) {
			return true
		}
	}
	return false
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// cmapReady waits until a node's cmap answers (corosync and corobus alike
// answer "try again" while they start).
func cmapReady(t *testing.T, n *netcluster.Node, backend string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := n.Run(context.Background(), "corosync-cmapctl", "-g", "totem.cluster_name")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s node %d: cmap does not answer: %v", backend, n.ID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// table renders the figures: one line per row and topology, min / median
// / max of each backend.
func table(topologies []int, all map[int]*figures, runs, secs int, corobus string) string {
	var b strings.Builder
	ver := "?"
	if out, err := exec.Command("corosync", "-v").Output(); err == nil {
		if m := regexp.MustCompile(`version '([^']+)'`).FindSubmatch(out); m != nil {
			ver = string(m[1])
		}
	}
	fmt.Fprintf(&b, "\ncorosync %s and corobus (%s) side by side: same configuration, same client binaries, each in its own namespaces; %d runs each, alternating, %d s per measurement. min / median / max.\n\n", ver, corobus, runs, secs)
	fmt.Fprintln(&b, "| | corosync | corobus |")
	fmt.Fprintln(&b, "|---|---|---|")
	for _, nodes := range topologies {
		f := all[nodes]
		for _, r := range rows {
			if !selected(r.group) {
				continue
			}
			cell := func(backend string) string {
				k := backend + "/" + r.group
				if err, ok := f.errs[k]; ok {
					var u errUnavailable
					if errors.As(err, &u) {
						return "not available"
					}
					return "failed: " + firstLine(err.Error())
				}
				var xs []float64
				for _, res := range f.vals[k] {
					if v, ok := res[r.key]; ok {
						xs = append(xs, v)
					}
				}
				if r.group == idleGroup {
					return minMedMax2(xs)
				}
				return minMedMax(xs)
			}
			label := fmt.Sprintf("%d node", nodes)
			if nodes > 1 {
				label += "s"
			}
			fmt.Fprintf(&b, "| %s: %s | %s | %s |\n", label, r.name, cell("corosync"), cell("corobus"))
		}
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

func minMedMax(xs []float64) string { return minMedMaxAs(xs, num) }

// minMedMaxAs is "min / median / max" of xs, each written by format.
func minMedMaxAs(xs []float64, format func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	slices.Sort(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return fmt.Sprintf("%s / %s / %s", format(xs[0]), format(med), format(xs[len(xs)-1]))
}

// num prints a figure with thousands separated by a thin space, one
// decimal below 100.
func num(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ' ')
		}
		out = append(out, s[i])
	}
	return string(out)
}
