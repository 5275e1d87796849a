package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPacemakerdAcceptsCorobus starts Debian's pacemakerd (Pacemaker
// 2.1.5), unmodified, against a one-node corobus. pacemakerd first reads
// its configuration through cmap (mcp_read_config): it checks that the
// descriptor cmap_fd_get returns leads to a root process (SO_PEERCRED),
// which only libqb's shared-memory transport gives, reads logging.debug,
// and admits its haclient group by setting uidgid.gid.<gid>. Then it
// connects to cfg (the same check of its provider) and starts its daemons,
// which join their closed process groups: the test stops Pacemaker once
// all four have (tests/pacemaker runs a whole cluster and its failover).
//
// Everything runs as root in a private network namespace (the IPC names)
// and a private mount namespace whose /var/lib/pacemaker,
// /var/log/pacemaker, /run and /dev/shm are empty tmpfs: nothing of the
// host's Pacemaker is touched.
func TestPacemakerdAcceptsCorobus(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	cmapctl := requireRealClients(t, "pacemakerd against corobus", needs{commands: []string{"corosync-cmapctl", "pacemakerd"}})[0]
	pacemakerd, _ := exec.LookPath("pacemakerd")
	for _, d := range []string{"/var/lib/pacemaker", "/var/log/pacemaker"} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Skipf("pacemakerd against corobus: %s is missing (Debian's pacemaker package makes it): skipping", d)
		}
	}
	if err := exec.Command("unshare", "--mount", "true").Run(); err != nil {
		t.Skipf("pacemakerd against corobus: unshare --mount does not work here (%v): skipping", err)
	}
	grp, err := user.LookupGroup("haclient")
	if err != nil {
		t.Skipf("pacemakerd against corobus: no haclient group (%v): skipping", err)
	}
	b := buildBinary(t)
	dir := t.TempDir()
	conf := oneNodeConf(t, dir)
	script := `set -e
B=` + shellQuote(b.path) + `
C=` + shellQuote(cmapctl) + `
PM=` + shellQuote(pacemakerd) + `
CONF=` + shellQuote(conf) + `
D=` + shellQuote(dir) + `
for m in /var/lib/pacemaker /var/log/pacemaker /run /dev/shm; do mount -t tmpfs -o mode=0755 tmpfs $m; done
chmod 1777 /dev/shm
mkdir -p /run/crm
ip link set lo up
"$B" up -c "$CONF" > "$D/up.log" 2>&1 &
UP=$!
trap 'kill -TERM $UP; wait $UP' EXIT
for i in $(seq 150); do "$C" -g totem.cluster_name >/dev/null 2>&1 && break; sleep 0.2; done
echo "== before"; timeout 10 "$C" -g uidgid.gid.` + grp.Gid + ` 2>&1 || true
L=/var/log/pacemaker/pacemaker.log
PCMK_logfacility=none "$PM" & PMK=$!
# Until every daemon has joined its closed process group (then Pacemaker
# runs on this node), pacemakerd exits, or 90 s pass.
for i in $(seq 450); do
  kill -0 $PMK 2>/dev/null || break
  n=0; for g in cib attrd crmd stonith-ng; do grep -q "Group $g event [0-9]*: node 1 pid [0-9]* joined" $L 2>/dev/null && n=$((n+1)); done
  [ $n = 4 ] && break
  sleep 0.2
done
kill -TERM $PMK 2>/dev/null || true
for i in $(seq 150); do kill -0 $PMK 2>/dev/null || break; sleep 0.2; done
kill -KILL $PMK 2>/dev/null || true
rc=0; wait $PMK || rc=$?
echo "== pacemakerd exit $rc"
echo "== after"; timeout 10 "$C" -g uidgid.gid.` + grp.Gid + ` 2>&1 || true
echo "== log"; cat /var/log/pacemaker/pacemaker.log
`
	out, err := runUnshare(t, 3*time.Minute, []string{"--net", "--mount", "--propagation", "private"}, script)
	got := string(out)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s\nnode log:\n%s", err, got, log)
	}
	logPart := got[strings.Index(got, "== log"):]
	for _, line := range strings.Split(logPart, "\n") {
		if strings.Contains(line, "pacemaker") && (strings.Contains(line, "info") || strings.Contains(line, "crit") ||
			strings.Contains(line, "notice") || strings.Contains(line, "error")) {
			t.Log(line)
		}
	}
	for _, bad := range []string{"Rejecting Corosync CMAP provider", "Could not connect to Corosync CMAP", "Could not authorize group"} {
		if strings.Contains(got, bad) {
			t.Errorf("pacemakerd: %q", bad)
		}
	}
	for _, want := range []string{
		"Reading configuration for corosync stack", // past the provider check
		"Starting Pacemaker",                       // mcp_read_config returned TRUE
		"== after\nuidgid.gid." + grp.Gid + " (u8) = 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Then pacemakerd's own cfg connection and its daemons' closed
	// process groups.
	if strings.Contains(got, "Rejecting Corosync CFG provider") || strings.Contains(got, "Could not connect to Corosync CFG") {
		t.Errorf("pacemakerd did not get its cfg connection")
	}
	if !strings.Contains(got, "Pacemaker daemon successfully started and accepting connections") {
		t.Errorf("pacemakerd did not start accepting connections")
	}
	for _, g := range []string{"cib", "attrd", "crmd", "stonith-ng"} {
		if !regexp.MustCompile(`Group ` + g + ` event \d+: node 1 pid \d+ joined`).MatchString(got) {
			t.Errorf("Pacemaker's %s did not join its process group", g)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", got)
	}
}
