package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needs are what a real-client test requires of the machine, each checked
// with a visible skip reason when missing (.ci/run installs them all).
type needs struct {
	commands []string // on PATH: corosync, corosync-cmapctl, …
	headers  []string // development headers: corosync/cmap.h, …
}

// requireRealClients skips t, saying why, unless the machine can run
// corosync's real clients: not -short, root, a working `unshare --net`
// (each test runs its node in a namespace of its own, where no corosync
// owns the abstract socket names), and what n lists. It returns the
// commands' paths in n.commands order.
func requireRealClients(t testing.TB, what string, n needs) []string {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped in -short", what)
	}
	var paths []string
	for _, c := range n.commands {
		p, err := exec.LookPath(c)
		if err != nil {
			t.Skipf("%s: %s is not installed (apt-get install corosync; .ci/run does): skipping", what, c)
		}
		paths = append(paths, p)
	}
	for _, h := range n.headers {
		if _, err := os.Stat(filepath.Join("/usr/include", h)); err != nil {
			t.Skipf("%s: %s is missing (apt-get install libcmap-dev; .ci/run does): skipping", what, h)
		}
	}
	if os.Geteuid() != 0 {
		t.Skipf("%s: unshare --net needs root: skipping", what)
	}
	if err := exec.Command("unshare", "--net", "true").Run(); err != nil {
		t.Skipf("%s: unshare --net does not work here (%v): skipping", what, err)
	}
	return paths
}

// buildCmapClient compiles testdata/cmapclient.c against libcmap.
func buildCmapClient(t testing.TB) string {
	t.Helper()
	client := filepath.Join(t.TempDir(), "cmapclient")
	if out, err := exec.Command("gcc", "-O2", "-o", client, repoFile("tests", "e2e", "testdata", "cmapclient.c"), "-lcmap").CombinedOutput(); err != nil {
		t.Fatalf("building the libcmap client: %v\n%s", err, out)
	}
	return client
}

// oneNodeConf writes testdata/compare.conf, a one-node corosync.conf on
// 127.0.0.1 that corosync and corobus both run, with its log and state in
// dir; it returns the file's path.
func oneNodeConf(t testing.TB, dir string) string {
	t.Helper()
	tmpl, err := os.ReadFile(repoFile("tests", "e2e", "testdata", "compare.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "node.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(string(tmpl), "@DIR@", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	return conf
}

// votequorumConf is the text of oneNodeConf's file conf with three
// expected votes and no wait_for_all: one node of one vote, not quorate,
// so corosync-quorumtool -e may move expected_votes, and a reload of it
// changes what votequorum computes.
func votequorumConf(t testing.TB, conf string) string {
	t.Helper()
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(orig), "provider: corosync_votequorum", "provider: corosync_votequorum\n    expected_votes: 3\n    wait_for_all: 0", 1)
}

// writeFiles writes each name's text into dir: the variants of a node's
// file a test's script copies over it before a reload.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// nodeUpShell is the start of a script that runs one node in the test's
// network namespace: D (dir), CONF and B (the binary) set, the loopback
// up, `corobus up -c $CONF` started in the background with its output in
// $D/up.log, and P its pid.
func nodeUpShell(dir, conf string, b binary) string {
	return `
D=` + shellQuote(dir) + `
CONF=` + shellQuote(conf) + `
B=` + shellQuote(b.path) + `
ip link set lo up || exit 10
"$B" up -c "$CONF" > "$D/up.log" 2>&1 &
P=$!
`
}

// gatewayPIDShell is a bash line that sets GW to the pid of the node's
// IPC gateway (the `corobus ipc` layer process), asking `$B status $SARGS`
// (SARGS: how the status verb finds the node, e.g. -c FILE; unset for the
// embedded default).
// libqb names every connection's /dev/shm directory after its server's
// pid (qb-<server pid>-<client pid>-…), so GW tells the test's own
// entries from those of any other libqb server on the machine (a real
// corosync, another test's node): /dev/shm is shared by every network
// namespace.
const gatewayPIDShell = `GW=$("$B" status --json $SARGS | grep -A3 '"layer": "ipc"' | grep -o '"pid": [0-9]*' | grep -o '[0-9]*$')`

// gatewayShmShell is a bash line printing how many /dev/shm entries the
// gateway GW holds.
const gatewayShmShell = `ls /dev/shm | grep -c "^qb-$GW-" || true`

// transports are libqb's connection types the gateway serves
// (ipc.transport): every real-client test runs on each, as a subtest.
var transports = []string{"shm", "socket"}

// eachTransport runs f once per transport, with the `corobus up`
// arguments that select it. The runs are parallel subtests: each starts
// its own node in a network namespace of its own, with its own state
// directory (the callers are parallel tests, see the package comment).
func eachTransport(t *testing.T, f func(t *testing.T, upArgs string)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			f(t, "-o ipc.transport="+tr)
		})
	}
}

// runInNetns runs a bash script in a network namespace of its own (its
// abstract socket names are its own: the node it starts serves only its
// clients) and returns what it printed (runUnshare).
func runInNetns(t testing.TB, timeout time.Duration, script string) ([]byte, error) {
	return runUnshare(t, timeout, []string{"--net"}, script)
}

// runUnshare runs `unshare FLAGS bash -c script args…` in a process group
// of its own and returns what it printed. After timeout, or a minute
// before go test's -timeout would kill the test binary (budget), the whole
// group goes — the clients and `corobus up` the script started too, not
// just bash (up's layers, in process groups of their own, follow up by
// their parent-death signal): they would outlive the binary and keep the
// namespace (and its sockets) alive.
func runUnshare(t testing.TB, timeout time.Duration, flags []string, script string, args ...string) ([]byte, error) {
	ctx, cancel := budget(t, timeout, time.Minute)
	defer cancel()
	argv := append(append(append([]string{}, flags...), "bash", "-c", script), args...)
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd.CombinedOutput()
}
