package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateLockFile is the lock of a state directory, in it.
const StateLockFile = "corobus.lock"

// StateLockEnv names the descriptor through which `corobus up` hands its
// state directory lock to the layer processes it starts (not COROBUS_…,
// which the configuration reads as keys).
const StateLockEnv = "COROBUSUP_LOCK_FD"

// StateLock is a process's share of the ownership of a state directory:
// one node per state directory, as corosync allows one corosync per
// machine. It is an flock(2) on <state_dir>/corobus.lock, so the kernel
// releases it when the last process holding it exits, however it exits: a
// SIGKILLed node leaves no lock behind. `corobus up` takes it and hands
// the locked descriptor to every layer process it starts, so the directory
// stays owned until the last of them is gone.
type StateLock struct {
	f   *os.File
	dir string
}

// Owner is what the lock file says about the process that took the lock.
type Owner struct {
	PID   int
	Role  string // "up", "bus"
	Since time.Time
}

// InUseError is a state directory another node owns.
type InUseError struct {
	Dir   string
	Owner Owner
	// Gone: the process that took the lock has exited, but processes it
	// started (its layers) still hold it.
	Gone bool
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.Owner.PID > 0 {
		who = fmt.Sprintf("corobus %s (pid %d", e.Owner.Role, e.Owner.PID)
		if !e.Owner.Since.IsZero() {
			who += ", since " + e.Owner.Since.Format(time.RFC3339)
		}
		who += ")"
	}
	if e.Gone {
		return fmt.Sprintf("state directory %s is still held by the layer processes of %s, which has exited; they are stopping", e.Dir, who)
	}
	return fmt.Sprintf("state directory %s is in use by %s: one node per state directory (stop that node, or give this one its own system.state_dir)", e.Dir, who)
}

// LockStateDir takes dir's lock for a process in role ("up", "bus"), or
// returns an *InUseError naming the owner. It creates dir if need be.
func LockStateDir(dir, role string) (*StateLock, error) {
	if dir == "" {
		return nil, errors.New("no state directory (system.state_dir)")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the state directory: %w", err)
	}
	path := filepath.Join(dir, StateLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the state directory lock: %w", err)
	}
	if err := flockNB(f); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner := readOwner(f)
			return nil, &InUseError{Dir: dir, Owner: owner, Gone: owner.PID > 0 && !processAlive(owner.PID)}
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The previous owner's record, if any, is stale: ours replaces it.
	// Written over the old record, then cut to length: on a full disk the
	// record still fits in the block the file already has.
	rec := fmt.Sprintf("%d\n%s\n%s\n", os.Getpid(), role, time.Now().UTC().Format(time.RFC3339))
	_, err = f.WriteAt([]byte(rec), 0)
	if err == nil {
		err = f.Truncate(int64(len(rec)))
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the state directory lock %s: %w", path, err)
	}
	return &StateLock{f: f, dir: dir}, nil
}

// LockStateDirWait is LockStateDir for `corobus up`: when the directory is
// held only by the leftovers of a node whose up has exited (its layers
// still stopping after a kill -9 of up), it waits for them up to wait;
// a live owner is refused at once.
func LockStateDirWait(dir, role string, wait time.Duration, waiting func(*InUseError)) (*StateLock, error) {
	deadline := time.Now().Add(wait)
	told := false
	for {
		l, err := LockStateDir(dir, role)
		var inUse *InUseError
		if err == nil || !errors.As(err, &inUse) || !inUse.Gone || time.Now().After(deadline) {
			return l, err
		}
		if !told && waiting != nil {
			waiting(inUse)
			told = true
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HoldStateDir is the lock of a layer process: the descriptor `corobus up`
// handed it (environ's StateLockEnv), checked to be dir's lock and
// consumed (StateLockEnv is removed from this process's environment, so
// that processes it starts do not look for a descriptor they were not
// handed); or, with
// none handed and exclusive set (the bus, which writes the directory),
// the lock taken afresh. A layer started by hand to scale a running node
// passes exclusive=false and holds nothing: it writes no state.
func HoldStateDir(dir, role string, environ []string, exclusive bool) (*StateLock, error) {
	for _, kv := range environ {
		v, ok := strings.CutPrefix(kv, StateLockEnv+"=")
		if !ok {
			continue
		}
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("%s=%q: not a descriptor", StateLockEnv, v)
		}
		_ = os.Unsetenv(StateLockEnv)
		l, err := adopt(fd, dir)
		if err != nil {
			return nil, fmt.Errorf("the state directory lock handed by corobus up (%s=%d): %w", StateLockEnv, fd, err)
		}
		return l, nil
	}
	if !exclusive {
		return nil, nil
	}
	return LockStateDir(dir, role)
}

// adopt checks that fd is dir's lock file and holds its lock.
func adopt(fd int, dir string) (*StateLock, error) {
	var got, want syscall.Stat_t
	if err := syscall.Fstat(fd, &got); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, StateLockFile)
	if err := syscall.Stat(path, &want); err != nil {
		return nil, err
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return nil, fmt.Errorf("descriptor %d is not %s", fd, path)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), path)
	// On the descriptor that holds it, flock succeeds again; on any other
	// it would fail: this proves the lock is ours.
	if err := flockNB(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("descriptor %d does not hold the lock of %s: %w", fd, dir, err)
	}
	return &StateLock{f: f, dir: dir}, nil
}

// File is the locked descriptor, to hand to a child process.
func (l *StateLock) File() *os.File { return l.f }

// Dir is the locked state directory.
func (l *StateLock) Dir() string { return l.dir }

// Close releases this process's hold (the lock itself goes when no
// process holds the descriptor any more).
func (l *StateLock) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// ReadStateOwner reads dir's lock file (for status and messages).
func ReadStateOwner(dir string) (Owner, error) {
	f, err := os.Open(filepath.Join(dir, StateLockFile))
	if err != nil {
		return Owner{}, err
	}
	defer f.Close()
	return readOwner(f), nil
}

func readOwner(f *os.File) Owner {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	lines := strings.Split(string(b[:n]), "\n")
	var o Owner
	if len(lines) > 0 {
		o.PID, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	}
	if len(lines) > 1 {
		o.Role = strings.TrimSpace(lines[1])
	}
	if len(lines) > 2 {
		o.Since, _ = time.Parse(time.RFC3339, strings.TrimSpace(lines[2]))
	}
	return o
}

func flockNB(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
