package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLibcmapClients builds a libcmap program of our own and runs it
// against a corobus node: every call once, then twenty clients at once in
// a loop while more are killed in mid-request. The node keeps serving and
// no client leaves anything in /dev/shm (of the gateway's own entries:
// other libqb servers may run on the machine).
func TestLibcmapClients(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "real libcmap clients", needs{headers: []string{"corosync/cmap.h"}})
	client := buildCmapClient(t)
	b := buildBinary(t)
	eachTransport(t, func(t *testing.T, upArgs string) { runLibcmapClients(t, b, client, upArgs) })
}

func runLibcmapClients(t *testing.T, b binary, client, upArgs string) {
	dir := t.TempDir()
	script := `set -e
ip link set lo up 2>/dev/null || true
export XDG_STATE_HOME=` + dir + `
` + b.path + ` up ` + upArgs + ` > ` + dir + `/up.log 2>&1 &
UP=$!
trap 'kill -TERM $UP; wait $UP' EXIT
B=` + b.path + `
for i in $(seq 100); do $B status 2>/dev/null | grep -q ipc && break; sleep 0.2; done
` + gatewayPIDShell + `
C=` + client + `
for i in $(seq 50); do $C check >/dev/null 2>&1 && break; sleep 0.2; done
echo "== check"; $C check
echo "== twenty"
pids=""
for i in $(seq 20); do $C loop 100 client.loop.$i & pids="$pids $!"; done
victims=""
for i in $(seq 5); do $C loop 100000 client.victim.$i & victims="$victims $!"; done
sleep 1
kill -9 $victims
fails=0
for p in $pids; do wait $p || fails=$((fails+1)); done
echo "failed clients: $fails"
echo "== after"; $C check
sleep 1
echo "== shm"; ` + gatewayShmShell + `
`
	out, err := runInNetns(t, 5*time.Minute, script)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s\nnode log:\n%s", err, out, log)
	}
	got := string(out)
	for _, want := range []string{"== check\nOK\n", "failed clients: 0\n", "== after\nOK\n", "== shm\n0\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
