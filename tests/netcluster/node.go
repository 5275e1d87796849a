package netcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node is one node of a cluster: its namespaces, files and engine.
type Node struct {
	c *Cluster
	h *holder

	ID       uint32
	Name     string // node<ID>, its nodelist name
	Addr     string // ring0_addr, on the node's eth0
	Dir      string // the node's scratch directory (host path)
	ConfPath string // its corosync.conf (host path; the same path inside the node)
	// StateDir is system.state_dir as the test sees it (host path). With
	// a mount namespace the node sees it as /var/lib/corosync.
	StateDir string
	// Log is the file that collects the engine's stdout and stderr,
	// across restarts (each start is marked).
	Log string

	stateInNode string

	mu     sync.Mutex
	daemon *exec.Cmd
	done   chan struct{}
	exit   error
	starts int
}

// Command is name args… inside the node's namespaces (network, and mount
// when it has one), with Options.Env added to the environment. It dies
// with the test binary. ctx kills it as exec.CommandContext does.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	all := append(n.h.enter(n.Dir), "--", name)
	cmd := exec.CommandContext(ctx, "nsenter", append(all, args...)...)
	cmd.Dir = n.Dir
	cmd.Env = append(os.Environ(), n.c.opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run runs name args… in the node and returns its stdout; a failure's
// error carries stderr.
func (n *Node) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := n.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("node %d: %s %s: %w: %s", n.ID, name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Corobus runs a corobus client verb against this node (`corobus VERB -c
// <conf> args…`); only for the Corobus backend.
func (n *Node) Corobus(ctx context.Context, verb string, args ...string) (string, error) {
	if n.c.opts.Backend != Corobus {
		return "", fmt.Errorf("node %d runs %s, not corobus", n.ID, n.c.opts.Backend)
	}
	return n.Run(ctx, n.c.opts.Binary, append([]string{verb, "-c", n.ConfPath}, args...)...)
}

// Start starts the node's engine. Its output is appended to n.Log.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("node %d is already running", n.ID)
		}
	}
	var args []string
	switch n.c.opts.Backend {
	case Corobus:
		args = []string{"up", "-c", n.ConfPath}
	case Corosync:
		args = []string{"-f", "-c", n.ConfPath}
	}
	args = append(args, n.c.opts.Args...)
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.starts++
	fmt.Fprintf(logf, "=== netcluster: start %d of node %d (%s) at %s\n", n.starts, n.ID, n.c.opts.Backend, time.Now().Format(time.RFC3339Nano))
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		defer close(done)
		defer logf.Close()
		// The engine's death signal goes with the thread that forked it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := n.Command(context.Background(), n.c.opts.Binary, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("node %d: starting %s: %w", n.ID, n.c.opts.Binary, err)
			return
		}
		n.daemon = cmd
		started <- nil
		err := cmd.Wait()
		n.mu.Lock()
		n.exit = err
		n.mu.Unlock()
		fmt.Fprintf(logf, "=== netcluster: node %d's %s exited: %v\n", n.ID, n.c.opts.Backend, err)
	}()
	if err := <-started; err != nil {
		<-done
		return err
	}
	n.done, n.exit = done, nil
	return nil
}

// Running reports whether the node's engine process is alive (a frozen
// node is running).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// ExitErr is how the engine's last run ended (nil while it runs).
func (n *Node) ExitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exit
}

// Pid is the engine's pid (corobus up, or corosync), 0 if not running.
func (n *Node) Pid() int {
	if !n.Running() {
		return 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.daemon.Process.Pid
}

// PIDs lists every process running in the node.
func (n *Node) PIDs() []int { return n.h.pids() }

// Stop stops the engine gracefully (SIGTERM) and waits for it to exit;
// after Options.StopTimeout it kills the node. Other processes in the
// node are left alone.
func (n *Node) Stop() error {
	if !n.Running() {
		return nil
	}
	n.Thaw() // a frozen engine cannot act on SIGTERM
	n.mu.Lock()
	p, done := n.daemon.Process, n.done
	n.mu.Unlock()
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(n.c.opts.StopTimeout):
		err := n.Kill()
		return errors.Join(fmt.Errorf("node %d did not stop within %s of SIGTERM: killed", n.ID, n.c.opts.StopTimeout), err)
	}
}

// Kill SIGKILLs every process in the node — the engine, its children and
// anything a test ran there — as a power cut would, and waits until they
// are gone. It then removes the libqb /dev/shm entries the killed
// processes leave, in the /dev/shm the node uses (the machine's, or its
// own tmpfs with a mount namespace), and nothing else there.
func (n *Node) Kill() error {
	killed, err := n.h.killAll(30 * time.Second)
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done != nil {
		<-done
	}
	removeShm(n.shmDir(), killed)
	if err != nil {
		return fmt.Errorf("node %d: %w", n.ID, err)
	}
	return nil
}

// SetFileKeys rewrites the node's own file with keys as its
// Options.FileKeys (the file keeps its inode: with a mount namespace it is
// bound over /etc/corosync/corosync.conf). A running engine reads it at
// its next start or reload.
func (n *Node) SetFileKeys(keys map[string]string) error {
	n.c.mu.Lock()
	if n.c.opts.FileKeys == nil {
		n.c.opts.FileKeys = map[int]map[string]string{}
	}
	n.c.opts.FileKeys[int(n.ID)] = keys
	conf := n.c.conf(n)
	n.c.mu.Unlock()
	return os.WriteFile(n.ConfPath, []byte(conf), 0o644)
}

// Restart is Stop then Start.
func (n *Node) Restart() error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start()
}

// Freeze stops every process of the node (SIGSTOP): the node stays in
// the network but does nothing, as a hung machine does.
func (n *Node) Freeze() { n.h.signalAll(syscall.SIGSTOP) }

