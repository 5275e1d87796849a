package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFullDisk (issue 17 item 4): a node whose state directory fills up
// refuses writes with a message that says so — no space, not a quorum
// problem — and goes on serving reads; restarted on the full disk, it comes
// up, serves reads, says why writes fail, and does not loop on its own
// start-up writes. The state directory is a small tmpfs mounted in a
// private mount namespace (root only).
func TestFullDisk(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test mounts a small tmpfs in a private mount namespace")
	}
	if err := exec.Command("unshare", "--mount", "--net", "true").Run(); err != nil {
		t.Skipf("cannot make a private mount and network namespace (unshare): %v", err)
	}
	b := buildBinary(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o750); err != nil {
		t.Fatal(err)
	}
	// Each step prints a marker line, then the verb's output: the test
	// reads the transcript. The node runs the embedded default with its
	// state on the tmpfs.
	script := `
set -u
B="$1"; S="$2"; D="$3"
export XDG_STATE_HOME="$S"
ip link set lo up
mount -t tmpfs -o size=24m tmpfs "$S" || { echo "MOUNT FAILED"; exit 10; }
up() { "$B" up > "$D/up$1.log" 2>&1 & P=$!; }
stop() { kill -TERM $P; wait $P; }
waitget() { for i in $(seq 150); do "$B" cmap -g test.a >/dev/null 2>&1 && return 0; kill -0 $P 2>/dev/null || return 1; sleep 0.2; done; return 1; }
up 1
for i in $(seq 150); do "$B" cmap -s test.a u32 1 >/dev/null 2>&1 && break; kill -0 $P 2>/dev/null || break; sleep 0.2; done
echo "=== before"; "$B" cmap -g test.a 2>&1
dd if=/dev/zero of="$S/filler" bs=1M count=64 >/dev/null 2>&1
echo "=== df"; df -B1 --output=avail "$S" | tail -1
# The first writes may still fit in a page JetStream's block has; then
# none does (each value is 2 KiB).
big=$(head -c 2048 /dev/zero | tr '\0' x)
for i in $(seq 40); do
	out=$("$B" cmap -s test.full.$i str "$big" 2>&1) || { echo "=== refused"; echo "$out"; break; }
done
echo "=== read on the full disk"; "$B" cmap -g test.a 2>&1
stop
echo "=== restart"
up 2
waitget || echo "NO READS AFTER RESTART"
sleep 3
echo "=== read after restart"; "$B" cmap -g test.a 2>&1
echo "=== write after restart"; "$B" cmap -s test.after u32 9 2>&1
echo "=== status"; "$B" status --json 2>&1
stop
exit 0
`
	out, err := runUnshare(t, 4*time.Minute, []string{"--mount", "--net"}, script, "bash", b.path, state, dir)
	logs := func() string {
		var s strings.Builder
		for _, f := range []string{"up1.log", "up2.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			s.WriteString("--- " + f + ":\n" + string(b) + "\n")
		}
		return s.String()
	}
	if err != nil {
		t.Fatalf("script: %v\n%s\n%s", err, out, logs())
	}
	sections := map[string]string{}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(line, "=== "); ok {
			cur = name
			continue
		}
		sections[cur] += line + "\n"
	}
	t.Logf("transcript:\n%s", out)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format+"\n%s", append(args, logs())...)
	}
	if !strings.Contains(sections["before"], "test.a (u32) = 1") {
		t.Fatalf("the node did not serve before the disk filled:\n%s\n%s", out, logs())
	}
	if free, _ := strconv.Atoi(strings.TrimSpace(sections["df"])); free > 1<<20 {
		t.Fatalf("the tmpfs did not fill: %d bytes free", free)
	}
	refused := sections["refused"]
	switch {
	case refused == "":
		fail("no write was refused on the full disk:\n%s", out)
	case !strings.Contains(refused, "no space") || !strings.Contains(refused, "CS_ERR_NO_SPACE"):
		fail("the refusal does not say no space: %q", refused)
	case strings.Contains(refused, "partitioned"):
		fail("the refusal blames the cluster: %q", refused)
	}
	if !strings.Contains(sections["read on the full disk"], "test.a (u32) = 1") {
		fail("no read on the full disk: %q", sections["read on the full disk"])
	}
	if strings.Contains(string(out), "NO READS AFTER RESTART") || !strings.Contains(sections["read after restart"], "test.a (u32) = 1") {
		fail("the node restarted on the full disk does not serve reads: %q", sections["read after restart"])
	}
	if w := sections["write after restart"]; !strings.Contains(w, "no space") {
		fail("a write after the restart does not say no space: %q", w)
	}
	up2, _ := os.ReadFile(filepath.Join(dir, "up2.log"))
	if !strings.Contains(string(up2), "no space") {
		fail("the restarted node does not say why writes fail")
	}
	if strings.Contains(string(up2), "restarting") {
		fail("a layer of the restarted node loops")
	}
	if n := strings.Count(string(up2), "not available yet; retrying"); n > 0 {
		fail("the restarted node retries its start-up %d times", n)
	}
}
