package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVerbsNeverCreateTheToken: a client verb, or a layer process started by
// hand, pointed at a state directory where no node has ever run (a wrong
// XDG_STATE_HOME, a wrong system.state_dir) says so — which directory, and
// how to point at the right one — and leaves that directory as it was:
// no bus.token, not even the directory. Only `corobus up` and `corobus bus`
// make the token.
func TestVerbsNeverCreateTheToken(t *testing.T) {
	verbs := [][]string{
		{"status"},
		{"cmap", "-g", "totem.token"},
		{"cmap", "-T", "runtime."},
		{"quorum"},
		{"cfg", "-s"},
		{"cpg"},
		{"objctl"},
		{"lcr"},
		{"svc", "list"},
		{"blackbox"},
		{"bench", "cmap", "--seconds", "0.1"},
		{"bench", "totem", "--seconds", "0.1"},
		{"sub"},
		{"sub", "--url"},
		// Layer processes started by hand (to scale a layer) read the
		// token too.
		{"objdb"},
		{"ipc"},
	}
	for _, how := range []string{"embedded default under XDG_STATE_HOME", "system.state_dir from the environment"} {
		for _, verb := range verbs {
			t.Run(how+"/"+strings.Join(verb, " "), func(t *testing.T) {
				empty := t.TempDir()
				var state string
				var environ []string
				args := append([]string{}, verb...)
				switch how {
				case "system.state_dir from the environment":
					state = filepath.Join(empty, "elsewhere")
					t.Setenv("XDG_STATE_HOME", t.TempDir()) // not looked at
					// (not -o: corosync-quorumtool's -o is its sort order)
					environ = []string{"COROBUS_SYSTEM__STATE_DIR=" + state}
				default:
					t.Setenv("XDG_STATE_HOME", empty)
					state = filepath.Join(empty, "corobus")
				}
				var stdout, stderr bytes.Buffer
				a := &app{stdout: &stdout, stderr: &stderr, environ: environ, version: "test"}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				code := a.main(ctx, args)
				if code != 1 {
					t.Fatalf("corobus %s: exit status %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, &stdout, &stderr)
				}
				msg := stderr.String()
				for _, want := range []string{
					"no node has ever run on the state directory " + state + " ",
					filepath.Join(state, "bus.token"),
					"-c FILE", "system.state_dir", "XDG_STATE_HOME", "--bus nats://TOKEN@host:port",
				} {
					if !strings.Contains(msg, want) {
						t.Errorf("the error does not say %q:\n%s", want, msg)
					}
				}
				left, err := os.ReadDir(empty)
				if err != nil {
					t.Fatal(err)
				}
				if len(left) != 0 {
					t.Errorf("corobus %s left %d entries in %s (first %s): a verb must not touch a state directory it does not own",
						strings.Join(args, " "), len(left), empty, left[0].Name())
				}
			})
		}
	}
}

// TestTokenFileNamedButAbsent: bus.token_file that names a file that does
// not exist is reported as such, and not created either.
func TestTokenFileNamedButAbsent(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_STATE_HOME", dir)
	tokenFile := filepath.Join(dir, "sub", "token")
	var stderr bytes.Buffer
	a := &app{stdout: &bytes.Buffer{}, stderr: &stderr, version: "test"}
	if code := a.main(context.Background(), []string{"status", "-o", "bus.token_file=" + tokenFile}); code != 1 {
		t.Fatalf("exit status %d, want 1: %s", code, &stderr)
	}
	if want := "no bus token at " + tokenFile + " (bus.token_file)"; !strings.Contains(stderr.String(), want) {
		t.Errorf("the error does not say %q:\n%s", want, &stderr)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("status left %s in %s", left[0].Name(), dir)
	}
}
