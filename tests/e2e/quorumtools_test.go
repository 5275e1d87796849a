package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestQuorumToolsMatchCorosync runs Debian's corosync-quorumtool and
// corosync-cfgtool, and the corosync-cmapctl listings of the keys the
// quorum services keep, first against a real corosync and then against
// corobus, on one node with the same file, and compares what they printed
// section by section. The sequence changes votes and expected votes,
// reloads, kills an unknown node, and ends with `corosync-cfgtool -H`,
// which must stop each daemon.
//
// What differs by nature is normalized before comparing, and only that:
// the Date line, the ring sequence of "Ring ID" (corobus continues the
// sequence corosync left in the shared state directory), and counter and
// runtime.config values (key names and types are compared; corobus's
// token is 1000 ms where corosync's is 3000, docs/configuration.md).
// Keys of services corobus does not have (cpg, pload, mon, wd) and the
// knet-only totem.interface.0.bindnetaddr corosync adds are filtered out
// of the listings.
func TestQuorumToolsMatchCorosync(t *testing.T) {
	paths := requireRealClients(t, "quorum tools against a real corosync",
		needs{commands: []string{"corosync", "corosync-quorumtool", "corosync-cfgtool", "corosync-cmapctl"}})
	corosync := paths[0]
	b := buildBinary(t)
	dir := t.TempDir()
	conf := oneNodeConf(t, dir)
	script := `
D=` + shellQuote(dir) + `
CONF=` + shellQuote(conf) + `
K=` + shellQuote(corosync) + `
B=` + shellQuote(b.path) + `
ip link set lo up || exit 10
# A /run of its own: corosync locks /run/corosync.pid, which a corosync
# elsewhere on the machine may hold.
mount -t tmpfs tmpfs /run || exit 10
run() { echo "== $*"; timeout 20 "$@" 2>&1; echo "rc=$?"; }
keys() { echo "== cmapctl $1 (keys)"; corosync-cmapctl "$1" | grep -Ev "$2" | sed 's/ = .*//'; }
vals() { echo "== cmapctl $1"; corosync-cmapctl "$1" | grep -Ev "$2"; }
answers() { timeout 2 corosync-quorumtool -s >/dev/null 2>&1; r=$?; [ $r -eq 0 ] || [ $r -eq 2 ]; }
sequence() {
	run corosync-quorumtool -s
	run corosync-quorumtool -l
	run corosync-quorumtool -p -s
	run corosync-quorumtool -l -i
	run corosync-quorumtool -l -H
	run corosync-quorumtool -l -o i
	run corosync-cfgtool -s
	run corosync-cfgtool -b -s
	run corosync-cfgtool -n
	run corosync-cfgtool -a 1
	run corosync-cfgtool -a 7
	run corosync-quorumtool -e 2
	run corosync-quorumtool -e 1
	run corosync-quorumtool -v 2
	run corosync-quorumtool -s
	run corosync-quorumtool -v 1 -n 1
	run corosync-quorumtool -v 1 -n 7
	run corosync-quorumtool -e 3
	run corosync-quorumtool -l
	run corosync-cfgtool -R
	run corosync-cfgtool -k 7
	run corosync-cfgtool -L
	vals runtime.votequorum. '^$'
	vals quorum. '^$'
	vals logging. '^$'
	vals nodelist. '^$'
	vals totem. 'bindnetaddr'
	vals config. '^$'
	vals internal_configuration. 'service\.(2|4|6|7)\.'
	keys runtime.services. '^runtime\.services\.(cmap|cpg|pload|mon|wd)\.'
	vals runtime.services. '^runtime\.services\.(cmap|cpg|pload|mon|wd)\.|\.(rx|tx) '
	# corobus's totem uses token, join and consensus; corosync also lists
	# its knet and totemsrp tuning, which has no meaning on the bus.
	echo "== cmapctl runtime.config.totem. (keys)"
	corosync-cmapctl runtime.config.totem. | grep -E '\.(token|join|consensus) \(' | sed 's/ = .*//'
	run corosync-cfgtool -H
}

# daemon P: waits for it to leave after cfgtool -H, and says so.
gone() {
	for i in $(seq 150); do kill -0 $1 2>/dev/null || { echo "== daemon stopped"; return 0; }; sleep 0.1; done
	echo "== daemon still running after corosync-cfgtool -H"; kill -TERM $1; return 1
}

"$K" -f -c "$CONF" > "$D/corosync.out" 2>&1 &
P=$!
for i in $(seq 100); do answers && break; kill -0 $P 2>/dev/null || break; sleep 0.1; done
if ! answers; then echo "corosync did not answer"; kill -TERM $P; wait $P; exit 11; fi
sequence > "$D/corosync.txt"
gone $P >> "$D/corosync.txt"
wait $P

"$B" up -c "$CONF" > "$D/up.log" 2>&1 &
P=$!
for i in $(seq 150); do answers && break; kill -0 $P 2>/dev/null || break; sleep 0.2; done
if ! answers; then echo "corobus did not answer"; kill -TERM $P; wait $P; exit 13; fi
sequence > "$D/corobus.txt"
gone $P >> "$D/corobus.txt"
wait $P
echo "corobus up exit status $?"
exit 0
`
	out, err := runUnshare(t, 4*time.Minute, []string{"--net", "--mount"}, script)
	t.Logf("%s", out)
	logs := func() string {
		var s strings.Builder
		for _, f := range []string{"corosync.txt", "corobus.txt", "corosync.out", "up.log", "node.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			fmt.Fprintf(&s, "--- %s:\n%s\n", f, b)
		}
		return s.String()
	}
	if err != nil {
		t.Fatalf("script failed: %v\n%s", err, logs())
	}
	if !strings.Contains(string(out), "corobus up exit status 0") {
		t.Errorf("corobus up did not exit 0 after corosync-cfgtool -H")
	}
	want, err1 := os.ReadFile(filepath.Join(dir, "corosync.txt"))
	got, err2 := os.ReadFile(filepath.Join(dir, "corobus.txt"))
	if err1 != nil || err2 != nil {
		t.Fatalf("missing output: %v %v\n%s", err1, err2, logs())
	}
	t.Logf("the tools against corosync:\n%s", want)
	compareSections(t, normalizeTools(string(want)), normalizeTools(string(got)))
	if t.Failed() {
		t.Logf("logs:\n%s", logs())
	}
}

var (
	dateLine   = regexp.MustCompile(`(?m)^Date: .*$`)
	ringIDLine = regexp.MustCompile(`(?m)^(Ring ID: +[0-9a-f]+)\.[0-9a-f]+$`)
)

// normalizeTools blanks what differs between any two runs of the tools.
func normalizeTools(s string) string {
	s = dateLine.ReplaceAllString(s, "Date: (the date)")
	return ringIDLine.ReplaceAllString(s, "$1.(seq)")
}

// compareSections compares two transcripts split at their "== command"
// markers, section by section, in order.
func compareSections(t *testing.T, want, got string) {
	t.Helper()
	ws, gs := sections(want), sections(got)
	if len(ws) != len(gs) {
		t.Errorf("corosync's transcript has %d sections, corobus's %d", len(ws), len(gs))
	}
	for i := 0; i < len(ws) && i < len(gs); i++ {
		w, g := ws[i], gs[i]
		if w.name != g.name {
			t.Fatalf("section %d is %q with corosync but %q with corobus: the sequences diverged", i, w.name, g.name)
		}
		if w.body != g.body {
			t.Errorf("%s: output differs\n--- corosync\n+++ corobus\n%s", w.name, lineDiff(w.body, g.body))
		}
	}
}
