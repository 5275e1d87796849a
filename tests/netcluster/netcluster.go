// Package netcluster runs a cluster of N nodes on one machine, each node in
// network namespaces of its own, for tests that need real networking
// between nodes: membership, partitions, a node killed or frozen, corosync's
// own clients talking to each node's IPC. The same code runs corobus nodes
// and real corosync 3 nodes (Debian's), so a test can compare the two.
//
// Shape: the harness makes one namespace of its own, the hub, holding a
// bridge; each node gets a network namespace (and, with Options.MountNS or
// the Corosync backend, a mount namespace) held open by a long-lived holder
// process, joined to the bridge by a veth pair. Every command of a node runs
// with `nsenter -t <holder> -n [-m]`. Nothing is created in the root
// namespace and nothing has a global name, so any number of clusters (other
// tests, other users) can run on one machine at the same time. Everything
// is torn down by t.Cleanup; every process the harness starts carries
// PR_SET_PDEATHSIG, so even a killed test binary leaves nothing behind.
package netcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backend is the cluster engine the nodes run.
type Backend int

const (
	// Corobus runs `corobus up -c <conf>` on each node.
	Corobus Backend = iota
	// Corosync runs a real corosync 3 (`corosync -f -c <conf>`), the
	// reference. It always gets a mount namespace: corosync locks
	// /run/corosync.pid, one per machine.
	Corosync
)

func (b Backend) String() string {
	switch b {
	case Corobus:
		return "corobus"
	case Corosync:
		return "corosync"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// Options describe a cluster. The zero value (plus Nodes) is a corobus
// cluster of Nodes nodes, token 1000 ms, knet transport, votequorum.
type Options struct {
	// Nodes is the number of nodes (ids 1..Nodes); default 3, at most 250.
	Nodes int
	// Backend is corobus or a real corosync.
	Backend Backend
	// Binary is the engine's executable: corobus (built from this
	// checkout with Build when empty) or corosync (from PATH when empty).
	Binary string
	// Token is totem.token; default 1000 ms.
	Token time.Duration
	// Keys are extra or overriding configuration keys in corosync's dotted
	// form, for every node: "totem.join": "60",
	// "quorum.expected_votes": "3", "logging.debug": "on". A key under
	// nodelist.node is not allowed here: use NodeKeys.
	Keys map[string]string
	// NodeKeys are extra keys of one node's nodelist entry, by node id,
	// in every node's file: {3: {"quorum_votes": "2"}}.
	NodeKeys map[int]map[string]string
	// FileKeys are keys of one node's own file only, by node id, over
	// Keys: {3: {"totem.config_version": "1"}} gives node 3 a file the
	// others do not have (Node.SetFileKeys changes them later).
	FileKeys map[int]map[string]string
	// MountNS gives each node a mount namespace with private directories
	// over /run, /dev/shm, /var/lib/corosync, /var/lib/pacemaker,
	// /var/log/pacemaker and the node's file over
	// /etc/corosync/corosync.conf, as on a machine of its own. The state
	// directory is then /var/lib/corosync inside the node. Always on for
	// the Corosync backend.
	MountNS bool
	// Args are extra arguments of the engine after its own.
	Args []string
	// Env is extra environment of the engine and of Node.Command.
	Env []string
	// NoStart makes the namespaces, addresses and files but starts no
	// engine: the test starts nodes itself with Node.Start.
	NoStart bool
	// NoWait returns from Start as soon as the engines are started,
	// instead of waiting until every node sees every node.
	NoWait bool
	// ReadyTimeout bounds the wait for the first full membership;
	// default 2 minutes (the machine may be loaded).
	ReadyTimeout time.Duration
	// StopTimeout is how long Node.Stop waits after SIGTERM before it
	// kills the node; default 30 s.
	StopTimeout time.Duration
}

// Cluster is a running set of nodes.
type Cluster struct {
	t      testing.TB
	opts   Options
	Dir    string  // the cluster's scratch directory (configs, logs, state)
	Nodes  []*Node // Nodes[i].ID == i+1
	hub    *holder
	mu     sync.Mutex
	groups int // partition bridges that exist in the hub
}

// Subnet is the nodes' network: node i has address 172.30.0.i. Every
// cluster has its own hub, so clusters never see each other's addresses.
const Subnet = "172.30.0.0/24"

func nodeAddr(id int) string { return fmt.Sprintf("172.30.0.%d", id) }

// Require skips the test, with the reason, unless this machine can run a
// netcluster: not -short, root, unshare, nsenter and ip installed, and
// network namespaces, veth pairs and bridges working. The backend's own
// needs are checked by RequireBackend.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("netcluster: multi-node test skipped in -short mode")
	}
	if err := Available(); err != nil {
		t.Skipf("netcluster: %v: skipping", err)
	}
}

