package netcluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// holder is a process that holds namespaces open: `unshare --net
// [--mount --propagation private] sleep infinity`. Every command of a node
// enters its namespaces with nsenter -t <pid>. The namespaces go away with
// their last process; the holder dies with the test binary
// (PR_SET_PDEATHSIG).
type holder struct {
	cmd   *exec.Cmd
	mount bool
	netns string // readlink /proc/<pid>/ns/net: tells this node's processes
	done  chan struct{}
}

func newHolder(mount bool) (*holder, error) {
	args := []string{"--net"}
	if mount {
		// Private propagation: nothing mounted in the node is seen
		// outside it.
		args = append(args, "--mount", "--propagation", "private")
	}
	args = append(args, "--", "sleep", "infinity")
	h := &holder{mount: mount, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(h.done)
		// The death signal goes with the thread that forked: keep it
		// for the holder's whole life.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command("unshare", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("unshare %s: %w", strings.Join(args, " "), err)
			return
		}
		h.cmd = cmd
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	// unshare execs sleep once the namespaces exist: until then the pid's
	// namespace is still ours.
	own, _ := os.Readlink("/proc/self/ns/net")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", h.pid()))
		if err == nil && ns != own && h.execed() {
			h.netns = ns
			return h, nil
		}
		select {
		case <-h.done:
			return nil, fmt.Errorf("unshare %s exited: %v", strings.Join(args, " "), h.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			h.close()
			return nil, fmt.Errorf("unshare %s: no namespace after 10 s", strings.Join(args, " "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// execed reports whether the holder runs sleep yet (unshare has set up
// every namespace, mount propagation included, before it execs).
func (h *holder) execed() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.pid()))
	return err == nil && strings.TrimSpace(string(b)) == "sleep"
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

func (h *holder) close() {
	if h == nil || h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// enter is the nsenter prefix for this holder's namespaces.
func (h *holder) enter(dir string) []string {
	args := []string{"-t", strconv.Itoa(h.pid()), "-n"}
	if h.mount {
		args = append(args, "-m")
		// Entering a mount namespace moves the cwd to its root.
		if dir != "" {
			args = append(args, "--wd="+dir)
		}
	}
	return args
}

// command is name args… inside the holder's namespaces; it dies with the
// test binary.
func (h *holder) command(dir, name string, args ...string) *exec.Cmd {
	all := append(h.enter(dir), "--", name)
	cmd := exec.Command("nsenter", append(all, args...)...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ip runs `ip -batch -` with these commands in the holder's network
// namespace.
func (h *holder) ip(cmds ...string) error {
	cmd := h.command("", "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch (%s): %w: %s", strings.Join(cmds, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}

// pids lists every process in the holder's network namespace but the
// holder itself: everything a node runs, whoever started it.
func (h *holder) pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == h.pid() {
			continue
		}
		ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err == nil && ns == h.netns {
			out = append(out, pid)
		}
	}
	return out
}

// signalAll sends sig to every process of the namespace until a scan
// finds none it has not signalled (a process may fork meanwhile), and
// returns the pids it signalled.
func (h *holder) signalAll(sig syscall.Signal) []int {
	seen := map[int]bool{}
	var all []int
	for round := 0; round < 100; round++ {
		fresh := false
		for _, pid := range h.pids() {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			fresh = true
			all = append(all, pid)
			_ = syscall.Kill(pid, sig)
		}
		if !fresh {
			break
		}
	}
	return all
}

// killAll SIGKILLs every process in the namespace and waits until none is
// left (zombies of other parents count as gone).
func (h *holder) killAll(timeout time.Duration) ([]int, error) {
	var killed []int
	deadline := time.Now().Add(timeout)
	for {
		killed = append(killed, h.signalAll(syscall.SIGKILL)...)
		var left []int
		for _, pid := range h.pids() {
			if !zombie(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("processes %v still alive %s after SIGKILL", left, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}
