package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStateLockOneOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockStateDir(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockStateDir(dir, "up")
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second lock: %v, want an InUseError", err)
	}
	if inUse.Owner.PID != os.Getpid() || inUse.Owner.Role != "up" || inUse.Gone {
		t.Fatalf("owner %+v gone=%v", inUse.Owner, inUse.Gone)
	}
	for _, want := range []string{dir, fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	// A descriptor of the holder's (as handed to a layer) is adopted; a
	// fresh open of the same file is not the lock.
	fd, err := syscall.Dup(int(l.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	held, err := HoldStateDir(dir, "objdb", []string{StateLockEnv + "=" + fmt.Sprint(fd)}, false)
	if err != nil || held == nil {
		t.Fatalf("adopting the handed lock: %v", err)
	}
	held.Close()
	other, err := os.Open(filepath.Join(dir, StateLockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := HoldStateDir(dir, "bus", []string{StateLockEnv + "=" + fmt.Sprint(other.Fd())}, true); err == nil {
		t.Fatal("a descriptor that does not hold the lock was adopted")
	}
	// A layer started by hand, with no lock handed, holds none; a bus
	// started by hand is refused.
	if h, err := HoldStateDir(dir, "objdb", nil, false); err != nil || h != nil {
		t.Fatalf("scaling layer: %v %v", h, err)
	}
	if _, err := HoldStateDir(dir, "bus", nil, true); !errors.As(err, &inUse) {
		t.Fatalf("a second bus: %v", err)
	}
	l.Close()
	l2, err := LockStateDir(dir, "up")
	if err != nil {
		t.Fatalf("after the owner let go: %v", err)
	}
	l2.Close()
}

// TestStateLockStale: the record of an owner that died is not a lock; a
// lock held by the leftovers of a dead owner is waited for.
func TestStateLockStale(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, StateLockFile)
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\nup\n2020-01-01T00:00:00Z\n", dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := LockStateDir(dir, "up")
	if err != nil {
		t.Fatalf("a stale record blocked the lock: %v", err)
	}
	l.Close()

	// A process of a dead owner still holds it (flock(1) plays the layer).
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) is not installed (util-linux): the leftover case is skipped")
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\nup\n", dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	// One process: the shell locks descriptor 3 and becomes sleep.
	leftover := exec.Command("sh", "-c", `exec 3<>"$0"; flock -n 3 && exec sleep 30`, path)
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = leftover.Process.Kill(); _ = leftover.Wait() }()
	// Wait until flock(1) holds it, without taking it ourselves.
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) did not take the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = LockStateDir(dir, "up")
	var inUse *InUseError
	errors.As(err, &inUse)
	if inUse == nil || !inUse.Gone {
		t.Fatalf("held by a dead owner's leftover: %v", err)
	}
	var told *InUseError
	go func() { time.Sleep(200 * time.Millisecond); _ = leftover.Process.Kill() }()
	l, err = LockStateDirWait(dir, "up", time.Minute, func(e *InUseError) { told = e })
	if err != nil || told == nil {
		t.Fatalf("waiting for a leftover: %v (told %v)", err, told)
	}
	l.Close()
}