// Available says why this machine cannot run a netcluster, or nil when it
// can: root, unshare, nsenter and ip installed, and network namespaces,
// veth pairs and bridges working. (Require skips for the same reasons,
// and under -short.)
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, c := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install util-linux iproute2)", c)
		}
	}
	if err := probe(); err != nil {
		return fmt.Errorf("this machine cannot run namespaced nodes: %w", err)
	}
	return nil
}

// RequireBackend is Require plus what the backend needs: corosync and
// corosync-cmapctl for a real corosync (Members reads its cmap).
func RequireBackend(t testing.TB, b Backend) {
	t.Helper()
	Require(t)
	if b == Corosync {
		for _, c := range []string{"corosync", "corosync-cmapctl"} {
			if _, err := exec.LookPath(c); err != nil {
				t.Skipf("netcluster: %s is not installed (apt-get install corosync; .ci/run does): skipping", c)
			}
		}
	}
}

// probe makes a throwaway hub and node and joins them.
func probe() error {
	hub, err := newHolder(false)
	if err != nil {
		return err
	}
	defer hub.close()
	n, err := newHolder(true)
	if err != nil {
		return err
	}
	defer n.close()
	return hub.ip("link add br0 type bridge",
		fmt.Sprintf("link add n1 type veth peer name eth0 netns %d", n.pid()),
		"link set n1 master br0")
}

// Build builds corobus from this checkout into a test temporary directory
// and returns its path. Build once per test and pass it as Options.Binary
// to clusters that share it.
//
// In a test binary whose TestMain runs its tests through Main, the
// checkout is built once, at the first call, and every call gets that
// build hard-linked into its own TempDir (a path of its own, as before):
// each `go build` links the 30 MB binary again (1–3 s alone on a 2-vCPU
// machine, far more when a package's parallel tests all build at once),
// and tests/e2e, tests/quorum and services/cpg/cpgtest built it once per
// test or cluster.
func Build(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "corobus")
	shared.Lock()
	on := shared.on
	shared.Unlock()
	if !on {
		if err := goBuild(out); err != nil {
			t.Fatalf("netcluster: %v", err)
		}
		return out
	}
	shared.Lock()
	defer shared.Unlock()
	if shared.path == "" && shared.err == nil {
		dir, err := os.MkdirTemp("", "netcluster-build-")
		if err == nil {
			shared.dir = dir
			err = goBuild(filepath.Join(dir, "corobus"))
		}
		if err != nil {
			shared.err = err
		} else {
			shared.path = filepath.Join(dir, "corobus")
		}
	}
	if shared.err != nil {
		t.Fatalf("netcluster: %v", shared.err)
	}
	if err := os.Link(shared.path, out); err != nil {
		t.Fatalf("netcluster: linking the shared build: %v", err)
	}
	return out
}

// shared is the one build of a test binary run through Main.
var shared struct {
	sync.Mutex
	on   bool   // Main runs the tests
	dir  string // the build's directory, removed by Main
	path string // the build
	err  error  // why the build failed
}

// Main runs a test binary's tests (call it from TestMain:
// os.Exit(netcluster.Main(m))) with one corobus build shared by every
// Build call, removed after the tests.
func Main(m *testing.M) int {
	shared.Lock()
	shared.on = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	shared.Unlock()
	return code
}

// goBuild builds ./cmd/corobus of this checkout into out.
func goBuild(out string) error {
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/corobus")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/corobus: %v\n%s", err, b)
	}
	return nil
}

