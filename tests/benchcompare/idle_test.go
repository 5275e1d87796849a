package benchcompare

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// Idle CPU: what a settled node costs while no client does anything, as
// the sum of utime+stime (/proc/<pid>/stat) of every process in the
// cluster's node namespaces over a window, in percent of one core per
// node. Both engines are measured by the same code on the same kind of
// cluster; the rows alternate with everything else.
const (
	envIdleSecs   = "BENCH_IDLE_SECS"   // length of the idle window (default 20 s)
	envIdleSettle = "BENCH_IDLE_SETTLE" // quiet time before it (default 5 s): the previous row's work drains
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go runs on.
const userHZ = 100

// procStat reads /proc/<pid>/stat: the process's comm and its fields
// from field 3 (state) on — comm is in parentheses and may hold spaces,
// so they are the ones after its last ')'. ok is false for a process gone
// meanwhile.
func procStat(pid int) (comm string, fields []string, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", nil, false
	}
	open, closing := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || closing < open {
		return "", nil, false
	}
	return string(stat[open+1 : closing]), strings.Fields(string(stat[closing+1:])), true
}

// statField is the index in procStat's fields of /proc/<pid>/stat's
// field n (proc(5) counts from 1; the fields start at 3).
func statField(n int) int { return n - 3 }

// procTicks reads a process's utime+stime and names it: corosync, or
// "corobus <layer>" from its command line (`corobus service cmap`, …).
func procTicks(pid int, engine string) (ticks uint64, label string, ok bool) {
	comm, f, ok := procStat(pid)
	// utime and stime are fields 14 and 15.
	if !ok || len(f) <= statField(15) {
		return 0, "", false
	}
	u, err1 := strconv.ParseUint(f[statField(14)], 10, 64)
	s, err2 := strconv.ParseUint(f[statField(15)], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, "", false
	}
	return u + s, procLabel(pid, comm, engine), true
}

// procSwitches sums the voluntary and involuntary context switches of
// every thread of a process (/proc/<pid>/status counts its main thread
// alone).
func procSwitches(pid int) (vol, involunt uint64) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue // a thread gone meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			switch name {
			case "voluntary_ctxt_switches":
				vol += n
			case "nonvoluntary_ctxt_switches":
				involunt += n
			}
		}
	}
	return vol, involunt
}

// procLabel is the executable's base name or, for the corobus binary
// (engine, whatever its file is called), "corobus" with its verb and
// service name: the per-process breakdown of the idle rows.
func procLabel(pid int, comm, engine string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return comm
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	base := args[0][strings.LastIndexByte(args[0], '/')+1:]
	if engine == "" || args[0] != engine || len(args) < 2 {
		return base
	}
	label := "corobus " + args[1]
	if args[1] == "service" && len(args) > 2 {
		label += " " + args[2]
	}
	return label
}

// idleGroup is the idle measurement's name.
const idleGroup = "idle"

// sample is every process of every node of the cluster: pid →
// its CPU ticks, label and context switches.
type sample map[int]procSample

// procSample is one process at one instant: its utime+stime, its label,
// and the context switches of all its threads (voluntary: it slept;
// involuntary: it was preempted) — on a machine whose every switch is
// dear, where a request's CPU goes.
type procSample struct {
	ticks         uint64
	label         string
	vol, involunt uint64
}

func sampleCluster(c *netcluster.Cluster) sample {
	s := sample{}
	var engine string // corobus's executable; corosync is labelled by name
	if c.Options().Backend == netcluster.Corobus {
		engine = c.Options().Binary
	}
	for _, n := range c.Nodes {
		for _, pid := range n.PIDs() {
			if t, l, ok := procTicks(pid, engine); ok {
				vol, inv := procSwitches(pid)
				s[pid] = procSample{ticks: t, label: l, vol: vol, involunt: inv}
			}
		}
	}
	return s
}

// idleCPU waits out the settle time, then measures the cluster's CPU over
// the window. Figures: idle.pct (percent of one core, per node: the
// cluster's sum divided by its nodes) and idle.proc.<label> (the same per
// kind of process, per node). A process born during the window counts
// from zero; one that died in it is lost (none should, idle).
func idleCPU(ctx context.Context, c *netcluster.Cluster, _ clients, _ int) (map[string]float64, error) {
	settle := time.Duration(envInt(envIdleSettle, 5)) * time.Second
	window := time.Duration(envInt(envIdleSecs, 20)) * time.Second
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	before := sampleCluster(c)
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after := sampleCluster(c)
	elapsed := time.Since(t0).Seconds()
	nodes := float64(len(c.Nodes))
	res := map[string]float64{"idle.pct": 0}
	for pid, a := range after {
		b, ok := before[pid]
		var d uint64
		switch {
		case !ok:
			d = a.ticks
		case a.ticks >= b.ticks:
			d = a.ticks - b.ticks
		}
		pct := float64(d) / userHZ / elapsed * 100 / nodes
		res["idle.pct"] += pct
		res["idle.proc."+a.label] += pct
	}
	return res, nil
}

// idleBreakdown renders the median per-process idle figures of each
// backend and topology: where a node's idle CPU goes.
func idleBreakdown(topologies []int, all map[int]*figures) string {
	return breakdown(topologies, all, idleGroup, "idle.proc.", minMedMax2, func(nodes int, backend string) string {
		return fmt.Sprintf("%d node(s), %s, idle %% of a core per node by process", nodes, backend)
	})
}

// setBreakdown renders the median CPU per set of each kind of process
// over a cmap measurement's set phase.
func setBreakdown(topologies []int, all map[int]*figures, group string) string {
	return breakdown(topologies, all, group, "set.cpu_us.", minMedMax, func(nodes int, backend string) string {
		return fmt.Sprintf("%d node(s), %s, %s: CPU µs per set by process, the cluster's sum", nodes, backend, group)
	})
}

// switchBreakdown renders the context switches per set of each kind of
// process over a cmap measurement's set phase (addSwitchesPer).
func switchBreakdown(topologies []int, all map[int]*figures, group string) string {
	return breakdown(topologies, all, group, "set.cs.", minMedMax2, func(nodes int, backend string) string {
		return fmt.Sprintf("%d node(s), %s, %s: context switches per set by process, voluntary and involuntary, the cluster's sum", nodes, backend, group)
	})
}

// breakdown renders, per topology and backend, one line of a group's
// per-process figures (the keys under prefix), each as min / median /
// max over the runs, after what title says the line is.
func breakdown(topologies []int, all map[int]*figures, group, prefix string, format func([]float64) string, title func(nodes int, backend string) string) string {
	var b strings.Builder
	for _, nodes := range topologies {
		f := all[nodes]
		for _, backend := range []string{"corosync", "corobus"} {
			runs := f.vals[backend+"/"+group]
			if len(runs) == 0 {
				continue
			}
			labels := map[string]bool{}
			for _, r := range runs {
				for k := range r {
					if l, ok := strings.CutPrefix(k, prefix); ok {
						labels[l] = true
					}
				}
			}
			var parts []string
			for _, l := range sortedKeys(labels) {
				var xs []float64
				for _, r := range runs {
					xs = append(xs, r[prefix+l])
				}
				parts = append(parts, fmt.Sprintf("%s %s", l, format(xs)))
			}
			fmt.Fprintf(&b, "- %s (min / median / max): %s\n", title(nodes, backend), strings.Join(parts, "; "))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "\n" + b.String()
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// minMedMax2 is minMedMax with two decimals: idle figures are small.
func minMedMax2(xs []float64) string {
	return minMedMaxAs(xs, func(x float64) string { return fmt.Sprintf("%.2f", x) })
}
