package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestProviderCredentials checks what Pacemaker checks before it trusts
// its corosync provider: the descriptor that cmap_fd_get (cpg_fd_get,
// quorum_fd_get, corosync_cfg_fd_get) returns must lead to a root process
// — SO_PEERCRED on it gives the serving process's pid, uid 0 and gid 0.
// testdata/peercred.c connects with corosync's own libraries, as root, in
// a private network namespace: first to a real corosync (the reference,
// when installed), then to corobus on its default transport (shm), then
// on socket, where the descriptor is a datagram socket without a peer —
// the "process 0 is running as uid 4294967295" Pacemaker refuses.
//
// Every one of the four must pass on corobus's default transport: the
// node serves them all (cpg inside the gateway, ipc.colocate's default,
// the others through it), and Pacemaker's daemons check cpg's descriptor
// as they check cmap's.
func TestProviderCredentials(t *testing.T) {
	requireRealClients(t, "provider credentials", needs{headers: []string{"corosync/cmap.h", "corosync/cpg.h", "corosync/quorum.h", "corosync/cfg.h"}})
	dir := t.TempDir()
	peercred := filepath.Join(dir, "peercred")
	if out, err := exec.Command("gcc", "-O2", "-o", peercred, repoFile("tests", "e2e", "testdata", "peercred.c"),
		"-lcmap", "-lcpg", "-lquorum", "-lcfg").CombinedOutput(); err != nil {
		t.Fatalf("building peercred: %v\n%s", err, out)
	}
	corosync, _ := exec.LookPath("corosync")
	b := buildBinary(t)
	conf := oneNodeConf(t, dir)
	script := `
B=` + shellQuote(b.path) + `
K=` + shellQuote(corosync) + `
CONF=` + shellQuote(conf) + `
SARGS="-c $CONF"
P=` + shellQuote(peercred) + `
D=` + shellQuote(dir) + `
ip link set lo up || exit 10
served() { for i in $(seq 150); do "$P" cmap | grep -q pid && return 0; sleep 0.2; done; return 1; }
# cpg, quorum and cfg answer CS_ERR_TRY_AGAIN until their first
# synchronization; wait for that (an error left is reported below).
all() { for i in $(seq 100); do "$P" cmap cpg quorum cfg | grep -q ' error ' || return 0; sleep 0.2; done; return 0; }
gone() { for i in $(seq 100); do "$P" cmap | grep -q pid || return 0; sleep 0.1; done; return 1; }
if [ -n "$K" ]; then
	"$K" -f -c "$CONF" > "$D/corosync.out" 2>&1 &
	PID=$!
	served || { echo "corosync did not serve"; kill $PID; exit 11; }
	all
	echo "== corosync $PID"; "$P" cmap cpg quorum cfg
	kill -TERM $PID; wait $PID; gone || exit 12
fi
for TR in default socket; do
	ARGS=""; [ $TR = socket ] && ARGS="-o ipc.transport=socket"
	"$B" up -c "$CONF" $ARGS > "$D/up.$TR.log" 2>&1 &
	PID=$!
	trap 'kill -TERM $PID 2>/dev/null; wait $PID' EXIT
	served || { echo "corobus ($TR) did not serve"; exit 13; }
	all
	` + gatewayPIDShell + `
	echo "== corobus $TR $GW"; "$P" cmap cpg quorum cfg
	trap - EXIT
	kill -TERM $PID; wait $PID; gone || exit 14
done
`
	out, err := runInNetns(t, 5*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.default.log"))
		t.Fatalf("script failed: %v\n%s", err, log)
	}
	sections := map[string]string{}
	pids := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^== (corosync|corobus \w+) (\d+)\n((?:\w+ .*\n)+)`).FindAllStringSubmatch(got, -1) {
		sections[m[1]], pids[m[1]] = m[3], m[2]
	}
	check := func(who string, strict bool) {
		t.Helper()
		body, ok := sections[who]
		if !ok {
			t.Errorf("no results for %s", who)
			return
		}
		for _, service := range []string{"cmap", "cpg", "quorum", "cfg"} {
			want := fmt.Sprintf("%s pid %s uid 0 gid 0\n", service, pids[who])
			line := regexp.MustCompile(`(?m)^` + service + ` .*\n`).FindString(body)
			switch {
			case line == want:
			case strings.Contains(line, " error "):
				t.Errorf("%s: %s not served: %s", who, service, line)
			default:
				if strict {
					t.Errorf("%s: %q, want %q (Pacemaker refuses a provider that is not root)", who, line, want)
				}
			}
		}
	}
	if corosync != "" {
		check("corosync", true)
	} else {
		t.Log("corosync is not installed: no reference run (apt-get install corosync)")
	}
	check("corobus default", true)
	// On socket the check cannot pass: the descriptor has no peer.
	if line := regexp.MustCompile(`(?m)^cmap .*`).FindString(sections["corobus socket"]); line != "cmap pid 0 uid 4294967295 gid 4294967295" {
		t.Errorf("corobus on socket: %q; want the peerless datagram socket's credentials", line)
	}
}