// Start makes a cluster and, unless opts.NoStart, starts every node and
// waits until each sees all of them (unless opts.NoWait). It skips the
// test when the machine cannot run one (RequireBackend). Everything goes
// away in t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireBackend(t, opts.Backend)
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > 250 {
		t.Fatalf("netcluster: %d nodes: between 1 and 250", opts.Nodes)
	}
	if opts.Token == 0 {
		opts.Token = time.Second
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.Backend == Corosync {
		opts.MountNS = true
	}
	for k := range opts.Keys {
		if strings.HasPrefix(k, "nodelist.") {
			t.Fatalf("netcluster: Keys[%q]: nodelist keys go in NodeKeys", k)
		}
	}
	for id, keys := range opts.FileKeys {
		for k := range keys {
			if strings.HasPrefix(k, "nodelist.") {
				t.Fatalf("netcluster: FileKeys[%d][%q]: nodelist keys go in NodeKeys", id, k)
			}
		}
	}
	if opts.Binary == "" {
		switch opts.Backend {
		case Corobus:
			opts.Binary = Build(t)
		case Corosync:
			p, err := exec.LookPath("corosync")
			if err != nil {
				t.Fatalf("netcluster: %v", err)
			}
			opts.Binary = p
		}
	}
	c := &Cluster{t: t, opts: opts, Dir: t.TempDir()}
	// Registered after TempDir, so it runs before the directory goes.
	t.Cleanup(c.cleanup)
	if err := c.build(); err != nil {
		t.Fatalf("netcluster: %v", err)
	}
	if opts.NoStart {
		return c
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			t.Fatalf("netcluster: %v", err)
		}
	}
	if !opts.NoWait {
		c.WaitMembers(t, opts.ReadyTimeout, c.Nodes...)
	}
	return c
}

// build makes the hub, the nodes' namespaces, links, directories and files.
func (c *Cluster) build() error {
	hub, err := newHolder(false)
	if err != nil {
		return fmt.Errorf("hub namespace: %w", err)
	}
	c.hub = hub
	if err := hub.ip("link add br0 type bridge", "link set br0 up"); err != nil {
		return fmt.Errorf("hub bridge: %w", err)
	}
	for id := 1; id <= c.opts.Nodes; id++ {
		n, err := c.newNode(id)
		if err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := os.WriteFile(n.ConfPath, []byte(c.conf(n)), 0o644); err != nil {
			return err
		}
		if c.opts.MountNS {
			if err := n.setupMounts(); err != nil {
				return fmt.Errorf("node %d mounts: %w", n.ID, err)
			}
		}
	}
	return nil
}

func (c *Cluster) newNode(id int) (*Node, error) {
	dir := filepath.Join(c.Dir, fmt.Sprintf("node%d", id))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h, err := newHolder(c.opts.MountNS)
	if err != nil {
		return nil, err
	}
	n := &Node{
		c:        c,
		h:        h,
		ID:       uint32(id),
		Name:     fmt.Sprintf("node%d", id),
		Addr:     nodeAddr(id),
		Dir:      dir,
		ConfPath: filepath.Join(dir, "corosync.conf"),
		Log:      filepath.Join(dir, "node.log"),
		StateDir: filepath.Join(dir, "state"),
	}
	n.stateInNode = n.StateDir
	if c.opts.MountNS {
		n.StateDir = filepath.Join(dir, "root", "var", "lib", "corosync")
		n.stateInNode = "/var/lib/corosync"
	}
	if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
		h.close()
		return nil, err
	}
	port := fmt.Sprintf("n%d", id)
	if err := c.hub.ip(
		fmt.Sprintf("link add %s type veth peer name eth0 netns %d", port, h.pid()),
		fmt.Sprintf("link set %s master br0", port),
		fmt.Sprintf("link set %s up", port),
	); err != nil {
		h.close()
		return nil, err
	}
	if err := h.ip(
		"link set lo up",
		fmt.Sprintf("addr add %s/24 dev eth0", n.Addr),
		"link set eth0 up",
	); err != nil {
		h.close()
		return nil, err
	}
	return n, nil
}

// Node returns the node with this id (1-based).
func (c *Cluster) Node(id int) *Node {
	if id < 1 || id > len(c.Nodes) {
		c.t.Fatalf("netcluster: no node %d (nodes 1..%d)", id, len(c.Nodes))
	}
	return c.Nodes[id-1]
}

// Options returns the options the cluster runs with, defaults filled in
// (Binary is the engine actually run).
func (c *Cluster) Options() Options { return c.opts }

