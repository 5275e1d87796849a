package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCorosyncCmapctl runs Debian's corosync-cmapctl, unmodified, against a
// corobus node. The node and the client run in a network namespace of
// their own (unshare --net), where no corosync can own the abstract
// socket names.
func TestCorosyncCmapctl(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	cmapctl := requireRealClients(t, "real corosync client", needs{commands: []string{"corosync-cmapctl"}})[0]
	b := buildBinary(t)
	// cmap as its own component process behind the gateway, and colocated
	// in the gateway (the default): the same client, the same answers.
	// Over each of libqb's transports.
	for _, mode := range []struct{ name, args string }{
		{"component", "-o ipc.colocate=none"},
		{"colocated", ""},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			eachTransport(t, func(t *testing.T, transport string) { runCmapctl(t, b, cmapctl, mode.args+" "+transport) })
		})
	}
}

func runCmapctl(t *testing.T, b binary, cmapctl, upArgs string) {
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
for i in $(seq 50); do ` + cmapctl + ` -g totem.version >/dev/null 2>&1 && break; sleep 0.2; done
C=` + cmapctl + `
(sleep 6 | timeout 4 stdbuf -oL $C -T test. > ` + dir + `/track.out 2>&1 &)
sleep 1
echo "== get"; $C -g runtime.config.totem.token
echo "== set"
for t in u8 u16 u32 u64 i8 i16 i32 i64; do $C -s test.t.$t $t 7; done
$C -s test.t.flt flt 1.5; $C -s test.t.dbl dbl 2.5; $C -s test.t.str str hello
echo "== list"; $C test.t.
echo "== delete"; $C -d test.t.str; $C -g test.t.str 2>&1 || true
echo "== delete prefix"; $C -D test.t. || echo "D rc=$?"; $C test.t. || echo "list rc=$?"
echo "== read-only"; $C -s nodelist.node.0.nodeid u32 9 2>&1 || true
echo "== stats"; sh -c 'echo "pid $$"; exec "$0" -m stats stats.ipcs' $C
echo "== stats all"; $C -m stats | grep -c '^stats\.ipcs\.global\.' || true
echo "== stats srp"; $C -m stats stats.srp.
echo "== stats clear"; $C -m stats -s stats.clear.all u8 1 && $C -m stats -g stats.srp.operational_entered
sleep 4
echo "== track"; cat ` + dir + `/track.out
echo "== shm"; ` + gatewayShmShell + `
`
	out, err := runInNetns(t, 5*time.Minute, script)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s\nnode log:\n%s", err, out, log)
	}
	got := string(out)
	checkStatsListing(t, got)
	for _, want := range []string{
		"== get\nruntime.config.totem.token (u32) = 1000\n",
		"test.t.dbl (dbl) = 2.500000\ntest.t.flt (flt) = 1.500000\ntest.t.i16 (i16) = 7\n",
		"test.t.str (str) = hello\ntest.t.u16 (u16) = 7\n",
		"Can't get key test.t.str. Error CS_ERR_NOT_EXIST",
		"== delete prefix\nlist rc=1\n== read-only\n", // as corosync: an empty listing exits 1
		"CS_ERR_ACCESS",
		"create> test.t.u8 (u8) = 7\n",
		"create> test.t.str (str) = hello\n",
		"delete> test.t.str (str) = hello\n",
		// Nothing of the clients is left in /dev/shm.
		"== shm\n0\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// checkStatsListing checks what `corosync-cmapctl -m stats stats.ipcs`
// listed of its own connection (its pid said first): corosync's keys,
// under cmap's service id 0, with its command name and its requests.
func checkStatsListing(t *testing.T, got string) {
	t.Helper()
	m := regexp.MustCompile(`== stats\npid (\d+)\n`).FindStringSubmatch(got)
	if m == nil {
		t.Errorf("no stats listing:\n%s", got)
		return
	}
	own := regexp.MustCompile(`(?m)^stats\.ipcs\.service0\.`+m[1]+`\.0x[0-9a-f]+\.(\w+) \((\w+)\) = (.*)$`).FindAllStringSubmatch(got, -1)
	keys := map[string]string{}
	for _, k := range own {
		keys[k[1]] = k[2] + " " + k[3]
	}
	if keys["procname"] != "str corosync-cmapct" { // the kernel keeps 15 bytes of a command's name
		t.Errorf("own connection's procname %q, want str corosync-cmapct; listing:\n%s", keys["procname"], got)
	}
	if r := keys["requests"]; !regexp.MustCompile(`^u64 [1-9]\d*$`).MatchString(r) {
		t.Errorf("own connection's requests %q, want a u64 above 0", r)
	}
	for _, k := range []string{"responses", "dispatched", "send_retries", "flow_control", "flow_control_count", "overload", "invalid_request", "queueing", "queued", "sent"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("own connection lacks %s; listing:\n%s", k, got)
		}
	}
	// corosync's type; corosync-cmapctl sends no request cmap lacks.
	if v := keys["invalid_request"]; v != "u64 0" {
		t.Errorf("own connection's invalid_request %q, want u64 0", v)
	}
	if !strings.Contains(got, "stats.ipcs.global.active (u64) = ") || !strings.Contains(got, "== stats all\n2\n") {
		t.Errorf("stats.ipcs.global.* not listed:\n%s", got)
	}
	// totem's counters, from the bus process: a node that runs has
	// installed a ring at least once.
	if !regexp.MustCompile(`(?m)^stats\.srp\.operational_entered \(u64\) = [1-9]\d*$`).MatchString(got) ||
		!strings.Contains(got, "stats.srp.mcast_tx (u64) = ") {
		t.Errorf("stats.srp.* not listed:\n%s", got)
	}
	// stats.clear.all resets them, as corosync's does.
	if !strings.Contains(got, "== stats clear\nstats.srp.operational_entered (u64) = 0\n") {
		t.Errorf("stats.clear.all did not reset stats.srp.operational_entered:\n%s", got)
	}
}
