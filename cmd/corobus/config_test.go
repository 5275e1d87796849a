package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/configuration.md embeds the schema table; the two must agree.
func TestConfigurationDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- keys:begin -->\n")
	table, _, ok2 := strings.Cut(rest, "<!-- keys:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/configuration.md lost its keys:begin/keys:end markers")
	}
	var want bytes.Buffer
	writeKeys(&want, true)
	if table != want.String() {
		t.Errorf("docs/configuration.md is out of date: regenerate the table with `corobus config --keys --markdown`")
	}
}

// `corobus config` refuses a log file corobus up could not open, as
// corosync -t refuses it ("Can't open logfile"), naming the line: pcs
// writes /var/log/cluster/corosync.log, a directory Debian does not have.
// Until 3 Dec config passed the file and up stopped on it ("opening the
// log file: … no such file or directory"). A log file that can be made
// passes, and config does not make it.
func TestConfigChecksTheLogFile(t *testing.T) {
	dir := t.TempDir()
	conf := func(logfile string) string {
		p := filepath.Join(dir, "corosync.conf")
		body := "totem {\n\tversion: 2\n\tcluster_name: logs\n}\nlogging {\n\tto_logfile: yes\n\tlogfile: " + logfile + "\n}\n" +
			"nodelist {\n\tnode {\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, logfile, want string
	}{
		{"no such directory", filepath.Join(dir, "cluster", "corosync.log"),
			":7: logging.logfile: the log file " + filepath.Join(dir, "cluster", "corosync.log") + " cannot be opened: stat " + filepath.Join(dir, "cluster") + ": no such file or directory"},
		{"a directory", dir, ":7: logging.logfile: the log file " + dir + " is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := conf(tc.logfile)
			var stdout, stderr bytes.Buffer
			a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
			code := a.main(context.Background(), []string{"config", "-c", p})
			if want := "corobus config: " + p + tc.want; code != 1 || strings.TrimSpace(stderr.String()) != want {
				t.Errorf("config with logfile %s: status %d, stderr %q; want 1, %q", tc.logfile, code, stderr.String(), want)
			}
		})
	}
	logfile := filepath.Join(dir, "corosync.log")
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, version: "test"}
	if code := a.main(context.Background(), []string{"config", "-c", conf(logfile)}); code != 0 {
		t.Fatalf("config with a log file that can be made: status %d\n%s", code, stderr.String())
	}
	if _, err := os.Stat(logfile); !os.IsNotExist(err) {
		t.Errorf("config made the log file %s (%v): it checks, it does not open", logfile, err)
	}
}