// Partition splits the network: the nodes of each group reach each other
// and nobody else; a node named in no group is cut off alone. Packets
// between groups are dropped silently, as a partition does (no reset, no
// unreachable). Partition replaces any previous partition; Heal joins all.
func (c *Cluster) Partition(groups ...[]int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	where := map[int]int{} // node id → group number (1-based)
	for g, ids := range groups {
		for _, id := range ids {
			if id < 1 || id > len(c.Nodes) {
				return fmt.Errorf("partition: no node %d", id)
			}
			if _, dup := where[id]; dup {
				return fmt.Errorf("partition: node %d is in two groups", id)
			}
			where[id] = g + 1
		}
	}
	var cmds []string
	for g := len(groups) + 1; g <= c.groups; g++ {
		cmds = append(cmds, fmt.Sprintf("link del p%d", g))
	}
	for g := c.groups + 1; g <= len(groups); g++ {
		cmds = append(cmds, fmt.Sprintf("link add p%d type bridge", g), fmt.Sprintf("link set p%d up", g))
	}
	for _, n := range c.Nodes {
		if g, ok := where[int(n.ID)]; ok {
			cmds = append(cmds, fmt.Sprintf("link set n%d master p%d", n.ID, g))
		} else {
			cmds = append(cmds, fmt.Sprintf("link set n%d nomaster", n.ID))
		}
	}
	// Deleting a bridge releases its ports: order the deletes after the
	// moves, so that no node is briefly on no bridge it should be on.
	sort.SliceStable(cmds, func(i, j int) bool {
		return !strings.HasPrefix(cmds[i], "link del") && strings.HasPrefix(cmds[j], "link del")
	})
	if err := c.hub.ip(cmds...); err != nil {
		return fmt.Errorf("partition: %w", err)
	}
	if len(groups) > c.groups {
		c.groups = len(groups)
	}
	return nil
}

// Heal joins every node to one network again.
func (c *Cluster) Heal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cmds []string
	for _, n := range c.Nodes {
		cmds = append(cmds, fmt.Sprintf("link set n%d master br0", n.ID))
	}
	for g := 1; g <= c.groups; g++ {
		cmds = append(cmds, fmt.Sprintf("link del p%d", g))
	}
	if err := c.hub.ip(cmds...); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	c.groups = 0
	return nil
}

// WaitMembers waits until each of the given nodes (all, when none are
// given) sees exactly the given nodes as its members (Node.Members), and fails the test
// otherwise, with every node's view and the tail of its log.
func (c *Cluster) WaitMembers(t testing.TB, timeout time.Duration, nodes ...*Node) {
	t.Helper()
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	want := make([]uint32, 0, len(nodes))
	for _, n := range nodes {
		want = append(want, n.ID)
	}
	c.WaitView(t, timeout, nodes, want)
}

// WaitView waits until each node of nodes sees exactly want as its
// members (Node.Members).
func (c *Cluster) WaitView(t testing.TB, timeout time.Duration, nodes []*Node, want []uint32) {
	t.Helper()
	sorted := append([]uint32(nil), want...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	start := time.Now()
	deadline := start.Add(timeout)
	views := map[uint32]string{}
	// Each look runs `corobus status --json` in every node: a process
	// (some 60 ms of CPU) and a round of bus requests per node. Looking
	// every 200 ms for as long as a view took to settle, the tests of a
	// package waiting at once spent most of a 2-vCPU machine looking, and
	// slowed the very nodes they waited for. So: every 200 ms for the
	// first two seconds, then half as often again each time, up to once a
	// second.
	pause := 200 * time.Millisecond
	for {
		done := true
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			got, err := n.Members(ctx)
			cancel()
			switch {
			case err != nil:
				views[n.ID] = "error: " + err.Error()
				done = false
			case !equalIDs(got, sorted):
				views[n.ID] = fmt.Sprint(got)
				done = false
			default:
				views[n.ID] = fmt.Sprint(got)
			}
			if !n.Running() {
				t.Fatalf("netcluster: waiting for members %v: node %d's %s exited: %v\n%s", sorted, n.ID, c.opts.Backend, n.ExitErr(), n.LogTail(60))
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, n := range nodes {
				fmt.Fprintf(&b, "node %d sees %s\n", n.ID, views[n.ID])
			}
			for _, n := range nodes {
				fmt.Fprintf(&b, "--- node %d log (tail)\n%s\n", n.ID, n.LogTail(40))
			}
			t.Fatalf("netcluster: members %v not seen by every node within %s:\n%s", sorted, timeout, b.String())
		}
		time.Sleep(pause)
		if time.Since(start) > 2*time.Second {
			pause = min(pause*3/2, time.Second)
		}
	}
}

func equalIDs(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// cleanup kills every node and every holder; the namespaces, links and
// mounts go with their last process.
func (c *Cluster) cleanup() {
	failed := c.t.Failed()
	var errs []error
	for _, n := range c.Nodes {
		if failed {
			c.t.Logf("netcluster: node %d log (tail):\n%s", n.ID, n.LogTail(80))
		}
		if err := n.Kill(); err != nil {
			errs = append(errs, err)
		}
		n.h.close()
	}
	if c.hub != nil {
		c.hub.close()
	}
	if err := errors.Join(errs...); err != nil {
		c.t.Errorf("netcluster cleanup: %v", err)
	}
}
