package logsys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/internal/testlog"
)

func newTest(t *testing.T, cfg Config, opts Options) (*Logsys, *testlog.Buffer) {
	t.Helper()
	out := &testlog.Buffer{}
	opts.Stderr = out
	if opts.Layer == "" {
		opts.Layer = "test"
	}
	ls, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ls.Close() })
	return ls, out
}

func TestFilteringBySubsystem(t *testing.T) {
	cfg := Config{ToStderr: true, Debug: "off", Timestamp: "off", SubsysDebug: map[string]string{"CPG": "on", "TOTEM": "trace"}}
	ls, out := newTest(t, cfg, Options{Node: 2})
	log := ls.Logger()
	For(log, "QUORUM").Debug("quorum debug")
	For(log, "QUORUM").Info("quorum info")
	For(log, "CPG").Debug("cpg debug")
	For(log, "CPG").Log(context.Background(), LevelTrace, "cpg trace")
	For(log, "TOTEM").Log(context.Background(), LevelTrace, "totem trace")
	got := out.String()
	for _, want := range []string{"quorum info", "cpg debug", "totem trace"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	for _, not := range []string{"quorum debug", "cpg trace"} {
		if strings.Contains(got, not) {
			t.Errorf("printed %q although filtered:\n%s", not, got)
		}
	}
	// The flight recorder keeps everything, printed or not.
	if n := len(ls.Recorder().Records()); n != 5 {
		t.Errorf("recorder holds %d records, want 5", n)
	}
}

func TestFormat(t *testing.T) {
	ls, out := newTest(t, Config{ToStderr: true, Timestamp: "off"}, Options{Node: 3, Layer: "objdb"})
	For(ls.Logger(), "OBJDB").With("key", "totem.token").WithGroup("g").Log(context.Background(), LevelNotice, "set", "v", "a b")
	want := `node3 objdb notice  [OBJDB ] set g.v="a b" key=totem.token`
	if got := out.String(); !strings.Contains(got, want) {
		t.Errorf("line %q does not contain %q", got, want)
	}
}

// TestFormatNodeName: the lines call the node by its nodelist name when
// it has one (they said "node3" whatever the nodelist said).
func TestFormatNodeName(t *testing.T) {
	ls, out := newTest(t, Config{ToStderr: true, Timestamp: "off"}, Options{Node: 3, NodeName: "charlie", Layer: "objdb"})
	For(ls.Logger(), "OBJDB").Log(context.Background(), LevelNotice, "set")
	want := `] charlie objdb notice  [OBJDB ] set`
	if got := out.String(); !strings.Contains(got, want) {
		t.Errorf("line %q does not contain %q", got, want)
	}
}

func TestLogfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "corosync.log")
	ls, out := newTest(t, Config{ToLogfile: true, Logfile: path, LogfilePriority: LevelWarning, Timestamp: "hires"}, Options{})
	ls.Logger().Info("info only on nothing")
	ls.Logger().Warn("a warning")
	_ = ls.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "a warning") || strings.Contains(string(b), "info only") {
		t.Errorf("log file:\n%s", b)
	}
	if out.String() != "" {
		t.Errorf("wrote to stderr with to_stderr off: %q", out.String())
	}
}

