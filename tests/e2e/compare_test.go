package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCmapctlMatchesCorosync runs one command sequence of Debian's
// corosync-cmapctl twice with the same configuration file: first against a
// real corosync, then against corobus (once per libqb transport, shm and
// socket, the second run a restart on the same store), and compares what
// the client printed,
// section by section. The expected output is whatever corosync prints, not a
// transcription of it, so the test follows the installed corosync.
//
// Both daemons run one after the other in one fresh network namespace: the
// abstract socket names (cmap, …) cannot clash with a corosync on the host,
// and the second daemon gets the names the first one released. A fresh
// mount namespace gives them a /run of their own, for corosync's pid lock.
func TestCmapctlMatchesCorosync(t *testing.T) {
	paths := requireRealClients(t, "comparison with a real corosync", needs{commands: []string{"corosync", "corosync-cmapctl"}})
	corosync, cmapctl := paths[0], paths[1]
	b := buildBinary(t)
	dir := t.TempDir()
	conf := oneNodeConf(t, dir)

	// Every call goes through run: the section marker is the command line,
	// so a mismatch names the command, and stderr and the exit status are
	// part of what must match. timeout keeps a hung server from hanging the
	// test; it would show as rc=124.
	script := `
D=` + shellQuote(dir) + `
CONF=` + shellQuote(conf) + `
K=` + shellQuote(corosync) + `
C=` + shellQuote(cmapctl) + `
B=` + shellQuote(b.path) + `
ip link set lo up || exit 10
# A /run of its own: corosync locks /run/corosync.pid, which a corosync
# elsewhere on the machine may hold ("Another Corosync instance is already
# running").
mount -t tmpfs tmpfs /run || exit 10
run() { echo "== $*"; timeout 10 "$C" "$@" 2>&1; echo "rc=$?"; }
# A client of an unlisted uid, then listed under uidgid.uid.<n> at run time.
runas() { echo "== uid 4242: $*"; timeout 10 setpriv --reuid 4242 --regid 4242 --clear-groups "$C" "$@" 2>&1; echo "rc=$?"; }
answers() { timeout 2 "$C" -g totem.cluster_name >/dev/null 2>&1; }
sequence() {
	run -g totem.cluster_name
	run -g totem.transport
	run -g nodelist.node.0.ring0_addr
	run -g nodelist.node.0.nodeid
	run -g quorum.provider
	run -g logging.to_logfile
	run nodelist.
	run quorum.
	run totem.cluster_name
	# cmapctl reads its options with getopt, which takes a negative value
	# for an option unless -- ends them.
	run -s cmp.t.u8 u8 255;                        run -g cmp.t.u8
	run -s cmp.t.u16 u16 65535;                    run -g cmp.t.u16
	run -s cmp.t.u32 u32 4294967295;               run -g cmp.t.u32
	run -s cmp.t.u64 u64 18446744073709551615;     run -g cmp.t.u64
	run -s cmp.t.i8 i8 -- -128;                    run -g cmp.t.i8
	run -s cmp.t.i16 i16 -- -32768;                run -g cmp.t.i16
	run -s cmp.t.i32 i32 -- -2147483648;           run -g cmp.t.i32
	run -s cmp.t.i64 i64 -- -9223372036854775808;  run -g cmp.t.i64
	run -s cmp.t.flt flt 1.5;                      run -g cmp.t.flt
	run -s cmp.t.dbl dbl -- -2.25;                 run -g cmp.t.dbl
	run -s cmp.t.str str "hello world";            run -g cmp.t.str
	run -s cmp.t.zero u32 0;                       run -g cmp.t.zero
	run -s cmp.t.i8max i8 127;                     run -g cmp.t.i8max
	run -s cmp.t.i64max i64 9223372036854775807;   run -g cmp.t.i64max
	run -s cmp.t.empty str "";                     run -g cmp.t.empty
	run -s cmp.t.inf flt 1e40;                     run -g cmp.t.inf
	run -s cmp.t.nan dbl nan;                      run -g cmp.t.nan
	run -s cmp.t.wrap u64 -- -1;                   run -g cmp.t.wrap
	run -s cmp.bad u8 256
	run -s cmp.bad u8 abc
	run -s cmp.bad xx 1
	run -s cmp.bad i8 -- -129
	run -s cmp.bad u8 -- -1
	run -g cmp.bad
	# Bad names: corosync sets none (CS_ERR_NAME_TOO_LONG, whatever the
	# rule) and finds none (CS_ERR_NOT_EXIST).
	run -s ab u8 1
	run -s 'c!b' u8 1
	run -g ab
	run -g 'c!b'
	run -d ab
	run -d 'c b'
	run cmp.t.
	run cmp.t.u
	run -s cmp.t.u8 u16 300;                       run -g cmp.t.u8
	run -s cmp.t.u8 u8 7;                          run -g cmp.t.u8
	run -d cmp.t.str
	run -g cmp.t.str
	run -d cmp.t.str
	run -D cmp.t.
	run cmp.t.
	run -D cmp.t.
	run -g no.such.key
	run no.such.prefix.
	runas -g totem.cluster_name
	run -s uidgid.uid.4242 u8 1
	runas -g totem.cluster_name
	runas -s cmp.uid u8 1
	run -d uidgid.uid.4242
	runas -g totem.cluster_name
	# Last, as they would change the map if they were allowed.
	run -s nodelist.node.0.nodeid u32 9
	run -g nodelist.node.0.nodeid
	run -s totem.cluster_name str other
	run -d nodelist.node.0.nodeid
	run -D nodelist.
	run nodelist.
	run -g totem.cluster_name
}

"$K" -f -c "$CONF" > "$D/corosync.out" 2>&1 &
P=$!
for i in $(seq 100); do answers && break; kill -0 $P 2>/dev/null || break; sleep 0.1; done
if ! answers; then echo "corosync did not answer corosync-cmapctl"; kill -TERM $P; wait $P; exit 11; fi
echo "corosync answers"
sequence > "$D/corosync.txt"
kill -TERM $P; wait $P
echo "corosync exit status $?"
for i in $(seq 100); do answers || break; sleep 0.1; done
if answers; then echo "cmap still answers after corosync exited"; exit 12; fi
# corobus starts on the state_dir corosync just used: it reads corosync's
# ringid_<node> file and goes on from its ring sequence.

# Once per libqb transport, the second run a restart on the same store.
for TR in shm socket; do
"$B" up -c "$CONF" -o ipc.transport=$TR > "$D/up.$TR.log" 2>&1 &
P=$!
trap 'kill -TERM $P 2>/dev/null; wait $P' EXIT
for i in $(seq 100); do "$B" status -c "$CONF" 2>/dev/null | grep -q ipc && break; kill -0 $P 2>/dev/null || break; sleep 0.2; done
for i in $(seq 50); do answers && break; kill -0 $P 2>/dev/null || break; sleep 0.2; done
if ! answers; then echo "corobus ($TR) did not answer corosync-cmapctl"; exit 13; fi
echo "corobus ($TR) answers"
sequence > "$D/corobus.$TR.txt"
trap - EXIT
kill -TERM $P; wait $P
echo "corobus up ($TR) exit status $?"
for i in $(seq 100); do answers || break; sleep 0.1; done
if answers; then echo "cmap still answers after corobus up ($TR) exited"; exit 14; fi
done
exit 0
`
	start := time.Now()
	out, err := runUnshare(t, 180*time.Second, []string{"--net", "--mount"}, script)
	t.Logf("both runs took %s\n%s", time.Since(start).Round(100*time.Millisecond), out)
	// The transcripts are in the logs too: after a timeout, the last
	// section of one names the command that hung.
	logs := func() string {
		var s strings.Builder
		for _, f := range []string{"corosync.txt", "corobus.shm.txt", "corobus.socket.txt", "corosync.out", "node.log", "up.shm.log", "up.socket.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			fmt.Fprintf(&s, "--- %s:\n%s\n", f, b)
		}
		return s.String()
	}
	if err != nil {
		t.Fatalf("script failed: %v\n%s", err, logs())
	}
	want, err := os.ReadFile(filepath.Join(dir, "corosync.txt"))
	if err != nil {
		t.Fatalf("missing output: %v\n%s", err, logs())
	}
	// The transcript shows under -v what the comparison covered: a sequence
	// that failed the same way on both sides would compare equal.
	t.Logf("corosync-cmapctl against corosync:\n%s", want)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join(dir, "corobus."+tr+".txt"))
			if err != nil {
				t.Fatalf("missing output: %v", err)
			}
			ws, gs := sections(string(want)), sections(string(got))
			if len(ws) != len(gs) {
				t.Errorf("corosync printed %d sections, corobus %d", len(ws), len(gs))
			}
			for i := 0; i < len(ws) && i < len(gs); i++ {
				w, g := ws[i], gs[i]
				if w.name != g.name {
					t.Fatalf("section %d is %q with corosync but %q with corobus: the sequences diverged", i, w.name, g.name)
				}
				if w.body != g.body {
					t.Errorf("corosync-cmapctl %s: output differs\n--- corosync\n+++ corobus\n%s", w.name, lineDiff(w.body, g.body))
				}
			}
		})
	}
	if t.Failed() {
		t.Logf("daemon logs:\n%s", logs())
	}
}

type section struct{ name, body string }

// sections splits the sequence output at its "== command" markers, keeping
// the order: the commands change the map, so a section only means something
// in its place.
func sections(s string) []section {
	var out []section
	for _, line := range strings.SplitAfter(s, "\n") {
		if name, ok := strings.CutPrefix(line, "== "); ok {
			out = append(out, section{name: strings.TrimSuffix(name, "\n")})
			continue
		}
		if len(out) == 0 {
			out = append(out, section{name: "(before the first command)"})
		}
		out[len(out)-1].body += line
	}
	return out
}

// lineDiff prints a unified-style diff of two short texts: a longest common
// subsequence of lines, the rest marked - (corosync) and + (corobus).
func lineDiff(a, b string) string {
	x := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	y := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var s strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			fmt.Fprintf(&s, " %s\n", x[i])
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&s, "-%s\n", x[i])
			i++
		default:
			fmt.Fprintf(&s, "+%s\n", y[j])
			j++
		}
	}
	return s.String()
}

// shellQuote makes s one word for bash, whatever it holds.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
