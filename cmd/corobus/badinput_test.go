package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cswire"
)

// A mistake on the command line is refused before anything connects or
// starts (no node runs here), with status 2 (1 for the verbs that are a
// corosync tool, as the tool exits: corosync-quorumtool's 2 means "not
// quorate") and one line saying what was wrong: corosync's tools'
// messages where corobus's verb is their tool.
func TestBadCommandLines(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the whole of stderr
	}{
		{[]string{"nosuchverb"}, `corobus: unknown command "nosuchverb" (corobus --help lists them)`},
		{[]string{"bench", "nosuch"}, `corobus bench: unknown benchmark "nosuch" (cmap, totem)`},
		{[]string{"status", "--nosuch"}, `corobus status: flag provided but not defined: -nosuch`},
		{[]string{"sub", "--count", "-1"}, `corobus sub: --count takes 0 (until interrupted) or more messages, found -1`},
		// A verb without operands refuses one: Go's flag package stopped
		// at it and left it, and every flag after it, unread (until 3 Dec
		// `corobus up node.conf` ran the embedded default).
		{[]string{"up", "node.conf", "-o", "totem.token=3000"}, `corobus up: unexpected argument "node.conf": a configuration file goes after -c (corobus up -c node.conf)`},
		{[]string{"status", "node2", "--json"}, `corobus status: unexpected argument "node2" (corobus status --help lists the flags)`},
		{[]string{"config", "--keys", "totem"}, `corobus config: unexpected argument "totem" (corobus config --help lists the flags)`},
		{[]string{"blackbox", "1"}, `corobus blackbox: unexpected argument "1" (corobus blackbox --help lists the flags)`},
		{[]string{"bench", "cmap", "5"}, `corobus bench: unexpected argument "5" (corobus bench cmap --help lists the flags)`},
		{[]string{"objdb", "extra"}, `corobus objdb: unexpected argument "extra" (corobus objdb --help lists the flags)`},
		{[]string{"service", "cmap", "extra"}, `corobus service: unexpected argument "extra" (corobus service cmap --help lists the flags)`},
		{[]string{"bus", "corosync.yaml"}, `corobus bus: unexpected argument "corosync.yaml": a configuration file goes after -c (corobus bus -c corosync.yaml)`},
		{[]string{"quorum", "-e", "0"}, `corobus quorum: New expected votes value was not valid, try a positive number`},
		{[]string{"quorum", "-e", "-3"}, `corobus quorum: New expected votes value was not valid, try a positive number`},
		{[]string{"quorum", "-v", "1", "-n", "0"}, `corobus quorum: The nodeid was not valid, try a positive number`},
		{[]string{"quorum", "-v", "-2"}, `corobus quorum: New votes value was not valid, try a positive number or zero`},
		{[]string{"quorum", "-v", "-1"}, `corobus quorum: New votes value was not valid, try a positive number or zero`},
		{[]string{"quorum", "-z"}, `corobus quorum: invalid option -- 'z'`},
		{[]string{"quorum", "-e", "abc"}, `corobus quorum: New expected votes value was not valid, try a positive number`},
		{[]string{"quorum", "-o", "x"}, `corobus quorum: Invalid ordering option. valid orders are a(address), i(node ID) or n(name)`},
		{[]string{"quorum", "-e"}, `corobus quorum: option requires an argument -- 'e'`},
		{[]string{"cmap", "-z"}, `corobus cmap: invalid option -- 'z'`},
		{[]string{"cmap", "-m", "nosuch"}, `corobus cmap: invalid map name, must be 'default', 'icmap' or 'stats'`},
		{[]string{"cmap", "-C", "nosuch"}, `corobus cmap: argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'`},
		// corosync-cmapctl's getopt reads -100 as options; -- before it
		// is how the tool sets a negative value.
		{[]string{"cmap", "-s", "test.neg", "i8", "-100"}, `corobus cmap: invalid option -- '1'`},
		{[]string{"cmap", "-C", "totem", "-g"}, `corobus cmap: Expected key after options`},
		{[]string{"cmap", "-g"}, `corobus cmap: Expected key after options`},
		{[]string{"cmap", "-s", "test.x", "u8"}, `corobus cmap: At least 3 parameters are expected for set`},
		{[]string{"cmap", "-p"}, `corobus cmap: option requires an argument -- 'p'`},
		// Options are checked in order, as getopt hands them to the tool.
		{[]string{"cmap", "-C", "nosuch", "-z"}, `corobus cmap: argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'`},
		{[]string{"cmap", "-z", "-C", "nosuch"}, `corobus cmap: invalid option -- 'z'`},
		{[]string{"cfg", "-k", "-1"}, `corobus cfg: The nodeid was not valid, try a positive number`},
		{[]string{"cfg", "-k", "abc"}, `corobus cfg: The nodeid was not valid, try a positive number`},
		{[]string{"cfg", "-s", "--kill=0"}, `corobus cfg: The nodeid was not valid, try a positive number`},
		{[]string{"cfg", "-x"}, `corobus cfg: invalid option -- 'x'`},
		{[]string{"cfg", "--kill"}, `corobus cfg: option '--kill' requires an argument`},
		{[]string{"cfg", "--bogus"}, `corobus cfg: unrecognized option '--bogus'`},
		{[]string{"cfg", "--force=1"}, `corobus cfg: option '--force' doesn't allow an argument`},
		// corosync-cpgtool ignores operands: `cpg extra` is no mistake.
		{[]string{"cpg", "-x"}, `corobus cpg: invalid option -- 'x'`},
		{[]string{"cpg", "-d"}, `corobus cpg: option requires an argument -- 'd'`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing may need to run
			code := a.main(ctx, tc.args)
			status := 2
			for _, c := range a.commands() {
				if c.name == tc.args[0] && c.tool {
					status = 1
				}
			}
			if code != status || strings.TrimSpace(stderr.String()) != tc.want {
				t.Errorf("corobus %s: status %d, stderr %q; want %d, %q", strings.Join(tc.args, " "), code, stderr.String(), status, tc.want)
			}
		})
	}
}

