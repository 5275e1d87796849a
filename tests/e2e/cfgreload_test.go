package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCfgReload changes a running node's file and reloads it with
// corosync-cfgtool -R: a change corobus applies at run time (the nodelist's
// quorum_votes, quorum.expected_votes) is in cmap and acted on by
// votequorum when the tool says Done; a new totem.token is run by the
// node's totem (runtime.config.totem.*), as corosync applies it, and so is
// a totem.token a client writes; totem timings that do not go together
// make the reload fail with CS_ERR_INVALID_PARAM, the reason in the node's
// log, and nothing changes; a key removed from the file is removed from
// cmap, and a timing goes back to its default.
func TestCfgReload(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "corosync-cfgtool -R against corobus",
		needs{commands: []string{"corosync-cfgtool", "corosync-quorumtool", "corosync-cmapctl"}})
	b := buildBinary(t)
	dir := t.TempDir()
	conf := oneNodeConf(t, dir)
	withQuorum := votequorumConf(t, conf)
	withToken := strings.Replace(withQuorum, "version: 2", "version: 2\n    token: 4000", 1)
	badTimings := strings.Replace(withToken, "token: 4000", "token: 4000\n    consensus: 1000", 1)
	writeFiles(t, dir, map[string]string{"quorum.conf": withQuorum, "token.conf": withToken, "bad.conf": badTimings})
	script := nodeUpShell(dir, conf, b) + `trap 'kill -TERM $P; wait $P' EXIT
for i in $(seq 150); do corosync-quorumtool -s >/dev/null 2>&1 && break; sleep 0.2; done
q() { corosync-quorumtool -s | grep -E '^(Quorate|Expected votes|Quorum):'; }
# The objdb layer hands the totem its new timings once the reload is done
# (or a client's write is in its copy): up to 5 s for that, then the key.
rt() { for i in $(seq 100); do corosync-cmapctl -g runtime.config.totem.token | grep -q "= $1\$" && break; sleep 0.05; done; corosync-cmapctl -g runtime.config.totem.token; }
echo "== before"; q; corosync-cmapctl -g quorum.expected_votes 2>&1
cp "$D/quorum.conf" "$CONF"
echo "== reload quorum"; corosync-cfgtool -R 2>&1; echo "rc=$?"
q; corosync-cmapctl -g quorum.expected_votes; corosync-cmapctl -g quorum.wait_for_all
cp "$D/token.conf" "$CONF"
echo "== reload token"; corosync-cfgtool -R 2>&1; echo "rc=$?"
corosync-cmapctl -g totem.token 2>&1; corosync-cmapctl -g config.reload_status; rt 4000
cp "$D/bad.conf" "$CONF"
echo "== reload bad timings"; corosync-cfgtool -R 2>&1; echo "rc=$?"
corosync-cmapctl -g totem.consensus 2>&1; corosync-cmapctl -g config.reload_status; rt 4000
echo "== reload back"; cp "$D/quorum.conf" "$CONF"; sed -i '/expected_votes: 3/d; /wait_for_all: 0/d' "$CONF"
corosync-cfgtool -R 2>&1; echo "rc=$?"
q; corosync-cmapctl -g quorum.expected_votes 2>&1; corosync-cmapctl -g quorum.wait_for_all 2>&1; rt 1000
echo "== a client sets totem.token"; corosync-cmapctl -s totem.token u32 5000; rt 5000
echo "== reload after a client set totem.token"
corosync-cfgtool -R 2>&1; echo "rc=$?"
# Read at once: the gateway answered the reload once its own copy had
# the reload's writes (docs/objdb.md, "Read your writes through the
# gateway"), as corosync's one process has them.
corosync-cmapctl -g totem.token 2>&1; rt 1000
echo "== reload logging"; sed -i "s#logfile: $D/node.log#logfile: $D/reloaded.log#; s#timestamp: hires#timestamp: off#" "$CONF"
corosync-cfgtool -R 2>&1; echo "rc=$?"
corosync-cmapctl -g logging.timestamp
true
`
	out, err := runInNetns(t, 3*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	nodeLog, _ := os.ReadFile(filepath.Join(dir, "node.log"))
	if err != nil {
		t.Fatalf("script failed: %v\n%s", err, nodeLog)
	}
	for _, want := range []string{
		"== before\nQuorate:          Yes\nExpected votes:   1\nQuorum:           1  \nCan't get key quorum.expected_votes. Error CS_ERR_NOT_EXIST\n",
		// Applied, and votequorum acted on it before the tool said Done.
		"== reload quorum\nReloading corosync.conf...\nDone\nrc=0\nQuorate:          No\nExpected votes:   3\nQuorum:           2 Activity blocked\nquorum.expected_votes (u32) = 3\nquorum.wait_for_all (u8) = 0\n",
		// Applied: the key, and what the totem runs.
		"== reload token\nReloading corosync.conf...\nDone\nrc=0\ntotem.token (u32) = 4000\nconfig.reload_status (i32) = 1\nruntime.config.totem.token (u32) = 4000\n",
		// Refused, and nothing changed. (The tool's stdout is a pipe: its
		// lines come after its stderr's.)
		"== reload bad timings\nCould not reload configuration. Error CS_ERR_INVALID_PARAM\nReloading corosync.conf...\nrc=7\nCan't get key totem.consensus. Error CS_ERR_NOT_EXIST\nconfig.reload_status (i32) = 7\nruntime.config.totem.token (u32) = 4000\n",
		// Removed from the file, removed from cmap; quorum back, and the
		// token back to its default.
		"Done\nrc=0\nQuorate:          Yes\nExpected votes:   1\nQuorum:           1  \nCan't get key quorum.expected_votes. Error CS_ERR_NOT_EXIST\nCan't get key quorum.wait_for_all. Error CS_ERR_NOT_EXIST\nruntime.config.totem.token (u32) = 1000\n",
		// A client's write is run at once, as corosync runs it.
		"== a client sets totem.token\nruntime.config.totem.token (u32) = 5000\n",
		// The file has no totem.token: the key goes, the default runs.
		"== reload after a client set totem.token\nReloading corosync.conf...\nDone\nrc=0\nCan't get key totem.token. Error CS_ERR_NOT_EXIST\nruntime.config.totem.token (u32) = 1000\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks:\n%s", want)
		}
	}
	if !strings.Contains(string(nodeLog), "the new totem timings: totem.consensus 1s: at least half of totem.token 4s") {
		t.Errorf("the node's log does not give the reason of the refusal:\n%s", nodeLog)
	}
	// A new logging section is applied by every process at once, as
	// corosync applies its own: the new file, without timestamps.
	if want := "== reload logging\nReloading corosync.conf...\nDone\nrc=0\nlogging.timestamp (str) = off\n"; !strings.Contains(got, want) {
		t.Errorf("output lacks:\n%s", want)
	}
	reloaded, _ := os.ReadFile(filepath.Join(dir, "reloaded.log"))
	m := regexp.MustCompile(`(?m)^\[\d+\] node1 cfg\s+info\s+\[\S+\s*\] logging section applied by the node's processes processes=(\d+)$`).FindSubmatch(reloaded)
	if m == nil {
		t.Fatalf("the new log file lacks cfg's untimestamped line saying the processes applied the section:\n%s", reloaded)
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 6 {
		t.Errorf("%d processes applied the logging section, want every layer and service (6 or more)", n)
	}
	// corobus up, which supervises the layers, follows the new section
	// too: its last line, when the script stops it, is in the new file.
	if !regexp.MustCompile(`(?m)^\[\d+\] node1 up\s+info\s+\[MAIN\s*\] node stopped`).Match(reloaded) {
		t.Errorf("the new log file lacks up's untimestamped line saying the node stopped:\n%s", reloaded)
	}
}
