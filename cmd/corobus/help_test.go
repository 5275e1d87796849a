package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Every verb, and every sub-verb of bench and service, answers --help with
// its own usage and status 0, without doing anything else (no node is
// running here: a verb that tried to connect or start would fail or hang
// instead).
func TestEveryVerbHasHelp(t *testing.T) {
	base := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, version: "test"}
	var verbs [][]string
	for _, c := range base.commands() {
		verbs = append(verbs, []string{c.name})
	}
	verbs = append(verbs, []string{"bench", "cmap"}, []string{"bench", "totem"})
	for _, l := range base.builtinServices() {
		verbs = append(verbs, []string{"service", l.Name})
	}
	for _, v := range verbs {
		t.Run(strings.Join(v, "_"), func(t *testing.T) {
			var out bytes.Buffer
			a := &app{stdout: &out, stderr: &out, version: "test"}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing may need to run
			if code := a.main(ctx, append(append([]string(nil), v...), "--help")); code != 0 {
				t.Errorf("corobus %s --help: status %d\n%s", strings.Join(v, " "), code, out.String())
			}
			// The usage names the command line that runs it (service
			// cmap's is not the client verb cmap's); an alias, its verb's.
			verb := strings.Join(v, " ")
			if v[0] == "components" {
				verb = "lcr"
			}
			if !strings.Contains(out.String(), "usage: corobus "+verb+" ") {
				t.Errorf("corobus %s --help printed no usage of corobus %s:\n%s", strings.Join(v, " "), verb, out.String())
			}
		})
	}
}

// corobus help VERB prints VERB's own usage, as VERB --help does.
func TestHelpVerb(t *testing.T) {
	for _, v := range [][]string{{"cmap"}, {"bench", "totem"}, {"service", "cpg"}} {
		var out bytes.Buffer
		a := &app{stdout: &out, stderr: &out, version: "test"}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		code := a.main(ctx, append([]string{"help"}, v...))
		if want := "usage: corobus " + strings.Join(v, " ") + " "; code != 0 || !strings.HasPrefix(out.String(), want) {
			t.Errorf("corobus help %s: status %d, printed:\n%s\nwant status 0 and %q first", strings.Join(v, " "), code, out.String(), want)
		}
	}
}
