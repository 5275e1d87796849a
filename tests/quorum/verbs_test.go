package quorum

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// verbLine is one command line, given to a corosync tool and to the corobus
// verb that is that tool.
type verbLine struct {
	tool string // corosync-cmapctl, -quorumtool, -cfgtool or -cpgtool
	args []string
}

// TestVerbsMatchTheirTools gives the same command lines to
// corosync-cmapctl, -quorumtool, -cfgtool and -cpgtool on one real
// corosync node, and to corobus cmap, quorum, cfg and cpg on one corobus
// node with the same file, and compares stdout, stderr and the exit
// status of each: the verbs read their command line as the tools' getopt
// does (options after operands, -- before a negative value, the last
// action given wins, -h where it comes) and answer with the tools'
// messages and statuses.
//
// Normalized before comparing, and only that: the program's name before a
// command-line complaint ("corosync-cmapctl: " and "corobus cmap: "), a
// usage text (each prints its own: from "usage:" or from the tool's
// synopsis), and the Date and ring sequence of quorumtool's status
// (normalize).
//
// The corosync half runs in TestOnCorosync.
func TestVerbsMatchTheirTools(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	netcluster.RequireBackend(t, netcluster.Corosync)
	lines := verbLines(t)
	want := corosyncRef[[]string](t, "VerbsMatchTheirTools")
	got := verbsTranscript(t, netcluster.Corobus, lines)
	for i := range lines {
		t.Logf("%s %s:\n%s", lines[i].tool, strings.Join(lines[i].args, " "), want[i])
		if want[i] != got[i] {
			t.Errorf("%s %s: output differs\n--- corosync\n%s+++ corobus\n%s", lines[i].tool, strings.Join(lines[i].args, " "), want[i], got[i])
		}
	}
}

