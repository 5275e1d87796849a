package cpgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/services/cpg/vscheck"
	"github.com/corobus/corobus/tests/netcluster"
)

// libcpg's API end to end (cpgfeatures): model, context, membership,
// iteration, joins and leaves, 1 MiB and 16 MiB messages interleaved with
// another member's small ones, a zero-copy buffer — on corobus, with the
// cpg service inside the gateway (the default) and in its own process, over libqb's SHM
// (the default) and SOCKET transports, and on a real corosync, which the
// program was first checked against.
func TestFeatures(t *testing.T) {
	prog := BuildC(t, "cpgfeatures")
	for _, c := range []struct {
		name string
		opts netcluster.Options
	}{
		{"corosync", netcluster.Options{Backend: netcluster.Corosync}},
		{"corobus", netcluster.Options{}},
		{"corobus, cpg in its own process", netcluster.Options{Keys: map[string]string{"ipc.colocate": "cmap"}}},
		{"corobus socket", netcluster.Options{Keys: map[string]string{"ipc.transport": "socket"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			parallelUnlessCorosync(t, c.opts.Backend)
			c.opts.Nodes = 1
			cl := netcluster.Start(t, c.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := cl.Node(1).Run(ctx, prog, "features")
			if err != nil || !strings.Contains(out, "PASSED") {
				t.Fatalf("cpgfeatures: %v\n%s\n--- node log:\n%s", err, out, cl.Node(1).LogTail(40))
			}
			t.Logf("cpgfeatures:\n%s", out)
			if c.opts.Backend != netcluster.Corobus {
				return
			}
			// The counters, as corosync-cmapctl shows them.
			deadline := time.Now().Add(time.Minute)
			for {
				o, _ := cl.Node(1).Run(ctx, "corosync-cmapctl", "runtime.services.cpg.")
				if strings.Contains(o, "runtime.services.cpg.service_id (u16) = 2") && counter(o, "runtime.services.cpg.3.tx") > 0 &&
					counter(o, "runtime.services.cpg.6.rx") >= 17 && counter(o, "runtime.services.cpg.deliveries") > 0 {
					t.Logf("counters:\n%s", o)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("runtime.services.cpg.* after cpgfeatures:\n%s", o)
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}

// Three nodes, two libcpg members on each, all multicasting numbered
// messages; one member leaves early (cpg_finalize: PROCDOWN), and node 3
// is killed while they send. Every member's log must show total order,
// virtual synchrony, no duplicates and self-delivery in send order
// (vscheck), and the survivors must see node 3's members go with
// NODEDOWN. The same program and checker run against three real corosync
// daemons first: what corosync does passes the checker.
func TestVirtualSynchrony(t *testing.T) {
	prog := BuildC(t, "cpgcheck")
	for _, c := range []struct {
		name string
		opts netcluster.Options
	}{
		{"corosync", netcluster.Options{Backend: netcluster.Corosync}},
		{"corobus", netcluster.Options{Keys: map[string]string{}}},
		{"corobus, cpg in its own process", netcluster.Options{Keys: map[string]string{"ipc.colocate": "cmap"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			parallelUnlessCorosync(t, c.opts.Backend)
			c.opts.Nodes = 3
			if os.Getenv("CPGTEST_KEEP") != "" && c.opts.Backend == netcluster.Corobus {
				c.opts.Keys["logging.debug"] = "on"
			}
			cl := netcluster.Start(t, c.opts)
			runVS(t, cl, prog)
		})
	}
}

func runVS(t *testing.T, cl *netcluster.Cluster, prog string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	type proc struct {
		name string
		cmd  *exec.Cmd
		out  *bytes.Buffer
		done chan error
	}
	var procs []*proc
	const count = 3000
	for id := 1; id <= 3; id++ {
		for k := 1; k <= 2; k++ {
			p := &proc{name: fmt.Sprintf("n%dp%d", id, k), out: &bytes.Buffer{}, done: make(chan error, 1)}
			args := []string{"-g", "vs", "-n", fmt.Sprint(count), "-i", "800", "-s", "200", "-w", "6", "-l", "3",
				"-o", filepath.Join(dir, p.name+".log")}
			if id == 1 && k == 2 {
				args = append(args, "-e", fmt.Sprint(count/3)) // leaves early
			}
			p.cmd = cl.Node(id).Command(ctx, prog, args...)
			p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
			if err := p.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { p.done <- p.cmd.Wait() }()
			procs = append(procs, p)
		}
	}
	readLog := func(p *proc) string { b, _ := os.ReadFile(filepath.Join(dir, p.name+".log")); return string(b) }
	// Everyone joined and started sending; then node 3 goes.
	deadline := time.Now().Add(2 * time.Minute)
	for _, p := range procs {
		for !strings.Contains(readLog(p), "\nS 200\n") {
			if time.Now().After(deadline) {
				var tails []string
				for _, n := range cl.Nodes {
					tails = append(tails, fmt.Sprintf("--- node %d:\n%s", n.ID, n.LogTail(60)))
					if d := os.Getenv("CPGTEST_KEEP"); d != "" {
						// A directory per subtest: they run in parallel.
						d = filepath.Join(d, strings.NewReplacer("/", "_", " ", "_", ",", "").Replace(t.Name()))
						_ = os.MkdirAll(d, 0o755)
						_ = os.WriteFile(filepath.Join(d, fmt.Sprintf("node%d.log", n.ID)), []byte(n.LogText()), 0o644)
						for _, q := range procs {
							_ = os.WriteFile(filepath.Join(d, q.name+".log"), []byte(readLog(q)), 0o644)
						}
					}
				}
				t.Fatalf("%s did not start sending:\n%s\n%s\n%s", p.name, readLog(p), p.out, strings.Join(tails, "\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The whole node at once: frozen first, so that no member of it dies
	// while its engine still runs (its engine would then tell the others
	// PROCDOWN, rightly, where this test wants the node's NODEDOWN).
	cl.Node(3).Freeze()
	if err := cl.Node(3).Kill(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs[:4] {
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s: %v\n%s", p.name, err, p.out)
			}
		case <-ctx.Done():
			t.Fatalf("%s did not finish:\n%s", p.name, lastLines(readLog(p), 20))
		}
	}
	var logs []*vscheck.Log
	for _, p := range procs {
		l, err := vscheck.Parse(p.name, strings.NewReader(readLog(p)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(p.name, "n3") {
			// Killed with its node: its engine may have gone a moment
			// before it did, and it said so.
			l.Errors = nil
		}
		logs = append(logs, l)
	}
	if err := vscheck.Check(logs); err != nil {
		t.Fatalf("the members' logs break CPG's guarantees:\n%v", err)
	}
	// What the survivors must have seen: node 3's members down, and the
	// early leaver's PROCDOWN.
	n3 := []string{logs[4].Proc.String(), logs[5].Proc.String()}
	early := logs[1].Proc.String()
	for _, l := range []*vscheck.Log{logs[0], logs[2], logs[3]} {
		text := readLog(procs[indexOf(logs, l)])
		for _, p := range n3 {
			if !strings.Contains(text, p+"/3") {
				t.Errorf("%s never saw %s leave with NODEDOWN", l.Name, p)
			}
		}
		if !strings.Contains(text, early+"/5") {
			t.Errorf("%s never saw %s leave with PROCDOWN", l.Name, early)
		}
		if !l.Clean {
			t.Errorf("%s did not end cleanly", l.Name)
		}
	}
	var sent, delivered int
	for _, l := range logs {
		sent += l.Sent
		for _, e := range l.Events {
			if e.Msg != nil {
				delivered++
			}
		}
	}
	t.Logf("%d messages sent, %d deliveries checked", sent, delivered)
}

// parallelUnlessCorosync runs a corobus subtest in parallel with the
// test's other corobus subtests (once the test's loop has run the
// corosync one): each cluster is netcluster's, in namespaces of its own,
// and most of a subtest is waiting for a cluster to form or for members
// sending at a set pace. A real corosync stays alone: it runs SCHED_RR 99
// and would starve the others.
func parallelUnlessCorosync(t *testing.T, b netcluster.Backend) {
	if b != netcluster.Corosync {
		t.Parallel()
	}
}

// counter reads a u64 key's value from corosync-cmapctl's output.
func counter(out, key string) uint64 {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, key+" (u64) = ") {
			var v uint64
			fmt.Sscan(strings.TrimPrefix(l, key+" (u64) = "), &v)
			return v
		}
	}
	return 0
}

func indexOf(logs []*vscheck.Log, l *vscheck.Log) int {
	for i, x := range logs {
		if x == l {
			return i
		}
	}
	return -1
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// corosync-cpgtool's output on corobus is a real corosync's, with the same
// members in the same groups — one node, then three nodes with groups on
// each — for every flag (pids replaced by the member's number); and
// `corobus cpg` prints exactly what corosync-cpgtool prints on corobus.
func TestCpgtoolMatchesCorosync(t *testing.T) {
	if _, err := exec.LookPath("corosync-cpgtool"); err != nil {
		t.Skip("corosync-cpgtool is not installed (apt-get install corosync): skipping")
	}
	prog := BuildC(t, "cpgcheck")
	flags := [][]string{nil, {"-n"}, {"-d", ","}, {"-d", ";", "-n"}, {"-e"}}
	for _, c := range []struct {
		name   string
		nodes  int
		groups map[int][]string // by node, one member per entry
	}{
		{"one node", 1, map[int][]string{1: {"alpha", "alpha", "beta x", "odd\\name\x01", "caf\xc3\xa9"}}},
		{"three nodes", 3, map[int][]string{1: {"alpha", "alpha"}, 2: {"alpha", "beta"}, 3: {"gamma", "alpha", "beta"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := map[netcluster.Backend]map[string]string{}
			for _, b := range []netcluster.Backend{netcluster.Corosync, netcluster.Corobus} {
				out[b] = cpgtoolOutputs(t, b, c.nodes, c.groups, prog, flags)
			}
			for k, want := range out[netcluster.Corosync] {
				if got := out[netcluster.Corobus][k]; got != want {
					t.Errorf("%s on corobus:\n%s\ncorosync:\n%s", k, got, want)
				}
			}
			t.Logf("corobus, node 1, corosync-cpgtool:\n%s", out[netcluster.Corobus]["node 1: corosync-cpgtool"])
		})
	}
}

// cpgtoolOutputs starts a cluster, puts a member in each group listed,
// and runs corosync-cpgtool with each set of flags on every node (and
// `corobus cpg` on corobus, which must print the same).
func cpgtoolOutputs(t *testing.T, b netcluster.Backend, nodes int, groups map[int][]string, prog string, flags [][]string) map[string]string {
	t.Helper()
	cl := netcluster.Start(t, netcluster.Options{Nodes: nodes, Backend: b})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var pids []int
	want := 0
	for id := 1; id <= nodes; id++ {
		for _, g := range groups[id] {
			cmd := cl.Node(id).Command(ctx, prog, "-g", g, "-n", "0", "-l", "600", "-o", os.DevNull)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			pids = append(pids, cmd.Process.Pid)
			want++
		}
	}
	// Every member in, seen from every node.
	for id := 1; id <= nodes; id++ {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			o, _ := cl.Node(id).Run(ctx, "corosync-cpgtool", "-d", ",")
			if strings.Count(o, "\n")-1 == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s node %d lists:\n%s", b, id, o)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Pids differ between runs and in digits: each becomes P<k>. Where
	// cpgtool pads a column, the padding and the pid together keep their
	// width (so alignment is still compared); with -d there is no padding
	// and the pid is replaced alone.
	norm := func(s string) string {
		for k, p := range pids {
			tag := fmt.Sprintf("P%d", k+1)
			re := regexp.MustCompile(` *\b` + fmt.Sprint(p) + `\b`)
			s = re.ReplaceAllStringFunc(s, func(m string) string {
				if m[0] == ' ' {
					return fmt.Sprintf("%*s", len(m), tag)
				}
				return tag
			})
		}
		return s
	}
	res := map[string]string{}
	for id := 1; id <= nodes; id++ {
		for _, f := range flags {
			o, err := cl.Node(id).Run(ctx, "corosync-cpgtool", f...)
			if err != nil {
				t.Fatalf("%s node %d: %v", b, id, err)
			}
			key := fmt.Sprintf("node %d: corosync-cpgtool %s", id, strings.Join(f, " "))
			res[strings.TrimSpace(key)] = norm(o)
			if b == netcluster.Corobus {
				v, err := cl.Node(id).Corobus(ctx, "cpg", f...)
				if err != nil {
					t.Fatalf("node %d: corobus cpg: %v", id, err)
				}
				if v != o {
					t.Errorf("node %d: `corobus cpg %s` printed\n%s\ncorosync-cpgtool printed\n%s", id, strings.Join(f, " "), v, o)
				}
			}
		}
	}
	return res
}

// Go members (package cpg, through examples/cpgmember) and libcpg members
// (cpgcheck) in one group on three nodes multicast together: vscheck
// judges their logs as one group's — the same messages in the same order.
func TestGoAndLibcpgMembers(t *testing.T) {
	t.Parallel() // corobus only: after the serial tests, beside TestLeaveReasons
	prog := BuildC(t, "cpgcheck")
	member := BuildGo(t, "./examples/cpgmember")
	cl := netcluster.Start(t, netcluster.Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	type proc struct {
		name string
		cmd  *exec.Cmd
		out  bytes.Buffer
	}
	var procs []*proc
	common := []string{"-g", "mixed", "-n", "1500", "-s", "100", "-w", "5"}
	for _, p := range []struct {
		name     string
		node     int
		goMember bool
	}{{"c1", 1, false}, {"go1", 1, true}, {"c2", 2, false}, {"go2", 2, true}, {"c3", 3, false}} {
		pr := &proc{name: p.name}
		log := filepath.Join(dir, p.name+".log")
		if p.goMember {
			args := append([]string{"-c", cl.Node(p.node).ConfPath, "-i", "700us", "-l", "3s", "-o", log}, common...)
			pr.cmd = cl.Node(p.node).Command(ctx, member, args...)
		} else {
			args := append([]string{"-i", "700", "-l", "3", "-o", log}, common...)
			pr.cmd = cl.Node(p.node).Command(ctx, prog, args...)
		}
		pr.cmd.Stdout, pr.cmd.Stderr = &pr.out, &pr.out
		if err := pr.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, pr)
	}
	var logs []*vscheck.Log
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, p.name+".log"))
			t.Fatalf("%s: %v\n%s\n%s", p.name, err, p.out.String(), lastLines(string(b), 20))
		}
		f, err := os.Open(filepath.Join(dir, p.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := vscheck.Parse(p.name, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !l.Clean {
			t.Errorf("%s did not end cleanly", p.name)
		}
		logs = append(logs, l)
	}
	if err := vscheck.Check(logs); err != nil {
		t.Fatalf("Go and libcpg members disagree:\n%v", err)
	}
	// From the last join on, every member's deliveries are one sequence.
	seq := func(l *vscheck.Log) []vscheck.Msg {
		var out []vscheck.Msg
		for _, e := range l.Events {
			if e.Msg != nil {
				out = append(out, *e.Msg)
			}
		}
		return out
	}
	ref := seq(logs[0])
	for _, l := range logs[1:] {
		s := seq(l)
		n := min(len(s), len(ref))
		if !slices.Equal(s[len(s)-n:], ref[len(ref)-n:]) {
			t.Errorf("%s's deliveries differ from %s's", l.Name, logs[0].Name)
		}
	}
	t.Logf("%d members, %d deliveries each", len(logs), len(ref))
}
