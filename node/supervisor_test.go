package node

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/internal/testlog"
)

// sh returns a child that runs a shell script (the supervisor appends
// --restarts N, which the script receives as $1 $2).
func sh(name, script string) Child {
	return Child{Name: name, Path: "/bin/sh", Args: []string{"-c", script, name}}
}

func TestSupervisorRestartsAndStopsInReverse(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "order")
	out := &testlog.Buffer{}
	sup := NewSupervisor(slog.New(slog.DiscardHandler), out, Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Stable: time.Hour}, 5*time.Second)
	// "a" and "c" run until told to stop and record when they are;
	// "b" crashes at once every time and must be restarted.
	stopper := func(name string) Child {
		return sh(name, `trap 'echo `+name+` >> `+order+`; exit 0' TERM; echo `+name+` up; while :; do sleep 0.01; done`)
	}
	children := []Child{stopper("a"), sh("b", `echo "b run $2"; exit 3`), stopper("c")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, children) }()

	deadline := time.Now().Add(10 * time.Second)
	for sup.Restarts()["b"] < 3 || !strings.Contains(out.String(), "c       | c up") {
		if time.Now().After(deadline) {
			t.Fatalf("restarts %v; output:\n%s", sup.Restarts(), out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ := os.ReadFile(order)
	if string(got) != "c\na\n" {
		t.Errorf("stop order %q, want c then a", got)
	}
	// Every line of a child is prefixed with its name, and a restarted
	// child is told how often it was restarted.
	if !strings.Contains(out.String(), "b       | b run 1") {
		t.Errorf("no prefixed restart line in:\n%s", out.String())
	}
}

func TestSupervisorKillsAStubbornChild(t *testing.T) {
	sup := NewSupervisor(slog.New(slog.DiscardHandler), &testlog.Buffer{}, DefaultBackoff(), 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	c := sh("stubborn", `trap '' TERM; while :; do sleep 0.01; done`)
	c.Ready = func(context.Context) error { close(ready); return nil }
	go func() { done <- sup.Run(ctx, []Child{c}) }()
	<-ready
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a child ignoring SIGTERM was not killed")
	}
}

// TestSupervisorRestartLoopIsQuiet: a child that fails at once, forever,
// is restarted with backoff and reported once, then summarized with the
// count of restarts, not a line per restart.
func TestSupervisorRestartLoopIsQuiet(t *testing.T) {
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	sup := NewSupervisor(log, &testlog.Buffer{}, Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond, Stable: time.Hour}, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- sup.Run(ctx, []Child{sh("crash", `exit 1`)}) }()
	deadline := time.Now().Add(time.Minute)
	for sup.Restarts()["crash"] < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d restarts in a minute", sup.Restarts()["crash"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	minutes := int(time.Since(began)/time.Minute) + 1
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, "layer exited; restarting") {
			lines = append(lines, l)
		}
	}
	// At most the first line and one summary per minute begun.
	if len(lines) > 1+minutes {
		t.Fatalf("%d restarts logged in %d lines over %d minute(s), at most %d allowed:\n%s",
			sup.Restarts()["crash"], len(lines), minutes, 1+minutes, strings.Join(lines, "\n"))
	}
	last := lines[len(lines)-1]
	if !strings.Contains(last, "repeated=") {
		t.Fatalf("no summary with a count: %s", last)
	}
}

// TestDefaultBackoffBoundsALoop: a child that fails at once forever is
// started at most a handful of times in its first minute, and twice a
// minute after that.
func TestDefaultBackoffBoundsALoop(t *testing.T) {
	b := DefaultBackoff()
	starts, at, delay := 1, time.Duration(0), b.Min
	var firstMinute int
	for at < 10*time.Minute {
		at += delay
		delay = b.next(delay)
		starts++
		if at < time.Minute {
			firstMinute = starts
		}
	}
	if firstMinute > 12 || starts > firstMinute+2*9+1 {
		t.Fatalf("%d starts in the first minute, %d in ten", firstMinute, starts)
	}
	t.Logf("an always-failing layer: %d starts in its first minute, %d in ten", firstMinute, starts)
}

