package pacemaker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// pcmkCluster is a netcluster whose nodes also run Pacemaker.
type pcmkCluster struct {
	t      *testing.T
	nc     *netcluster.Cluster
	notify *notifier

	mu   sync.Mutex
	pcmk map[uint32]*pacemakerd
}

// pacemakerd is one run of Pacemaker's master process on a node (its
// sub-daemons are its children, in the node's namespaces).
type pacemakerd struct {
	cmd  *exec.Cmd
	done chan struct{}
	exit error
}

// Pacemaker's programs, and what the test needs besides.
const (
	pacemakerdPath = "/usr/sbin/pacemakerd"
	dummyAgent     = "/usr/lib/ocf/resource.d/pacemaker/Dummy"
)

// requirePacemaker skips, with the reason, unless Debian's Pacemaker is
// installed as its packages install it.
func requirePacemaker(t *testing.T) {
	t.Helper()
	for _, p := range []string{pacemakerdPath, dummyAgent} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("pacemaker: %s is missing (apt-get install pacemaker pacemaker-cli-utils pacemaker-resource-agents; .ci/run does): skipping", p)
		}
	}
	for _, c := range []string{"crm_mon", "cibadmin", "crm_attribute", "corosync-cfgtool"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("pacemaker: %s is not installed (apt-get install pacemaker-cli-utils corosync; .ci/run does): skipping", c)
		}
	}
	for _, d := range []string{"/var/lib/pacemaker", "/var/log/pacemaker"} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Skipf("pacemaker: %s is missing (the pacemaker package makes it): skipping", d)
		}
	}
	if err := exec.Command("id", "hacluster").Run(); err != nil {
		t.Skip("pacemaker: no user hacluster (the pacemaker package makes it): skipping")
	}
}

// daemonEnv is the environment Pacemaker's daemons and tools get: what
// systemd gives pacemaker.service (its PATH, and the assignments of
// /etc/default/pacemaker, its EnvironmentFile), nothing of the test's.
func daemonEnv() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
	}
	f, err := os.Open("/etc/default/pacemaker")
	if err != nil {
		return env
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, strings.TrimSpace(k)+"="+v)
	}
	return env
}

// command is name args… in node n with Pacemaker's environment.
func (pc *pcmkCluster) command(ctx context.Context, n *netcluster.Node, name string, args ...string) *exec.Cmd {
	cmd := n.Command(ctx, name, args...)
	cmd.Env = daemonEnv()
	return cmd
}

// run runs a command in node n (bounded to 60 s: Pacemaker's tools wait
// for their daemons) and returns its stdout followed by its stderr; the
// error carries both.
func (pc *pcmkCluster) run(n *netcluster.Node, name string, args ...string) (string, error) {
	stdout, stderr, err := pc.output(n, name, args...)
	return stdout + stderr, err
}

// output runs a command in node n as run does and returns its stdout and
// its stderr apart.
func (pc *pcmkCluster) output(n *netcluster.Node, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := pc.command(ctx, n, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("node %d: %s %s: %w: %s", n.ID, name, strings.Join(args, " "), err, strings.TrimSpace(stdout.String()+stderr.String()))
	}
	return stdout.String(), stderr.String(), nil
}

// hostPath is where a path inside node n's mount namespace is on the
// host (the node's private directories live under its Dir/root).
func hostPath(n *netcluster.Node, inNode string) string {
	return filepath.Join(n.Dir, "root", inNode)
}

// startPacemaker starts pacemakerd on node n, as pacemaker.service does:
// /usr/sbin/pacemakerd in the foreground, its output to a file (systemd
// discards stderr; Pacemaker logs to /var/log/pacemaker/pacemaker.log).
func (pc *pcmkCluster) startPacemaker(n *netcluster.Node) {
	pc.t.Helper()
	pc.mu.Lock()
	if p := pc.pcmk[n.ID]; p != nil {
		select {
		case <-p.done:
		default:
			pc.mu.Unlock()
			pc.t.Fatalf("node %d: pacemakerd is already running", n.ID)
		}
	}
	pc.mu.Unlock()
	out, err := os.OpenFile(filepath.Join(n.Dir, "pacemakerd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		pc.t.Fatal(err)
	}
	fmt.Fprintf(out, "=== pacemaker test: pacemakerd started on node %d at %s\n", n.ID, time.Now().Format(time.RFC3339Nano))
	p := &pacemakerd{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		defer out.Close()
		// pacemakerd's death signal goes with the thread that forked it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := pc.command(context.Background(), n, pacemakerdPath)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("node %d: starting pacemakerd: %w", n.ID, err)
			return
		}
		p.cmd = cmd
		started <- nil
		err := cmd.Wait()
		pc.mu.Lock()
		p.exit = err
		pc.mu.Unlock()
		fmt.Fprintf(out, "=== pacemaker test: pacemakerd on node %d exited: %v\n", n.ID, err)
	}()
	if err := <-started; err != nil {
		pc.t.Fatal(err)
	}
	pc.mu.Lock()
	pc.pcmk[n.ID] = p
	pc.mu.Unlock()
}