// verbLines are the command lines TestVerbsMatchTheirTools gives both
// engines, with the files they read made in t's TempDir (each half makes
// its own: the same contents, in a directory of its own).
func verbLines(t *testing.T) []verbLine {
	t.Helper()
	dir := t.TempDir()
	settings, bin := filepath.Join(dir, "settings"), filepath.Join(dir, "bin")
	if err := os.WriteFile(settings, []byte("test.p u8 5\n^test.nosuch\n  # a comment\ntest.w str two words\n^^test.zz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("a\x01\\b"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []verbLine{
		{"corosync-cmapctl", []string{"-g", "totem.cluster_name", "nosuch.key"}},
		{"corosync-cmapctl", []string{"-s", "test.neg", "i8", "-100"}},
		{"corosync-cmapctl", []string{"-s", "test.neg", "i8", "--", "-100"}},
		{"corosync-cmapctl", []string{"-g", "test.neg", "-q"}},
		{"corosync-cmapctl", []string{"-C", "totem", "-g"}},
		{"corosync-cmapctl", []string{"-C", "totem"}},
		{"corosync-cmapctl", []string{"-s", "test.x", "u8", "300"}},
		{"corosync-cmapctl", []string{"-s", "test.x", "u8", "abc"}},
		{"corosync-cmapctl", []string{"-s", "test.x", "nosuch", "1"}},
		{"corosync-cmapctl", []string{"-s", "test.x", "u8"}},
		{"corosync-cmapctl", []string{"-s", "test.f", "flt", "1.5"}},
		{"corosync-cmapctl", []string{"-s", "test.s", "str", "hello", "world"}},
		{"corosync-cmapctl", []string{"test."}},
		{"corosync-cmapctl", []string{"-d", "test.neg", "nosuch.key"}},
		{"corosync-cmapctl", []string{"-D", "test."}},
		{"corosync-cmapctl", []string{"test."}},
		{"corosync-cmapctl", []string{"-p", settings}},
		{"corosync-cmapctl", []string{"-s", "test.bin", "bin", bin}},
		{"corosync-cmapctl", []string{"-s", "test.i", "i32", " 42"}},
		{"corosync-cmapctl", []string{"-s", "test.d", "dbl", "abc"}},
		{"corosync-cmapctl", []string{"-s", "test.d", "dbl", "2.25"}},
		{"corosync-cmapctl", []string{"-b", "test."}},
		{"corosync-cmapctl", []string{"-q", "test."}},
		{"corosync-cmapctl", []string{"-g", "test.bin", "-b", "-q"}},
		{"corosync-cmapctl", []string{"-D", "test.", "nosuch."}},
		{"corosync-cmapctl", []string{"-m", "stats", "-g", "stats.nosuch"}},
		{"corosync-cmapctl", []string{"-m", "nosuch"}},
		{"corosync-cmapctl", []string{"-z"}},
		{"corosync-quorumtool", []string{"-x"}},
		{"corosync-quorumtool", []string{"-e", "abc"}},
		{"corosync-quorumtool", []string{"-l", "-s"}},
		{"corosync-quorumtool", []string{"-s", "-l"}},
		{"corosync-quorumtool", []string{"-p", "-l"}},
		{"corosync-quorumtool", []string{"-H", "-s"}},
		{"corosync-quorumtool", []string{"-a", "-i", "-o", "n", "-l"}},
		{"corosync-quorumtool", []string{"-v", "1", "-n", "5"}},
		{"corosync-cfgtool", []string{"-x"}},
		{"corosync-cfgtool", []string{"-k", "abc"}},
		{"corosync-cfgtool", []string{"-s", "-a", "1"}},
		{"corosync-cfgtool", []string{"--address", "1", "-n"}},
		{"corosync-cfgtool", []string{"--bogus"}},
		{"corosync-cfgtool", []string{"-b", "-s"}},
		{"corosync-cfgtool", []string{"-a", "9"}},
		{"corosync-cfgtool", []string{"-L"}},
		{"corosync-cfgtool", []string{"-R"}},
		{"corosync-cfgtool", []string{"-k", "9"}},
		{"corosync-cfgtool", []string{"-h"}},
		{"corosync-cfgtool", []string{"-h", "-n"}},
		{"corosync-cfgtool", []string{"-help"}},
		{"corosync-cpgtool", nil},
		{"corosync-cpgtool", []string{"-x"}},
		{"corosync-cpgtool", []string{"-d"}},
		{"corosync-cpgtool", []string{"-nd,"}},
		{"corosync-cpgtool", []string{"-d", ",", "-d", ""}},
		{"corosync-cpgtool", []string{"-d", "ab", "-e"}},
		{"corosync-cpgtool", []string{"group", "-d", ";"}},
		{"corosync-cpgtool", []string{"-d", "-h"}},
		{"corosync-cpgtool", []string{"-x", "-h"}},
		{"corosync-cpgtool", []string{"-h", "-x"}},
		{"corosync-cpgtool", []string{"-n", "--", "-d", ","}},
		{"corosync-cfgtool", []string{"-s", "-H"}}, // last: the node stops
	}
}

// verbsTranscript runs lines in node 1 of a fresh one-node cluster of
// backend: the tool on corosync, the verb on corobus.
func verbsTranscript(t *testing.T, backend netcluster.Backend, lines []verbLine) []string {
	c := netcluster.Start(t, netcluster.Options{Nodes: 1, Backend: backend})
	keepLogs(t, c)
	n := c.Node(1)
	verbs := map[string]string{"corosync-cmapctl": "cmap", "corosync-quorumtool": "quorum", "corosync-cfgtool": "cfg", "corosync-cpgtool": "cpg"}
	var out []string
	for _, l := range lines {
		name, args := l.tool, l.args
		if backend == netcluster.Corobus {
			name, args = c.Options().Binary, append([]string{verbs[l.tool], "-c", n.ConfPath}, l.args...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := n.Command(ctx, name, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		rc := 0
		if ee, ok := err.(*exec.ExitError); ok {
			rc = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %s %s: %v", backend, name, strings.Join(args, " "), err)
		}
		so := stdout.String()
		// cfgtool's and cpgtool's usage starts with the synopsis.
		if strings.HasPrefix(so, "usage:") || strings.HasPrefix(so, l.tool+" [") {
			so = "(usage)\n"
		}
		se := stderr.String()
		for _, prog := range []string{l.tool + ": ", "corobus " + verbs[l.tool] + ": "} {
			se = strings.ReplaceAll(se, prog, "")
		}
		out = append(out, fmt.Sprintf("stdout:\n%sstderr:\n%sstatus %d\n", normalize(so), se, rc))
	}
	return out
}