// Thaw continues a frozen node.
func (n *Node) Thaw() { n.h.signalAll(syscall.SIGCONT) }

// Members is the node's engine's own membership: for corosync the ids
// whose runtime.members.<id>.status is "joined" (corosync's cmap is local
// to the node and written by totem itself), for corobus the totem members
// of `corobus status` (its cmap's runtime.members is written through objdb
// and may lag: CmapMembers reads that).
func (n *Node) Members(ctx context.Context) ([]uint32, error) {
	if n.c.opts.Backend == Corobus {
		return n.statusMembers(ctx)
	}
	return n.CmapMembers(ctx)
}

// CmapMembers is the membership a corosync client sees: the ids whose
// runtime.members.<id>.status is "joined", read with corosync-cmapctl in
// the node, for either engine.
func (n *Node) CmapMembers(ctx context.Context) ([]uint32, error) {
	out, err := n.Run(ctx, "corosync-cmapctl", "runtime.members.")
	if err != nil {
		return nil, err
	}
	return parseMembers(out)
}

// parseMembers reads `runtime.members.<id>.status (str) = joined` lines.
func parseMembers(out string) ([]uint32, error) {
	var ids []uint32
	for _, line := range strings.Split(out, "\n") {
		key, val, ok := strings.Cut(line, " = ")
		if !ok || !strings.HasSuffix(key, ".status (str)") || strings.TrimSpace(val) != "joined" {
			continue
		}
		f := strings.Split(key, ".")
		if len(f) < 4 {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("runtime.members: bad node id in %q", line)
		}
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

func (n *Node) statusMembers(ctx context.Context) ([]uint32, error) {
	out, err := n.Corobus(ctx, "status", "--json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Totem *struct {
			Members []uint32 `json:"members"`
		} `json:"totem"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("node %d: decoding status: %w", n.ID, err)
	}
	if st.Totem == nil {
		return nil, fmt.Errorf("node %d: no totem in status yet", n.ID)
	}
	ids := append([]uint32(nil), st.Totem.Members...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// LogText is everything the engine printed so far.
func (n *Node) LogText() string {
	b, _ := os.ReadFile(n.Log)
	return string(b)
}

// LogTail is the last lines of the engine's output.
func (n *Node) LogTail(lines int) string {
	s := strings.TrimRight(n.LogText(), "\n")
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// privateDirs are bound over these paths in a node's mount namespace; a
// path absent from the machine is skipped (never created outside).
var privateDirs = []string{"/run", "/var/lib/corosync", "/var/lib/pacemaker", "/var/log/pacemaker", "/var/log/cluster"}

// setupMounts binds the node's private directories over the machine's in
// its mount namespace. Each private directory starts with the original's
// directory skeleton (names, modes, owners; no files), so that packaged
// daemons (Pacemaker: cib/, pengine/ owned by hacluster) find their layout.
func (n *Node) setupMounts() error {
	root := filepath.Join(n.Dir, "root")
	var script []string
	for _, p := range privateDirs {
		st, err := os.Stat(p)
		if err != nil || !st.IsDir() {
			continue
		}
		priv := filepath.Join(root, p)
		if err := copySkeleton(p, priv, p != "/run"); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s %s", shellQuote(priv), p))
	}
	// /run/crm is Pacemaker's; make it as its package would.
	if err := mkdirLike(filepath.Join(root, "run", "crm"), 0o750, "hacluster", "haclient"); err != nil {
		return err
	}
	script = append(script, "mount -t tmpfs -o mode=1777 tmpfs /dev/shm")
	if st, err := os.Stat("/etc/corosync/corosync.conf"); err == nil && st.Mode().IsRegular() {
		script = append(script, fmt.Sprintf("mount --bind %s /etc/corosync/corosync.conf", shellQuote(n.ConfPath)))
	}
	cmd := n.h.command("", "sh", "-ec", strings.Join(script, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(script, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}

// copySkeleton recreates src's directories (not its files) under dst with
// their modes and owners; only the top level when deep is false.
func copySkeleton(src, dst string, deep bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == src {
				return err
			}
			return nil // unreadable corners are not part of a skeleton
		}
		if !d.IsDir() {
			return nil
		}
		if p != src && !deep {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(out, info.Mode().Perm()|info.Mode()&(fs.ModeSticky|fs.ModeSetgid)); err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			_ = os.Lchown(out, int(st.Uid), int(st.Gid))
		}
		return nil
	})
}

func mkdirLike(dir string, mode os.FileMode, user, group string) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	// Ownership where the users exist (Pacemaker's package makes them).
	_ = exec.Command("chown", user+":"+group, dir).Run()
	return nil
}

// shmDir is the node's /dev/shm as the test's process reaches it: with a
// mount namespace, the holder's view of its own tmpfs.
func (n *Node) shmDir() string {
	if n.c.opts.MountNS {
		return filepath.Join("/proc", strconv.Itoa(n.h.pid()), "root", "dev", "shm")
	}
	return "/dev/shm"
}

// removeShm removes, from dir, the entries of libqb connections whose
// server or client was one of pids (qb-<server>-<client>-…): nobody else
// can use them, and a SIGKILLed process cannot remove its own.
func removeShm(dir string, pids []int) {
	if len(pids) == 0 {
		return
	}
	dead := map[string]bool{}
	for _, p := range pids {
		dead[strconv.Itoa(p)] = true
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		// qb-<server pid>-<client pid>-<fd>-XXXXXX, as libqb 2 names them.
		f := strings.Split(e.Name(), "-")
		if len(f) < 5 || f[0] != "qb" {
			continue
		}
		if dead[f[1]] || dead[f[2]] {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
