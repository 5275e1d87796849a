package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkCmapThroughGateway measures one synchronous libcmap client
// (testdata/cmapclient.c in bench mode: u32 sets, then gets) against the
// same one-node configuration served three ways, one after the other in
// one network namespace: corobus with cmap as its own component process
// (the default), corobus with cmap colocated in the gateway
// (ipc.colocate=cmap), and a real corosync when it is installed. The
// figures are reported as metrics; the work does not scale with b.N, so
// run it once:
//
//	go test ./tests/e2e -run '^$' -bench CmapThroughGateway -benchtime 1x
func BenchmarkCmapThroughGateway(b *testing.B) {
	if _, err := os.Stat("/usr/include/corosync/cmap.h"); err != nil {
		b.Skip("libcmap-dev is not installed (apt-get install libcmap-dev): skipping")
	}
	if os.Geteuid() != 0 || exec.Command("unshare", "--net", "true").Run() != nil {
		b.Skip("unshare --net is not available (needs root): skipping")
	}
	client := filepath.Join(b.TempDir(), "cmapclient")
	if out, err := exec.Command("gcc", "-O2", "-o", client, repoFile("tests", "e2e", "testdata", "cmapclient.c"), "-lcmap").CombinedOutput(); err != nil {
		b.Fatalf("building the libcmap client: %v\n%s", err, out)
	}
	corosync, _ := exec.LookPath("corosync")
	bin := buildBinary(b)
	dir := b.TempDir()
	tmpl, err := os.ReadFile(repoFile("tests", "e2e", "testdata", "compare.conf"))
	if err != nil {
		b.Fatal(err)
	}
	conf := filepath.Join(dir, "node.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(string(tmpl), "@DIR@", dir)), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		b.Fatal(err)
	}
	script := `
C=` + shellQuote(client) + `
B=` + shellQuote(bin.path) + `
CONF=` + shellQuote(conf) + `
K=` + shellQuote(corosync) + `
ip link set lo up || exit 10
ready() { for i in $(seq 150); do "$C" check >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
gone() { for i in $(seq 100); do "$C" check >/dev/null 2>&1 || return 0; sleep 0.1; done; return 1; }
measure() {
	name=$1; shift
	"$@" > ` + shellQuote(dir) + `/$name.log 2>&1 &
	P=$!
	if ready; then echo "== $name"; "$C" bench 3; else echo "$name did not serve"; fi
	kill -TERM $P; wait $P
	gone || { echo "$name still serves after it stopped"; exit 11; }
}
measure component "$B" up -c "$CONF"
measure colocated "$B" up -c "$CONF" -o ipc.colocate=cmap
if [ -n "$K" ]; then measure corosync "$K" -f -c "$CONF"; fi
`
	b.ResetTimer()
	out, err := exec.Command("unshare", "--net", "bash", "-c", script).CombinedOutput()
	b.StopTimer()
	if err != nil {
		b.Fatalf("benchmark script: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`== (\w+)\nRESULT set_ops_per_s=(\d+) get_ops_per_s=(\d+)`)
	found := re.FindAllStringSubmatch(string(out), -1)
	if len(found) < 2 {
		b.Fatalf("no results in:\n%s", out)
	}
	for _, m := range found {
		set, _ := strconv.ParseFloat(m[2], 64)
		get, _ := strconv.ParseFloat(m[3], 64)
		b.ReportMetric(set, m[1]+"_sets/s")
		b.ReportMetric(get, m[1]+"_gets/s")
	}
	if corosync == "" {
		b.Log("corosync is not installed: no reference figures (apt-get install corosync)")
	}
	b.ReportMetric(0, "ns/op")
}
