package e2e

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCmapThroughGateway measures one synchronous libcmap client
// (testdata/cmapclient.c in bench mode: u32 sets, then gets) against the
// same one-node configuration served five ways, one after the other in
// one network namespace: corobus with cmap as its own component process
// (ipc.colocate=none) and with cmap colocated in the gateway (the
// default), each over libqb's shm and socket transports, and a real
// corosync when it is installed. The
// figures are reported as metrics; the work does not scale with b.N, so
// run it once:
//
//	go test ./tests/e2e -run '^$' -bench CmapThroughGateway -benchtime 1x
func BenchmarkCmapThroughGateway(b *testing.B) {
	requireRealClients(b, "libcmap benchmark", needs{headers: []string{"corosync/cmap.h"}})
	client := buildCmapClient(b)
	corosync, _ := exec.LookPath("corosync")
	bin := buildBinary(b)
	dir := b.TempDir()
	conf := oneNodeConf(b, dir)
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
for TR in shm socket; do
measure component_$TR "$B" up -c "$CONF" -o ipc.colocate=none -o ipc.transport=$TR
measure colocated_$TR "$B" up -c "$CONF" -o ipc.colocate=cmap -o ipc.transport=$TR
done
if [ -n "$K" ]; then measure corosync "$K" -f -c "$CONF"; fi
`
	b.ResetTimer()
	out, err := runInNetns(b, 15*time.Minute, script)
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
