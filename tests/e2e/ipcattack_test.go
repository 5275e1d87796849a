package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLocalAttacksOnTheGateway replays issue 17's two IPC holes, as the
// attacker did them, against `corobus up` with Debian's corosync-cmapctl
// as root's client; the attacker is testdata/qbattack.c run as nobody.
//
//   - Injection: while root's `corosync-cmapctl -T` is connected, nobody
//     sends a cmap set of uidgid.uid.65534 into every connection's request
//     socket the names in /dev/shm give away (SHM has none: the sends are
//     refused). The key must stay unset and root's tracker keep working.
//   - Exhaustion: nobody holds 20 000 connections that never send their
//     request (four processes, as a process may hold only RLIMIT_NOFILE
//     descriptors). Root's cmapctl is served meanwhile, the gateway's
//     thread count stays bounded, the connections over the per-uid limit
//     are refused with EAGAIN and the others closed at the handshake
//     deadline.
func TestLocalAttacksOnTheGateway(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	cmapctl := requireRealClients(t, "local attacks on the IPC gateway", needs{commands: []string{"corosync-cmapctl", "setpriv"}})[0]
	b := buildBinary(t)
	attacker := buildAsNobody(t, "qbattack.c")
	eachTransport(t, func(t *testing.T, upArgs string) { runLocalAttacks(t, b, cmapctl, attacker, upArgs) })
}

func runLocalAttacks(t *testing.T, b binary, cmapctl, attacker, upArgs string) {
	dir := t.TempDir()
	script := `set -e
ip link set lo up 2>/dev/null || true
export XDG_STATE_HOME=` + dir + `
D=` + dir + `
B=` + b.path + `
C=` + cmapctl + `
A=` + attacker + `
$B up ` + upArgs + ` > $D/up.log 2>&1 &
UP=$!
trap 'kill -TERM $UP; wait $UP' EXIT
for i in $(seq 100); do $B status 2>/dev/null | grep -q ipc && break; sleep 0.2; done
for i in $(seq 50); do $C -g totem.version >/dev/null 2>&1 && break; sleep 0.2; done
` + gatewayPIDShell + `
threads() { awk '/^Threads:/ {print $2}' /proc/$GW/status; }
nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }
echo "gateway pid $GW threads $(threads)"

(sleep 12 | timeout 10 stdbuf -oL $C -T test. > $D/track.out 2>&1 &)
for i in $(seq 100); do [ "$(` + gatewayShmShell + `)" -ge 1 ] && break; sleep 0.1; done
echo "== inject"; nobody $A inject $GW cmap uidgid.uid.65534
timeout 10 $C -s test.after u8 1
sleep 1
echo "== key"; timeout 10 $C -g uidgid.uid.65534 2>&1 || true

FP=""
for i in 1 2 3 4; do nobody timeout -k 5 60 $A flood cmap 5000 15 > $D/flood.$i 2>&1 & FP="$FP $!"; done
( while [ "$(cat $D/flood.* 2>/dev/null | grep -c ^connected)" != 4 ]; do threads >> $D/threads; sleep 0.1; done ) &
SP=$!
for i in $(seq 100); do [ "$(cat $D/flood.* | grep -c holding)" = 4 ] && break; sleep 0.1; done
echo "holding: $(cat $D/flood.* | grep holding | tr '\n' ' ')"
echo "== root during the flood"; rc=0; timeout 10 $C -g totem.version || rc=$?; echo "rc=$rc"
wait $FP; wait $SP
echo "== flood"; cat $D/flood.* | grep ^connected
echo "threads peak $(sort -n $D/threads | tail -1)"
echo "== root after the flood"; timeout 10 $C -g totem.version
sleep 4
echo "== track"; cat $D/track.out
echo "== shm"; ` + gatewayShmShell + `
`
	out, err := runInNetns(t, 3*time.Minute, script)
	log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
	if err != nil {
		t.Fatalf("script failed: %v\n%s\nnode log:\n%s", err, out, log)
	}
	got := string(out)
	t.Logf("%s", got)
	for _, want := range []string{
		"== key\nCan't get key uidgid.uid.65534. Error CS_ERR_NOT_EXIST",
		"create> test.after (u8) = 1\n",
		"== root during the flood\ntotem.version (u32) = 2\nrc=0\n",
		"== root after the flood\ntotem.version (u32) = 2\n",
		"== shm\n0\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`== inject\nsent (\d+) refused (\d+)`).FindStringSubmatch(got); m == nil || m[1]+m[2] == "00" {
		t.Errorf("the injection reached no connection: the test did not test anything")
	}
	total := map[string]int{}
	for _, m := range regexp.MustCompile(`connected (\d+) refused (\d+) closed (\d+) open (\d+)`).FindAllStringSubmatch(got, -1) {
		for i, k := range []string{"connected", "refused", "closed", "open"} {
			n, _ := strconv.Atoi(m[i+1])
			total[k] += n
		}
	}
	t.Logf("flood: %v", total)
	if total["connected"] != 20000 || total["open"] != 0 || total["refused"]+total["closed"] != 20000 || total["refused"] < 19000 {
		t.Errorf("flood: %v; want 20000 connected, all but the per-uid limit refused, the rest closed at the deadline", total)
	}
	if m := regexp.MustCompile(`threads peak (\d+)`).FindStringSubmatch(got); m == nil {
		t.Errorf("no thread count sampled")
	} else if n, _ := strconv.Atoi(m[1]); n > 100 {
		t.Errorf("the gateway's threads peaked at %d under the flood; want a bound that does not grow with connections", n)
	}
	if t.Failed() {
		t.Logf("node log:\n%s", log)
	}
}

// buildAsNobody compiles a C program of testdata where any user may run
// it (t.TempDir is its owner's only).
func buildAsNobody(t *testing.T, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, strings.TrimSuffix(src, ".c"))
	if out, err := exec.Command("gcc", "-O2", "-o", bin, repoFile("tests", "e2e", "testdata", src)).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, out)
	}
	return bin
}
