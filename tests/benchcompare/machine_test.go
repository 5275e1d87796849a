package benchcompare

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// machine is what the side-by-side knows of the machine it ran on beside
// its own clusters: the load average at each run's end, and the real-time
// processes of others it saw. corosync runs SCHED_RR 99, and the kernel
// lets real-time tasks have 95 % of every CPU: while another benchmark's
// corosync is busy, every normal task here — corobus, the clients, this
// test — waits, for seconds at a time (docs/architecture.md, Departures).
// Figures taken then are not corobus's, and the table says so.
type machine struct {
	loads   []float64
	foreign map[string]bool // "pid comm" of real-time processes not ours
}

// sample records the load average and the foreign real-time processes
// now (at a run's end: one that ran only within a run is not seen); own
// are the processes of the clusters this test started.
func (m *machine) sample(own []int) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				m.loads = append(m.loads, v)
			}
		}
	}
	if m.foreign == nil {
		m.foreign = map[string]bool{}
	}
	for _, p := range realtimeProcesses() {
		if !slices.Contains(own, p.pid) {
			m.foreign[fmt.Sprintf("%d %s", p.pid, p.comm)] = true
		}
	}
}

// String is the table's note on the machine.
func (m *machine) String() string {
	if len(m.loads) == 0 {
		return ""
	}
	s := fmt.Sprintf("Load average (1 min) at the end of each run: %.1f–%.1f.", slices.Min(m.loads), slices.Max(m.loads))
	if len(m.foreign) == 0 {
		return s + " No other real-time process was running.\n"
	}
	names := make([]string, 0, len(m.foreign))
	for k := range m.foreign {
		names = append(names, k)
	}
	slices.Sort(names)
	return s + fmt.Sprintf(" Real-time processes not this benchmark's were running at a run's end (%s): while they are busy they take up to 95 %% of every CPU from everything else, corobus and the clients included, so these figures are not comparable with a quiet machine's.\n", strings.Join(names, ", "))
}

type rtProcess struct {
	pid  int
	comm string
}

// realtimeProcesses lists the processes whose scheduling policy is
// SCHED_FIFO or SCHED_RR (field 41 of /proc/<pid>/stat).
func realtimeProcesses() []rtProcess {
	entries, _ := os.ReadDir("/proc")
	var out []rtProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, f, ok := procStat(pid)
		if !ok || len(f) <= statField(41) {
			continue // gone meanwhile
		}
		policy, err := strconv.Atoi(f[statField(41)])
		if err != nil || (policy != 1 && policy != 2) { // SCHED_FIFO, SCHED_RR
			continue
		}
		// The kernel's own threads (migration/N, irq/…, watchdogd) run
		// real-time on every machine and are not what this is about.
		const pfKthread = 0x00200000 // field 9, flags
		if flags, err := strconv.ParseUint(f[statField(9)], 10, 64); err != nil || flags&pfKthread != 0 {
			continue
		}
		out = append(out, rtProcess{pid: pid, comm: comm})
	}
	return out
}
