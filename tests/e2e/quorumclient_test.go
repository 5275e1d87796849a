package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuorumClientShutdownNegotiation builds testdata/quorumclient.c, a
// program of our own against libquorum, libvotequorum and libcfg, and
// runs it against a one-node corobus: it tracks quorum, membership and
// expected votes, and registers for the shutdown callback. The first
// `corosync-cfgtool -H` is refused by it (the tool reports CS_ERR_BUSY,
// 10, and the node keeps running); the second is accepted and stops the
// node, which the client sees. Meanwhile `corobus cfg` and `corobus quorum`
// follow the events on the bus subjects.
func TestQuorumClientShutdownNegotiation(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "a libquorum/libvotequorum/libcfg client",
		needs{commands: []string{"corosync-cfgtool", "corosync-quorumtool", "gcc"},
			headers: []string{"corosync/quorum.h", "corosync/votequorum.h", "corosync/cfg.h"}})
	dir := t.TempDir()
	client := buildQuorumClient(t, dir)
	b := buildBinary(t)
	conf := oneNodeConf(t, dir)
	script := nodeUpShell(dir, conf, b) + `C=` + shellQuote(client) + `
for i in $(seq 150); do corosync-quorumtool -s >/dev/null 2>&1 && break; sleep 0.2; done
"$B" cfg -c "$CONF" --events > "$D/events.txt" 2>&1 &
E=$!
"$B" quorum -c "$CONF" -m --json > "$D/monitor.txt" 2>&1 &
M=$!
"$C" > "$D/client.txt" 2>&1 &
Q=$!
for i in $(seq 100); do grep -q ready "$D/client.txt" && break; sleep 0.1; done
echo "== -v 2"; corosync-quorumtool -v 2; echo "rc=$?"
for i in $(seq 50); do grep -q 'vq-expected.*expected=2' "$D/client.txt" && break; sleep 0.1; done
echo "== first -H"; corosync-cfgtool -H 2>&1; echo "rc=$?"
sleep 1
kill -0 $P && echo "== node still running"
echo "== second -H"; corosync-cfgtool -H 2>&1; echo "rc=$?"
for i in $(seq 150); do kill -0 $P 2>/dev/null || break; sleep 0.2; done
if kill -0 $P 2>/dev/null; then echo "== node did not stop"; kill -TERM $P; fi
wait $P; echo "== up exit status $?"
for i in $(seq 50); do kill -0 $Q 2>/dev/null || break; sleep 0.1; done
kill $Q 2>/dev/null; wait $Q; echo "== client exit status $?"
kill $E $M 2>/dev/null; wait $E $M
echo "== client"; cat "$D/client.txt"
echo "== events"; cat "$D/events.txt"
echo "== monitor"; cat "$D/monitor.txt"
`
	out, err := runInNetns(t, 3*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s", err, log)
	}
	if !strings.Contains(got, "== first -H") || !strings.Contains(got, "== second -H") {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("the sequence did not run through\n%s", log)
	}
	// The tool's stdout is a pipe, so its lines come after its stderr's.
	first, _, _ := strings.Cut(got[strings.Index(got, "== first -H"):], "== node")
	if !strings.Contains(first, "Could not shutdown (error = 10)") {
		t.Errorf("the first corosync-cfgtool -H was not refused with CS_ERR_BUSY (10):\n%s", first)
	}
	second, _, _ := strings.Cut(got[strings.Index(got, "== second -H"):], "== up")
	if strings.Contains(second, "Could not shutdown") {
		t.Errorf("the second corosync-cfgtool -H failed:\n%s", second)
	}
	// corobus quorum -m printed the status at once (it prints again on a
	// quorum notification, as corosync-quorumtool -m: tests/quorum).
	if mon := got[strings.Index(got, "== monitor"):]; !strings.Contains(mon, `"quorate":true`) {
		t.Errorf("corobus quorum -m --json did not print the status:\n%s", mon)
	}
	for _, want := range []string{
		"== node still running\n",
		"== up exit status 0\n",
		"== client exit status 0\n",
		// The client's view: registered, told the current state, told
		// of the new votes, asked twice.
		"ready quorate=1 local=1\n",
		"nodelist ring=",
		"quorum quorate=1 ring=",
		"vq-nodelist context=4660 ring=",
		"vq-quorum quorate=1 context=4660 nodes=1:1\n",
		"vq-expected context=4660 expected=2\n",
		"shutdown flags=0 -> no\n",
		"shutdown flags=0 -> yes\n",
		"closed\n",
		// The negotiation on the bus.
		`"phase":"requested"`,
		`"phase":"cancelled"`,
		`"phase":"confirmed"`,
		`"phase":"shutdown"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestShutdownNegotiationAcrossCfgInstances runs a second cfg instance
// beside the node's own (`corobus service cfg` started by hand, as the
// layer's help says to scale it; a live replacement has two for a while
// too), a quorumclient that refuses every shutdown (QC_REFUSE, a
// Pacemaker with resources) and then corosync-cfgtool -H ten times. The
// gateway opens each connection on either instance, whichever the bus's
// queue group picks: every -H must be refused with CS_ERR_BUSY and the
// node keep running, whichever instance took the tool's connection and
// whichever holds the client's. Before the instances asked each other, an
// -H that reached the instance without the client stopped the node.
//
// cfg.shutdown_timeout is set to 60 s first: each -H is answered on the
// client's refusal, not at the timeout, or the ten would outlast the
// script's three minutes. Before the asked instance's verdict went on
// cfgpeers (the bus takes one answer to a request), an -H that reached
// the instance without the client waited for the timeout plus 2 s.
func TestShutdownNegotiationAcrossCfgInstances(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "a libcfg client beside two cfg instances",
		needs{commands: []string{"corosync-cfgtool", "corosync-quorumtool", "gcc"},
			headers: []string{"corosync/quorum.h", "corosync/votequorum.h", "corosync/cfg.h"}})
	dir := t.TempDir()
	client := buildQuorumClient(t, dir)
	b := buildBinary(t)
	conf := oneNodeConf(t, dir)
	script := nodeUpShell(dir, conf, b) + `C=` + shellQuote(client) + `
for i in $(seq 150); do corosync-quorumtool -s >/dev/null 2>&1 && break; sleep 0.2; done
corosync-cmapctl -s cfg.shutdown_timeout u32 60000
corosync-cmapctl -g cfg.shutdown_timeout
"$B" service cfg -c "$CONF" > "$D/cfg2.log" 2>&1 &
S=$!
for i in $(seq 100); do "$B" lcr -c "$CONF" | grep -q '^cfg .*/serving .*/serving' && break; sleep 0.2; done
"$B" lcr -c "$CONF" | grep '^cfg '
QC_REFUSE=1 "$C" > "$D/client.txt" 2>&1 &
Q=$!
for i in $(seq 100); do grep -q ready "$D/client.txt" && break; sleep 0.1; done
for i in $(seq 10); do
	echo "== -H $i"; corosync-cfgtool -H 2>&1; echo "rc=$?"
	kill -0 $P 2>/dev/null || { echo "== node stopped"; break; }
done
sleep 1
kill -0 $P 2>/dev/null && echo "== node still running"
kill $Q $S 2>/dev/null; wait $Q $S
kill -TERM $P 2>/dev/null; wait $P
echo "== client"; cat "$D/client.txt"
`
	out, err := runInNetns(t, 3*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s", err, log)
	}
	if !strings.Contains(got, "== node still running\n") {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("corosync-cfgtool -H stopped the node under a client that refused:\n%s", log)
	}
	if !strings.Contains(got, "cfg.shutdown_timeout (u32) = 60000\n") {
		t.Errorf("cfg.shutdown_timeout was not set to 60000 ms")
	}
	if n := strings.Count(got, "Could not shutdown (error = 10)"); n != 10 {
		t.Errorf("%d of 10 corosync-cfgtool -H were refused with CS_ERR_BUSY (10)", n)
	}
	if n := strings.Count(got, "shutdown flags=0 -> no\n"); n != 10 {
		t.Errorf("the client was asked %d times, not 10", n)
	}
}

// TestToolsRightAfterUp runs corosync-quorumtool -s and corosync-cfgtool
// -s the moment corosync-cmapctl first answers after `corobus up`, as a
// script that waits for the node would. corosync takes no connection
// before all its services are loaded, so a tool that found cmap finds cfg
// and votequorum too; corobus's gateway now waits (a few seconds at
// most) for a service the node loads and has not started yet. Before, it
// refused at once: "Cannot initialise CFG service" (seen on every try).
func TestToolsRightAfterUp(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireRealClients(t, "corosync's tools right after up",
		needs{commands: []string{"corosync-cmapctl", "corosync-cfgtool", "corosync-quorumtool"}})
	dir := t.TempDir()
	b := buildBinary(t)
	conf := oneNodeConf(t, dir)
	script := nodeUpShell(dir, conf, b) + `for i in $(seq 600); do corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1 && break; sleep 0.05; done
echo "== quorumtool"; corosync-quorumtool -s 2>&1; echo "rc=$?"
echo "== cfgtool"; corosync-cfgtool -s 2>&1; echo "rc=$?"
kill -TERM $P; wait $P; echo "== up exit status $?"
`
	out, err := runInNetns(t, 2*time.Minute, script)
	got := string(out)
	t.Logf("%s", got)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		t.Fatalf("script failed: %v\n%s", err, log)
	}
	for _, bad := range []string{"Cannot initialise", "Cannot initialize"} {
		if strings.Contains(got, bad) {
			t.Errorf("a tool could not connect right after cmap answered (%q)", bad)
		}
	}
	for _, want := range []string{"Quorum information", "Local node ID 1", "== up exit status 0"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// buildQuorumClient builds testdata/quorumclient.c (libquorum,
// libvotequorum, libcfg) into dir.
func buildQuorumClient(t testing.TB, dir string) string {
	t.Helper()
	client := filepath.Join(dir, "quorumclient")
	if out, err := exec.Command("gcc", "-Wall", "-O2", "-o", client, repoFile("tests", "e2e", "testdata", "quorumclient.c"),
		"-lquorum", "-lvotequorum", "-lcfg").CombinedOutput(); err != nil {
		t.Fatalf("building the client: %v\n%s", err, out)
	}
	return client
}
