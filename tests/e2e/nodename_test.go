package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeNamedByItsNodelistName starts a node whose nodelist entry is
// named "alpha": its log lines and `corobus status` call it alpha, not
// node1 (they said node1 whatever the nodelist said). `corobus status`
// without -c finds that node (it loaded the embedded default, whose
// cluster is another).
func TestNodeNamedByItsNodelistName(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "a node named in its nodelist", needs{commands: []string{"corosync-cfgtool"}})
	dir := t.TempDir()
	b := buildBinary(t)
	conf := oneNodeConf(t, dir)
	body, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(strings.Replace(string(body), "name: node1", "name: alpha", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	script := nodeUpShell(dir, conf, b) + `for i in $(seq 100); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.2; done
"$B" status -c "$CONF" > "$D/status.txt" 2>&1
echo "== status"; cat "$D/status.txt"
echo "== status without -c"; "$B" status 2>&1 | head -1
kill -TERM $P; wait $P; echo "== up exit status $?"
`
	out, err := runInNetns(t, 2*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	log, _ := os.ReadFile(filepath.Join(dir, "node.log"))
	if err != nil {
		t.Fatalf("script failed: %v\n%s", err, log)
	}
	if !strings.Contains(got, `Node 1 (alpha) of cluster "cmpcluster"`) {
		t.Errorf("corobus status does not call the node alpha")
	}
	// Without -c, status finds the node running here (as corosync's
	// tools find theirs), not the embedded default's.
	if _, after, _ := strings.Cut(got, "== status without -c"); !strings.Contains(after, `Node 1 (alpha) of cluster "cmpcluster"`) {
		t.Errorf("corobus status without -c did not find the running node:\n%s", after)
	}
	if !strings.Contains(string(log), "] alpha objdb ") || strings.Contains(string(log), "] node1 ") {
		t.Errorf("the log lines do not call the node alpha:\n%s", log)
	}
}
