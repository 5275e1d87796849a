package benchcompare

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRealtimeProcessesAreSeen starts a process at SCHED_RR and one at the
// normal policy: the first is listed, the second not, and a process of
// ours is not called foreign.
func TestRealtimeProcessesAreSeen(t *testing.T) {
	if _, err := exec.LookPath("chrt"); err != nil {
		t.Skipf("chrt (util-linux) not installed: %v", err)
	}
	rt := exec.Command("chrt", "-r", "5", "sleep", "30")
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rt.Process.Kill(); _ = rt.Wait() }()
	normal := exec.Command("sleep", "30")
	if err := normal.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = normal.Process.Kill(); _ = normal.Wait() }()
	// chrt execs sleep once the policy is set: wait for that.
	var seen, seenNormal bool
	for deadline := time.Now().Add(5 * time.Second); !seen && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		seenNormal = false
		for _, p := range realtimeProcesses() {
			seen = seen || (p.pid == rt.Process.Pid && p.comm == "sleep")
			seenNormal = seenNormal || p.pid == normal.Process.Pid
		}
	}
	if !seen {
		out, _ := exec.Command("chrt", "-p", strconv.Itoa(rt.Process.Pid)).CombinedOutput()
		if !strings.Contains(string(out), "SCHED_RR") {
			t.Skipf("this machine did not grant SCHED_RR (no CAP_SYS_NICE?): %s", out)
		}
		t.Fatalf("process %d runs SCHED_RR and was not listed", rt.Process.Pid)
	}
	if seenNormal {
		t.Fatalf("process %d runs at the normal policy and was listed", normal.Process.Pid)
	}
	var m machine
	m.sample([]int{rt.Process.Pid})
	if m.foreign[strconv.Itoa(rt.Process.Pid)+" sleep"] {
		t.Fatalf("our own real-time process was called foreign: %v", m.foreign)
	}
	m = machine{}
	m.sample(nil)
	if !m.foreign[strconv.Itoa(rt.Process.Pid)+" sleep"] {
		t.Fatalf("a real-time process not ours was not reported: %v", m.foreign)
	}
	if !strings.Contains(m.String(), "Real-time processes not this benchmark's") {
		t.Fatalf("the table's note does not say it: %q", m.String())
	}
}