// pacemakerRunning reports whether node n's pacemakerd is alive.
func (pc *pcmkCluster) pacemakerRunning(n *netcluster.Node) bool {
	pc.mu.Lock()
	p := pc.pcmk[n.ID]
	pc.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stopPacemaker stops Pacemaker on n as `systemctl stop pacemaker` does
// (SIGTERM to pacemakerd, which stops its resources and daemons) and
// waits for it to exit.
func (pc *pcmkCluster) stopPacemaker(n *netcluster.Node, timeout time.Duration) error {
	pc.mu.Lock()
	p := pc.pcmk[n.ID]
	pc.mu.Unlock()
	if p == nil || !pc.pacemakerRunning(n) {
		return fmt.Errorf("node %d: pacemakerd is not running", n.ID)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if p.exit != nil {
			return fmt.Errorf("node %d: pacemakerd exited after SIGTERM: %w", n.ID, p.exit)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("node %d: pacemakerd still running %s after SIGTERM", n.ID, timeout)
	}
}

// killNode kills the whole node as a power cut does: the engine,
// pacemakerd and every daemon and resource agent it runs.
func (pc *pcmkCluster) killNode(n *netcluster.Node) {
	pc.t.Helper()
	if err := n.Kill(); err != nil {
		pc.t.Fatal(err)
	}
	pc.mu.Lock()
	p := pc.pcmk[n.ID]
	pc.mu.Unlock()
	if p != nil {
		<-p.done
	}
}

// killEngine kills node n's engine alone, as `kill -9` of corosync does:
// every process of the node running the engine's binary (corobus runs
// several), not Pacemaker; it waits until the engine's main process has
// exited.
func (pc *pcmkCluster) killEngine(n *netcluster.Node) {
	pc.t.Helper()
	bin, err := filepath.EvalSymlinks(pc.nc.Options().Binary)
	if err != nil {
		pc.fatalf("%v", err)
	}
	killed := 0
	for _, pid := range n.PIDs() {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != bin {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	if killed == 0 {
		pc.fatalf("node %d: no process of %s to kill", n.ID, bin)
	}
	pc.eventually(30*time.Second, fmt.Sprintf("node %d's engine exits after SIGKILL", n.ID), func() error {
		if n.Running() {
			return errors.New("still running")
		}
		return nil
	})
}

// crmMon is what `crm_mon -1 --output-as=xml` says (the parts the test
// reads).
type crmMon struct {
	Summary struct {
		DC struct {
			Present    bool   `xml:"present,attr"`
			Name       string `xml:"name,attr"`
			WithQuorum bool   `xml:"with_quorum,attr"`
		} `xml:"current_dc"`
		NodesConfigured struct {
			Number int `xml:"number,attr"`
		} `xml:"nodes_configured"`
		Options struct {
			StonithEnabled bool `xml:"stonith-enabled,attr"`
		} `xml:"cluster_options"`
	} `xml:"summary"`
	Nodes []struct {
		Name    string `xml:"name,attr"`
		Online  bool   `xml:"online,attr"`
		Pending bool   `xml:"pending,attr"`
		Unclean bool   `xml:"unclean,attr"`
	} `xml:"nodes>node"`
	Resources []struct {
		ID     string `xml:"id,attr"`
		Agent  string `xml:"resource_agent,attr"`
		Role   string `xml:"role,attr"`
		Active bool   `xml:"active,attr"`
		Failed bool   `xml:"failed,attr"`
		Nodes  []struct {
			Name string `xml:"name,attr"`
		} `xml:"node"`
	} `xml:"resources>resource"`
}

// mon runs crm_mon -1 on node n.
func (pc *pcmkCluster) mon(n *netcluster.Node) (*crmMon, error) {
	out, _, err := pc.output(n, "crm_mon", "-1", "--output-as=xml")
	if err != nil {
		return nil, err
	}
	var m crmMon
	if err := xml.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("node %d: crm_mon: %w\n%s", n.ID, err, out)
	}
	return &m, nil
}

// online is the sorted names of the nodes crm_mon shows online.
func (m *crmMon) online() []string {
	var names []string
	for _, n := range m.Nodes {
		if n.Online {
			names = append(names, n.Name)
		}
	}
	sort.Strings(names)
	return names
}

// runningOn is where crm_mon shows resource id active ("" when stopped;
// an error when it is failed or active on more than one node).
func (m *crmMon) runningOn(id string) (string, error) {
	for _, r := range m.Resources {
		if r.ID != id {
			continue
		}
		if r.Failed {
			return "", fmt.Errorf("resource %s failed (role %s)", id, r.Role)
		}
		switch {
		case !r.Active || len(r.Nodes) == 0:
			return "", nil
		case len(r.Nodes) > 1:
			var on []string
			for _, n := range r.Nodes {
				on = append(on, n.Name)
			}
			return "", fmt.Errorf("resource %s active on %v", id, on)
		case r.Role != "Started":
			return "", fmt.Errorf("resource %s is %s on %s", id, r.Role, r.Nodes[0].Name)
		}
		return r.Nodes[0].Name, nil
	}
	return "", fmt.Errorf("no resource %s", id)
}

// eventually polls cond until it returns nil or timeout passes; then it
// fails the test with cond's last error and every node's state.
func (pc *pcmkCluster) eventually(timeout time.Duration, what string, cond func() error) {
	pc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			pc.t.Fatalf("%s: not within %s: %v\n%s", what, timeout, err, pc.report())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// fatalf fails the test with every node's state.
func (pc *pcmkCluster) fatalf(format string, args ...any) {
	pc.t.Helper()
	pc.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), pc.report())
}

// report is every node's state for a failure: engine and pacemakerd
// running or not, crm_mon -1 as an operator reads it, the tail of
// Pacemaker's log and of pacemakerd's output. The engine's log tail is
// printed by netcluster's cleanup.
func (pc *pcmkCluster) report() string {
	var b strings.Builder
	for _, n := range pc.nc.Nodes {
		fmt.Fprintf(&b, "===== node %d: engine running %v, pacemakerd running %v\n", n.ID, n.Running(), pc.pacemakerRunning(n))
		if pc.pacemakerRunning(n) {
			out, err := pc.run(n, "crm_mon", "-1")
			if err != nil {
				fmt.Fprintf(&b, "crm_mon -1: %v\n", err)
			}
			b.WriteString(out)
		}
		fmt.Fprintf(&b, "--- node %d /var/log/pacemaker/pacemaker.log (tail)\n%s\n", n.ID, tail(hostPath(n, "/var/log/pacemaker/pacemaker.log"), 60))
		fmt.Fprintf(&b, "--- node %d pacemakerd output (tail)\n%s\n", n.ID, tail(filepath.Join(n.Dir, "pacemakerd.out"), 20))
	}
	return b.String()
}

// keepLogs copies every node's logs (engine, Pacemaker, pacemakerd) to
// $TEST_PACEMAKER_LOGS/<test>/, when that is set, before the
// cluster's scratch directory goes.
func (pc *pcmkCluster) keepLogs() {
	dir := os.Getenv("TEST_PACEMAKER_LOGS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(pc.t.Name(), "/", "_"))
	for _, n := range pc.nc.Nodes {
		for name, src := range map[string]string{
			"engine.log":     n.Log,
			"pacemaker.log":  hostPath(n, "/var/log/pacemaker/pacemaker.log"),
			"pacemakerd.out": filepath.Join(n.Dir, "pacemakerd.out"),
		} {
			b, err := os.ReadFile(src)
			if err != nil {
				continue
			}
			dst := filepath.Join(dir, n.Name, name)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
				_ = os.WriteFile(dst, b, 0o644)
			}
		}
	}
	pc.t.Logf("logs kept in %s", dir)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(none)"
		}
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
