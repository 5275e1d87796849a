package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

// The verbs that are a corosync tool read their command line as the tool's
// getopt does: options after operands, -- before a negative value, and the
// last action given is the one taken (until 3 Dec corobus took a fixed
// precedence: cmap's -g KEY took one key as -g's argument, quorum -l -s
// listed, cfg -s -k N showed the links).
func TestToolsTakeTheLastAction(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	for _, tc := range []struct {
		args   []string
		action cmapAction
		mapArg string
		keys   []string
		quiet  bool
		prefix bool
	}{
		{[]string{"-g", "a.b", "c.d"}, cmapGet, "icmap", []string{"a.b", "c.d"}, false, true},
		{[]string{"-g", "a.b", "-q"}, cmapGet, "icmap", []string{"a.b"}, true, true},
		{[]string{"-s", "a.b", "i8", "--", "-100"}, cmapSet, "icmap", []string{"a.b", "i8", "-100"}, false, true},
		{[]string{"-C", "totem", "-g", "a.b"}, cmapGet, "stats", []string{"a.b"}, false, true},
		{[]string{"-g", "-C", "totem"}, cmapClear, "stats", nil, false, true},
		{[]string{"-d", "-T", "a."}, cmapTrack, "icmap", []string{"a."}, false, true},
		{[]string{"-t", "-T", "a."}, cmapTrack, "icmap", []string{"a."}, false, false},
		{[]string{"-qg", "a.b"}, cmapGet, "icmap", []string{"a.b"}, true, true},
		{[]string{"-mstats", "a."}, cmapList, "stats", []string{"a."}, false, true},
	} {
		cmd, _, err := parseCmap(a, tc.args)
		if err != nil {
			t.Errorf("cmap %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if cmd.action != tc.action || cmd.mapName != tc.mapArg || !slices.Equal(cmd.args, tc.keys) || cmd.quiet != tc.quiet || cmd.trackPrefix != tc.prefix {
			t.Errorf("cmap %s: action %d, map %s, operands %q, quiet %v, prefix %v; want %d, %s, %q, %v, %v", strings.Join(tc.args, " "),
				cmd.action, cmd.mapName, cmd.args, cmd.quiet, cmd.trackPrefix, tc.action, tc.mapArg, tc.keys, tc.quiet, tc.prefix)
		}
	}

	for _, tc := range []struct {
		args    []string
		command string
		votes   int
	}{
		{[]string{"-l", "-s"}, "s", 0},
		{[]string{"-s", "-l"}, "l", 0},
		{[]string{"-e", "3", "-v", "2"}, "v", 2},
		{[]string{"-v", "2", "-e", "3", "-p"}, "e", 2},
		{nil, "s", 0},
	} {
		var q quorumFlags
		fs := flag.NewFlagSet("quorum", flag.ContinueOnError)
		q.register(fs)
		q.command = "s"
		if _, err := parseTool(a, fs, tc.args, func(name string) error { return q.take(a, name) }); err != nil {
			t.Errorf("quorum %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if q.command != tc.command || q.votes != tc.votes {
			t.Errorf("quorum %s: command %s, votes %d; want %s, %d", strings.Join(tc.args, " "), q.command, q.votes, tc.command, tc.votes)
		}
	}

	for _, tc := range []struct {
		args   []string
		action string
		nodeID uint32
	}{
		{[]string{"-k", "2", "-s"}, "s", 2},
		{[]string{"-s", "-k", "2"}, "k", 2},
		{[]string{"-a", "3", "-k", "2"}, "k", 2},
		{[]string{"-k2", "-a", "3"}, "a", 3},
		{[]string{"-n", "-s"}, "s", 0},
		{[]string{"--status"}, "s", 0},
		{[]string{"--kill=4"}, "k", 4},
		{[]string{"-bs"}, "s", 0},
	} {
		var q cfgFlags
		fs := flag.NewFlagSet("cfg", flag.ContinueOnError)
		q.register(fs)
		if _, err := parseTool(a, fs, tc.args, q.take); err != nil {
			t.Errorf("cfg %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if q.action != tc.action || q.nodeID != tc.nodeID {
			t.Errorf("cfg %s: action %s, nodeid %d; want %s, %d", strings.Join(tc.args, " "), q.action, q.nodeID, tc.action, tc.nodeID)
		}
	}
}

// corosync-quorumtool prints its usage on stdout after getopt's complaint.
func TestQuorumUsageAfterABadOption(t *testing.T) {
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
	code := a.main(context.Background(), []string{"quorum", "-x"})
	if code != 1 || stderr.String() != "corobus quorum: invalid option -- 'x'\n" || !strings.HasPrefix(stdout.String(), "usage: corobus quorum ") {
		t.Errorf("status %d, stderr %q, stdout %q; want 1, the complaint, the usage", code, &stderr, &stdout)
	}
}

// corobus cpg reads its command line as corosync-cpgtool's getopt does
// (until 3 Dec it used Go's flag package: `-nd,` and `-x` were "flag
// provided but not defined", an operand was refused, `-x -h` printed the
// help and `-d -h` too, where the tool takes '-' as the delimiter).
func TestCpgReadsTheToolsCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		delim     byte
		namesOnly bool
		noEscape  bool
	}{
		{[]string{"-d", ",", "-n"}, ',', true, false},
		{[]string{"-n", "-d", ","}, ',', true, false},
		{[]string{"-nd,"}, ',', true, false},
		{[]string{"-d", ";x"}, ';', false, false},
		{[]string{"-d", ""}, 0, false, false},
		{[]string{"-d", ",", "-d", ""}, ',', false, false}, // an empty -d changes nothing
		{[]string{"group", "-e"}, 0, false, true},          // operands ignored
		{[]string{"-d", "-h"}, '-', false, false},
		{[]string{"-e", "--", "-n"}, 0, false, true},
	} {
		a := &app{stdout: io.Discard, stderr: io.Discard}
		cmd, _, err := parseCpg(a, tc.args)
		if err != nil {
			t.Errorf("cpg %q: %v", tc.args, err)
			continue
		}
		if cmd.delim != tc.delim || cmd.namesOnly != tc.namesOnly || cmd.noEscape != tc.noEscape {
			t.Errorf("cpg %q: delimiter %q, -n %v, -e %v; want %q, %v, %v", tc.args, cmd.delim, cmd.namesOnly, cmd.noEscape, tc.delim, tc.namesOnly, tc.noEscape)
		}
	}
	for _, tc := range []struct {
		args   []string
		status int
		stderr string
		usage  bool
	}{
		{[]string{"-x"}, 1, "corobus cpg: invalid option -- 'x'\n", false},
		{[]string{"-d"}, 1, "corobus cpg: option requires an argument -- 'd'\n", false},
		{[]string{"-x", "-h"}, 1, "corobus cpg: invalid option -- 'x'\n", false},
		{[]string{"-h", "-x"}, 0, "", true},
		{[]string{"-nh"}, 0, "", true},
		{[]string{"-help"}, 0, "", true},
		{[]string{"--help"}, 0, "", true},
	} {
		var stdout, stderr bytes.Buffer
		a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // none of these may reach a node
		code := a.main(ctx, append([]string{"cpg"}, tc.args...))
		if code != tc.status || stderr.String() != tc.stderr || strings.HasPrefix(stdout.String(), "usage: corobus cpg ") != tc.usage {
			t.Errorf("cpg %q: status %d, stderr %q, stdout %q; want %d, %q, usage %v", tc.args, code, &stderr, &stdout, tc.status, tc.stderr, tc.usage)
		}
	}
}

// corosync-cfgtool's -h is no action: -h -s shows the links, -h alone the
// usage, and -help is -h then an invalid -e.
func TestCfgHelpIsNoAction(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		action string
		err    string
	}{
		{[]string{"-h", "-s"}, "s", ""},
		{[]string{"-s", "-h"}, "s", ""},
		{[]string{"-h"}, "", ""},
		{[]string{"-help"}, "", "invalid option -- 'e'"},
	} {
		var q cfgFlags
		a := &app{stdout: io.Discard, stderr: io.Discard}
		fs := flag.NewFlagSet("cfg", flag.ContinueOnError)
		q.register(fs)
		_, err := parseTool(a, fs, tc.args, q.take)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err || q.action != tc.action {
			t.Errorf("cfg %q: action %q, error %v; want %q, %q", tc.args, q.action, err, tc.action, tc.err)
		}
	}
}

// corosync-cpgtool prints a group name's bytes that are not printable
// ASCII as \x%02X of a C char: on x86, where char is signed, a byte of
// 0x80 or more prints as \xFFFFFFNN (a UTF-8 name "café": caf\xFFFFFFC3
// \xFFFFFFA9). Until 3 Dec corobus cpg printed caf\xC3\xA9.
func TestCpgEscapesAsTheTool(t *testing.T) {
	want := `caf\xC3\xA9 a\\b\x01`
	if cCharIsSigned() {
		want = `caf\xFFFFFFC3\xFFFFFFA9 a\\b\x01`
	}
	if got := (cpgPrinter{escape: true}).group("caf\xc3\xa9 a\\b\x01"); got != want {
		t.Errorf("escaped %q, want %q", got, want)
	}
	if got := (cpgPrinter{}).group("caf\xc3\xa9"); got != "caf\xc3\xa9" {
		t.Errorf("-e: %q", got)
	}
}