func TestPublish(t *testing.T) {
	ls, _ := newTest(t, Config{Timestamp: "off"}, Options{Node: 1, Layer: "cpg"})
	got := make(chan [2]string, 10)
	ls.Attach(func(subject string, data []byte) error {
		got <- [2]string{subject, string(data)}
		return nil
	}, func(subsys string) string { return "corobus.c.log.1." + subsys })
	For(ls.Logger(), "CPG").Info("joined", "group", "g1")
	select {
	case m := <-got:
		if m[0] != "corobus.c.log.1.CPG" {
			t.Errorf("subject %q", m[0])
		}
		var r Record
		if err := json.Unmarshal([]byte(m[1]), &r); err != nil || r.Msg != "joined" || r.Attrs["group"] != "g1" || r.Layer != "cpg" || r.Level != "info" {
			t.Errorf("record %s (%v)", m[1], err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing published")
	}
}

// A publisher that blocks or fails must not hold up logging.
func TestPublishNeverBlocks(t *testing.T) {
	ls, _ := newTest(t, Config{Timestamp: "off"}, Options{PublishQueue: 4})
	block := make(chan struct{})
	defer close(block)
	ls.Attach(func(string, []byte) error { <-block; return errors.New("stuck") }, func(s string) string { return s })
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			ls.Logger().Info("msg", "i", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging blocked on a stuck publisher")
	}
	if ls.Dropped() == 0 {
		t.Error("no drops counted with a stuck publisher and a queue of 4")
	}
}

func TestRecorderWraps(t *testing.T) {
	r := NewRecorder(3)
	for i := range 5 {
		r.Add(Record{Msg: string(rune('a' + i))})
	}
	var msgs []string
	for _, rec := range r.Records() {
		msgs = append(msgs, rec.Msg)
	}
	if strings.Join(msgs, "") != "cde" {
		t.Errorf("recorder = %v, want c d e", msgs)
	}
	var b bytes.Buffer
	if err := r.Dump(&b); err != nil || strings.Count(b.String(), "\n") != 3 {
		t.Errorf("dump = %q, %v", b.String(), err)
	}
}

func TestConfigFrom(t *testing.T) {
	for _, tc := range []struct {
		keys map[string]string
		err  string
	}{
		{map[string]string{}, ""},
		{map[string]string{"logging.debug": "trace", "logging.logger_subsys.CPG.debug": "on"}, ""},
		{map[string]string{"logging.debug": "maybe"}, `logging.debug: expected off, on, trace, found "maybe"`},
		{map[string]string{"logging.to_stderr": "perhaps"}, `logging.to_stderr: expected yes or no`},
		{map[string]string{"logging.logfile_priority": "loud"}, `logging.logfile_priority`},
		{map[string]string{"logging.to_logfile": "yes"}, `logging.logfile is not set`},
		{map[string]string{"logging.logger_subsys.CPG.debug": "x"}, `logging.logger_subsys.CPG.debug`},
		{map[string]string{"logging.to_syslog": "yes", "logging.syslog_facility": "local7", "logging.syslog_priority": "err", "logging.syslog_socket": "/run/x"}, ""},
		{map[string]string{"logging.syslog_facility": "local9"}, `logging.syslog_facility: expected daemon, local0`},
		{map[string]string{"logging.syslog_priority": "loud"}, `logging.syslog_priority`},
		{map[string]string{"logging.to_syslog": "sometimes"}, `logging.to_syslog: expected yes or no`},
		{map[string]string{"logging.logger_subsys.CPG.to_syslog": "maybe"}, `logging.logger_subsys.CPG.to_syslog`},
		{map[string]string{"logging.logger_subsys.CPG.syslog_facility": "mail2"}, `logging.logger_subsys.CPG.syslog_facility`},
		{map[string]string{"logging.logger_subsys.CPG.syslog_priority": "x"}, `logging.logger_subsys.CPG.syslog_priority`},
		{map[string]string{"logging.logger_subsys.CPG.logfile_priority": "x"}, `logging.logger_subsys.CPG.logfile_priority`},
		{map[string]string{"logging.logger_subsys.CPG.to_logfile": "yes"}, `logging.logger_subsys.CPG.to_logfile is on but logging.logfile is not set`},
	} {
		c, err := ConfigFrom(func(k string) string { return tc.keys[k] }, []string{"CPG"})
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.keys, err, tc.err)
		}
		if err == nil && tc.keys["logging.logger_subsys.CPG.debug"] == "on" && c.threshold("CPG") != slog.LevelDebug {
			t.Errorf("CPG threshold = %v", c.threshold("CPG"))
		}
		if err == nil && tc.keys["logging.syslog_facility"] == "local7" {
			if s := c.sinksFor("CPG"); !s.syslog || s.facility != 23 || s.sysMin != LevelError || c.SyslogSocket != "/run/x" {
				t.Errorf("syslog for CPG: %+v", s)
			}
		}
		if err == nil && len(tc.keys) == 0 {
			if s := c.sinksFor("CPG"); s.syslog || s.facility != 3 || s.sysMin != LevelInfo || !s.stderr || s.file {
				t.Errorf("defaults for CPG: %+v", s)
			}
		}
	}
}

// TestReconfigure: a new logging section takes effect for the next record
// (debug turned on, a log file started); a file that cannot be opened is
// refused and the old section stays.
func TestReconfigure(t *testing.T) {
	ls, out := newTest(t, Config{ToStderr: true, Debug: "off", Timestamp: "off"}, Options{Node: 1})
	log := For(ls.Logger(), "CFG")
	log.Debug("before")
	file := filepath.Join(t.TempDir(), "node.log")
	if err := ls.Reconfigure(Config{ToStderr: true, ToLogfile: true, Logfile: file, LogfilePriority: LevelInfo, Debug: "on", Timestamp: "off"}); err != nil {
		t.Fatal(err)
	}
	log.Debug("after")
	log.Info("to the file")
	if got := out.String(); strings.Contains(got, "before") || !strings.Contains(got, "after") {
		t.Errorf("debug not turned on by the new section:\n%s", got)
	}
	if err := ls.Reconfigure(Config{ToLogfile: true, Logfile: filepath.Join(t.TempDir(), "no", "such", "dir", "x.log")}); err == nil {
		t.Error("a log file that cannot be opened was accepted")
	}
	log.Info("still the old section")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"to the file", "still the old section"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the log file lacks %q:\n%s", want, data)
		}
	}
}