// An objdb error is printed with objdb's reason once, not the code twice,
// and an error without a code keeps what it said.
func TestCSReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&client.Error{Code: cswire.ErrNameTooLong, Desc: `key "ab": shorter than 3 characters: CS_ERR_NAME_TOO_LONG`},
			`key "ab": shorter than 3 characters: CS_ERR_NAME_TOO_LONG`},
		{fmt.Errorf("no objdb process serves node 1: %w", cswire.ErrTryAgain), "no objdb process serves node 1: CS_ERR_TRY_AGAIN"},
		{errors.New("nats: timeout"), "CS_ERR_LIBRARY (nats: timeout)"},
	} {
		if got := csReason(tc.err); got != tc.want {
			t.Errorf("csReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// Totem timings that do not go together are refused by up and bus before
// anything starts, naming the file: the bus's totem refused them only once
// its server ran, and up restarted the bus, refused again, forever. A file
// that raises totem.token alone is corosync's usual tuning and runs
// (consensus derives from it, bus/totem's TestFromConfigTimings).
func TestTotemTimingsRefusedBeforeStart(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "corosync.conf")
	body := "totem {\n\tversion: 2\n\ttoken: 3000\n\tconsensus: 1000\n}\nnodelist {\n\tnode {\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\nsystem {\n\tstate_dir: " + dir + "\n}\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"up", "bus", "config"} { // config: since 3 Dec
		var stdout, stderr bytes.Buffer
		a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // nothing may need to run
		code := a.main(ctx, []string{verb, "-c", conf})
		want := "corobus " + verb + ": " + conf + ": totem.consensus 1s: at least half of totem.token 3s"
		if code != 1 || strings.TrimSpace(stderr.String()) != want {
			t.Errorf("corobus %s: status %d, stderr %q; want 1, %q", verb, code, stderr.String(), want)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("the state directory holds more than the file: %v %v", entries, err)
	}
}

// Crypto settings corosync refuses stop up, the bus and config before
// anything starts (until 3 Dec up started and restarted its bus again and
// again, and config said nothing), and so does, for up and the bus, a
// cluster key that cannot be read.
func TestCryptoRefusedBeforeStart(t *testing.T) {
	dir := t.TempDir()
	nodes := "nodelist {\n\tnode {\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\nsystem {\n\tstate_dir: " + dir + "\n}\n"
	for _, tc := range []struct {
		name, totem string
		verbs       []string
		want        string
	}{
		{"cipher without hash", "\tcrypto_cipher: aes256\n", []string{"up", "bus", "config"}, "totem.crypto_cipher requires totem.crypto_hash"},
		{"missing key file", "\tcrypto_cipher: aes256\n\tcrypto_hash: sha256\n\tkeyfile: " + filepath.Join(dir, "nokey") + "\n", []string{"up", "bus"}, "needs the cluster key"},
	} {
		conf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".conf")
		if err := os.WriteFile(conf, []byte("totem {\n\tversion: 2\n"+tc.totem+"}\n"+nodes), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, verb := range tc.verbs {
			var stdout, stderr bytes.Buffer
			a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing may need to run
			code := a.main(ctx, []string{verb, "-c", conf})
			if code != 1 || !strings.HasPrefix(stderr.String(), "corobus "+verb+": "+conf+": ") || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("%s: corobus %s: status %d, stderr %q; want 1, %q", tc.name, verb, code, stderr.String(), tc.want)
			}
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 2 {
		t.Errorf("the state directory holds more than the files: %v %v", entries, err)
	}
}