// Each child is the leader of a process group of its own, so that a
// signal to the supervisor's group (a terminal's ^C) reaches the
// supervisor alone.
func TestSupervisorChildHasItsOwnProcessGroup(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "pgid")
	sup := NewSupervisor(slog.New(slog.DiscardHandler), &testlog.Buffer{}, DefaultBackoff(), 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sup.Run(ctx, []Child{sh("g", `echo "$$ $(ps -o pgid= -p $$)" > `+out+`.tmp; mv `+out+`.tmp `+out+`; trap 'exit 0' TERM; while :; do sleep 0.01; done`)})
	}()
	deadline := time.Now().Add(10 * time.Second)
	var f []string
	for len(f) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the child did not say its process group")
		}
		f = strings.Fields(readFile(t, out))
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if f[0] != f[1] {
		t.Errorf("child %s is in process group %s, not its own", f[0], f[1])
	}
	if f[1] == strconv.Itoa(syscall.Getpgrp()) {
		t.Errorf("child shares the supervisor's process group %s", f[1])
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// Crash kills a child without SIGTERM (its trap never runs), does not
// restart it, and leaves the others running until the context ends.
func TestSupervisorCrash(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "order")
	out := &testlog.Buffer{}
	sup := NewSupervisor(slog.New(slog.DiscardHandler), out, Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Stable: time.Hour}, 5*time.Second)
	stopper := func(name string) Child {
		return sh(name, `trap 'echo `+name+` >> `+order+`; exit 0' TERM; echo "`+name+` up $2"; while :; do sleep 0.01; done`)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, []Child{stopper("a"), stopper("b")}) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "b       | b up") {
		if time.Now().After(deadline) {
			t.Fatalf("output:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sup.Crash("a")
	// Long enough for several restarts at this backoff, were there any.
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, _ := os.ReadFile(order); string(got) != "b\n" {
		t.Errorf("children told to stop: %q, want only b (a was killed)", got)
	}
	if strings.Contains(out.String(), "a up 1") || sup.Restarts()["a"] != 0 {
		t.Errorf("a crashed child was restarted (%v):\n%s", sup.Restarts(), out.String())
	}
}

// supervisorHelperEnv makes the test binary a supervisor of one child
// (TestSupervisorDeathKillsChildren): the value is the directory where
// the child writes its pid, and would write "term" if it got SIGTERM.
const supervisorHelperEnv = "COROBUS_NODE_TEST_SUPERVISOR"

// When the supervisor (corobus up) is killed, its children die at once
// with SIGKILL, as a killed corosync's services do: had they SIGTERM
// (as before 2 Dec), the IPC gateway closed its connections and the CPG
// members of the node left with PROCDOWN, not NODEDOWN, whenever it beat
// the bus to its end.
func TestSupervisorDeathKillsChildren(t *testing.T) {
	if dir := os.Getenv(supervisorHelperEnv); dir != "" {
		sup := NewSupervisor(slog.New(slog.DiscardHandler), &testlog.Buffer{}, DefaultBackoff(), 5*time.Second)
		_ = sup.Run(context.Background(), []Child{sh("c",
			`trap 'echo term > `+dir+`/term; exit 0' TERM; echo $$ > `+dir+`/pid.tmp; mv `+dir+`/pid.tmp `+dir+`/pid; while :; do sleep 0.01; done`)})
		return
	}
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^TestSupervisorDeathKillsChildren$")
	helper.Env = append(os.Environ(), supervisorHelperEnv+"="+dir)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var pid int
	for pid == 0 {
		if time.Now().After(deadline) {
			_ = helper.Process.Kill()
			_ = helper.Wait()
			t.Fatal("the helper's child never started")
		}
		pid, _ = strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(dir, "pid"))))
		time.Sleep(10 * time.Millisecond)
	}
	_ = helper.Process.Kill()
	_ = helper.Wait()
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the child %d outlived its killed supervisor", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := readFile(t, filepath.Join(dir, "term")); got != "" {
		t.Errorf("the child of a killed supervisor was given SIGTERM (it ran its trap), not SIGKILL")
	}
}
