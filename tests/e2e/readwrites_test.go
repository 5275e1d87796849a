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

// TestRequestThenRead runs, many times over, what an administrator types
// in a shell: a request answered through the node's gateway, then at once
// a read of what it wrote. corosync serves both in one process, so a
// client that saw the request answered reads its writes; corobus's
// services write through the objdb process and the node's keeper, and the
// gateway's copy, which serves the read, had them a feed hop later
// (docs/objdb.md, "Read your writes through the gateway"):
//
//   - corosync-cfgtool -R refused (rc 7), then
//     corosync-cmapctl -g config.reload_status: 7, not the previous 1;
//   - corosync-cfgtool -R done, then the changed totem.token and a
//     reload_status of 1;
//   - corosync-quorumtool -e N, then runtime.votequorum.ev_barrier and
//     corosync-quorumtool -s's "Expected votes": N.
//
// Each round checks each read once; no timing is asserted.
func TestRequestThenRead(t *testing.T) {
	t.Parallel() // owns its namespace, processes and state: see the package comment
	requireRealClients(t, "request then read through the gateway",
		needs{commands: []string{"corosync-cfgtool", "corosync-quorumtool", "corosync-cmapctl"}})
	b := buildBinary(t)
	dir := t.TempDir()
	conf := oneNodeConf(t, dir)
	// Three expected votes with one node of one vote: not quorate, so
	// corosync-quorumtool -e may move expected_votes between 3 and 4.
	base := votequorumConf(t, conf)
	files := map[string]string{
		"token4000.conf": strings.Replace(base, "version: 2", "version: 2\n    token: 4000", 1),
		"token5000.conf": strings.Replace(base, "version: 2", "version: 2\n    token: 5000", 1),
		// consensus below token's half: refused, CS_ERR_INVALID_PARAM.
		"bad.conf": strings.Replace(base, "version: 2", "version: 2\n    token: 4000\n    consensus: 1000", 1),
	}
	writeFiles(t, dir, files)
	if err := os.WriteFile(conf, []byte(files["token4000.conf"]), 0o644); err != nil {
		t.Fatal(err)
	}
	const rounds = 25
	script := nodeUpShell(dir, conf, b) + `trap 'kill -TERM $P; wait $P' EXIT
for i in $(seq 150); do corosync-quorumtool -s >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq ` + fmt.Sprint(rounds) + `); do
  cp "$D/bad.conf" "$CONF"; corosync-cfgtool -R >/dev/null 2>&1; rc=$?
  echo "bad rc=$rc $(corosync-cmapctl -g config.reload_status 2>&1)"
  tok=$((4000 + 1000 * (i % 2)))
  cp "$D/token$tok.conf" "$CONF"; corosync-cfgtool -R >/dev/null 2>&1; rc=$?
  echo "good $tok rc=$rc $(corosync-cmapctl -g config.reload_status 2>&1) / $(corosync-cmapctl -g totem.token 2>&1)"
  ev=$((3 + i % 2))
  corosync-quorumtool -e $ev >/dev/null 2>&1; rc=$?
  echo "ev $ev rc=$rc $(corosync-cmapctl -g runtime.votequorum.ev_barrier 2>&1) / $(corosync-quorumtool -s | grep '^Expected votes')"
done
true
`
	out, err := runInNetns(t, 5*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	if err != nil {
		nodeLog, _ := os.ReadFile(filepath.Join(dir, "node.log"))
		t.Fatalf("script failed: %v\n%s", err, nodeLog)
	}
	bad := regexp.MustCompile(`(?m)^bad rc=(\d+) (.*)$`).FindAllStringSubmatch(got, -1)
	good := regexp.MustCompile(`(?m)^good (\d+) rc=(\d+) (.*)$`).FindAllStringSubmatch(got, -1)
	ev := regexp.MustCompile(`(?m)^ev (\d+) rc=(\d+) (.*)$`).FindAllStringSubmatch(got, -1)
	if len(bad) != rounds || len(good) != rounds || len(ev) != rounds {
		t.Fatalf("%d, %d and %d rounds of refused reloads, reloads and expected votes, want %d each", len(bad), len(good), len(ev), rounds)
	}
	stale := map[string]int{}
	for _, m := range bad {
		if m[1] != "7" {
			t.Errorf("a refused reload: rc=%s, want 7", m[1])
		}
		if m[2] != "config.reload_status (i32) = 7" {
			stale["config.reload_status after a refused reload"]++
		}
	}
	for _, m := range good {
		if m[2] != "0" {
			t.Errorf("a reload: rc=%s, want 0", m[2])
		}
		if want := "config.reload_status (i32) = 1 / totem.token (u32) = " + m[1]; m[3] != want {
			stale["config.reload_status and totem.token after a reload"]++
			t.Logf("after a reload to token %s: %s", m[1], m[3])
		}
	}
	for _, m := range ev {
		if m[2] != "0" {
			t.Errorf("corosync-quorumtool -e %s: rc=%s, want 0", m[1], m[2])
		}
		want := fmt.Sprintf("runtime.votequorum.ev_barrier (u32) = %s / Expected votes:   %s", m[1], m[1])
		if m[3] != want {
			stale["ev_barrier and Expected votes after corosync-quorumtool -e"]++
			t.Logf("after -e %s: %s", m[1], m[3])
		}
	}
	for what, n := range stale {
		t.Errorf("%s: %d of %d reads did not see the request's writes", what, n, rounds)
	}
}
