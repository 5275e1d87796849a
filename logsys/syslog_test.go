package logsys

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// syslogd is a test's own syslog daemon: a unixgram socket in its temp
// directory.
type syslogd struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

func newSyslogd(t *testing.T, path string) *syslogd {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "log")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &syslogd{t: t, path: path, conn: conn}
	t.Cleanup(d.stop)
	return d
}

// stop closes the socket and removes it, as a stopped daemon leaves
// /dev/log.
func (d *syslogd) stop() {
	_ = d.conn.Close()
	_ = os.Remove(d.path)
}

// datagram is one received record, its RFC 3164 header taken apart.
type datagram struct {
	facility, severity int
	stamp, ident       string
	pid                int
	msg                string
}

var rfc3164 = regexp.MustCompile(`^<(\d+)>([A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) ([^\[ ]+)\[(\d+)\]: (.*)$`)

// next returns the next datagram already queued, if any: the client
// writes synchronously, so what was logged is there when the call that
// logged it returns.
func (d *syslogd) next() (datagram, bool) {
	d.t.Helper()
	buf := make([]byte, 65536)
	var n int
	raw, err := d.conn.SyscallConn()
	if err != nil {
		d.t.Fatal(err)
	}
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		d.t.Fatal(err)
	}
	if rerr == syscall.EAGAIN {
		return datagram{}, false
	}
	if rerr != nil {
		d.t.Fatal(rerr)
	}
	m := rfc3164.FindStringSubmatch(string(buf[:n]))
	if m == nil {
		d.t.Fatalf("not an RFC 3164 datagram: %q", buf[:n])
	}
	pri, _ := strconv.Atoi(m[1])
	pid, _ := strconv.Atoi(m[4])
	return datagram{facility: pri / 8, severity: pri % 8, stamp: m[2], ident: m[3], pid: pid, msg: m[5]}, true
}

// until returns the datagrams queued up to the one whose message contains
// end, which it includes.
func (d *syslogd) until(end string) []datagram {
	d.t.Helper()
	var got []datagram
	for {
		g, ok := d.next()
		if !ok {
			d.t.Fatalf("%q never arrived; got %+v", end, got)
		}
		got = append(got, g)
		if strings.Contains(g.msg, end) {
			return got
		}
	}
}

func messages(ds []datagram) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.msg)
	}
	return strings.Join(s, "\n")
}

func find(t *testing.T, ds []datagram, substr string) datagram {
	t.Helper()
	for _, d := range ds {
		if strings.Contains(d.msg, substr) {
			return d
		}
	}
	t.Fatalf("no datagram with %q in\n%s", substr, messages(ds))
	return datagram{}
}

func TestSyslogRecords(t *testing.T) {
	d := newSyslogd(t, "")
	ls, _ := newTest(t, Config{ToSyslog: true, SyslogFacility: "local3", SyslogPriority: LevelInfo, SyslogSocket: d.path, Timestamp: "off"},
		Options{Node: 2, Layer: "cpg", RepeatBurst: -1})
	log := ls.Logger()
	For(log, "CPG").Info("joined", "group", "g1", "name", "a b")
	For(log, "QUORUM").Log(context.Background(), LevelNotice, "quorate")
	For(log, "CPG").Debug("not asked for")
	For(log, "TOTEM").Error("broken")
	For(log, "TOTEM").Log(context.Background(), LevelEmerg, "end")
	got := d.until("end")
	want := []struct {
		sev int
		msg string
	}{
		{6, `node2 cpg [CPG   ] joined group=g1 name="a b"`},
		{5, "node2 cpg [QUORUM] quorate"},
		{3, "node2 cpg [TOTEM ] broken"},
		{0, "node2 cpg [TOTEM ] end"},
	}
	if len(got) != len(want) {
		t.Fatalf("got\n%s\nwant %d records", messages(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.msg != w.msg || g.severity != w.sev || g.facility != 19 || g.ident != "corobus" || g.pid != os.Getpid() {
			t.Errorf("record %d = %+v, want severity %d facility 19 (local3) corobus[%d] %q", i, g, w.sev, os.Getpid(), w.msg)
		}
	}
	if _, err := time.Parse(time.Stamp, got[0].stamp); err != nil {
		t.Errorf("time stamp %q: %v", got[0].stamp, err)
	}
	if n := ls.SyslogDropped(); n != 0 {
		t.Errorf("%d records dropped", n)
	}
}

// syslog_priority filters; debug on (or trace) for a subsystem sends its
// debug (or trace) records whatever syslog_priority says, raised one step
// as libqb raises them for corosync.
func TestSyslogPriorityAndDebug(t *testing.T) {
	d := newSyslogd(t, "")
	ls, _ := newTest(t, Config{ToSyslog: true, SyslogPriority: LevelWarning, SyslogSocket: d.path, Timestamp: "off",
		SubsysDebug: map[string]string{"CPG": "on", "TOTEM": "trace"}}, Options{RepeatBurst: -1})
	ctx := context.Background()
	log := ls.Logger()
	For(log, "QUORUM").Info("quorum info")
	For(log, "QUORUM").Warn("quorum warning")
	For(log, "CPG").Log(ctx, LevelTrace, "cpg trace")
	For(log, "CPG").Debug("cpg debug")
	For(log, "TOTEM").Log(ctx, LevelTrace, "totem trace")
	For(log, "MAIN").Error("end")
	got := d.until("end")
	if s := messages(got); strings.Contains(s, "quorum info") || strings.Contains(s, "cpg trace") {
		t.Errorf("sent below the priority:\n%s", s)
	}
	for msg, sev := range map[string]int{"quorum warning": 4, "cpg debug": 6, "totem trace": 7, "end": 3} {
		if g := find(t, got, msg); g.severity != sev || g.facility != 3 {
			t.Errorf("%q: severity %d facility %d, want %d and 3 (daemon)", msg, g.severity, g.facility, sev)
		}
	}
}

// The logger_subsys overrides, read from the keys: to_syslog and
// syslog_priority and syslog_facility for one subsystem.
func TestSyslogSubsysOverrides(t *testing.T) {
	keys := map[string]string{
		"logging.to_syslog":                            "yes",
		"logging.to_stderr":                            "no",
		"logging.syslog_facility":                      "local0",
		"logging.logger_subsys.TOTEM.to_syslog":        "no",
		"logging.logger_subsys.QUORUM.syslog_priority": "warning",
		"logging.logger_subsys.CPG.syslog_facility":    "local7",
		"logging.logger_subsys.CPG.syslog_priority":    "debug",
		"logging.logger_subsys.VOTEQ.syslog_facility":  "daemon",
		"logging.logger_subsys.VOTEQ.debug":            "off",
	}
	cfg, err := ConfigFrom(func(k string) string { return keys[k] }, Subsystems())
	if err != nil {
		t.Fatal(err)
	}
	d := newSyslogd(t, "")
	cfg.SyslogSocket, cfg.Timestamp = d.path, "off"
	ls, out := newTest(t, cfg, Options{RepeatBurst: -1})
	log := ls.Logger()
	for _, s := range []string{"TOTEM", "QUORUM", "CPG", "VOTEQ", "MAIN"} {
		For(log, s).Debug(s + " debug")
		For(log, s).Info(s + " info")
		For(log, s).Warn(s + " warning")
	}
	For(log, "MAIN").Error("end")
	got := d.until("end")
	s := messages(got)
	for _, not := range []string{"TOTEM", "QUORUM info", "QUORUM debug", "VOTEQ debug", "MAIN debug"} {
		if strings.Contains(s, not) {
			t.Errorf("%q sent:\n%s", not, s)
		}
	}
	for msg, want := range map[string][2]int{"QUORUM warning": {16, 4}, "CPG debug": {23, 6}, "CPG info": {23, 6},
		"VOTEQ info": {3, 6}, "MAIN info": {16, 6}, "MAIN warning": {16, 4}} {
		if g := find(t, got, msg); g.facility != want[0] || g.severity != want[1] {
			t.Errorf("%q: facility %d severity %d, want %v", msg, g.facility, g.severity, want)
		}
	}
	if len(got) != 9 {
		t.Errorf("%d records, want 9:\n%s", len(got), s)
	}
	if out.String() != "" {
		t.Errorf("stderr with to_stderr off: %q", out.String())
	}
}

// Syslog for one subsystem only, the top level keeping it off.
func TestSyslogOnlyOneSubsystem(t *testing.T) {
	d := newSyslogd(t, "")
	on := true
	ls, _ := newTest(t, Config{SyslogSocket: d.path, Timestamp: "off", Subsys: map[string]Override{"CFG": {ToSyslog: &on}}}, Options{})
	For(ls.Logger(), "CPG").Info("cpg")
	For(ls.Logger(), "CFG").Info("cfg")
	if got := d.until("cfg"); len(got) != 1 {
		t.Errorf("got\n%s", messages(got))
	}
}

// A missing socket: one warning on stderr, the process logs on, records
// for syslog are counted as dropped, and the socket is not tried again
// before the retry interval.
func TestSyslogMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ls, out := newTest(t, Config{ToStderr: true, ToSyslog: true, SyslogSocket: path, Timestamp: "off"}, Options{RepeatBurst: -1, SyslogRetry: time.Hour})
	for i := range 20 {
		ls.Logger().Info("still logging", "i", i)
	}
	s := out.String()
	if n := strings.Count(s, "cannot log to syslog at "+path); n != 1 {
		t.Errorf("%d warnings about the missing socket, want 1:\n%s", n, s)
	}
	if n := strings.Count(s, "still logging"); n != 20 {
		t.Errorf("%d records on stderr, want 20", n)
	}
	if n := ls.SyslogDropped(); n != 20 {
		t.Errorf("SyslogDropped = %d, want 20", n)
	}
	// The daemon starts: the hour is not over, so nothing is tried.
	d := newSyslogd(t, path)
	ls.Logger().Info("too early")
	if g, ok := d.next(); ok {
		t.Errorf("sent before the retry interval: %+v", g)
	}
}

// A daemon that restarts (its socket gone, then a new one at the same
// path): records in between are dropped with one warning, and the first
// record after it is back reconnects, followed by a notice of the count.
func TestSyslogReconnects(t *testing.T) {
	d := newSyslogd(t, "")
	local4 := "local4"
	ls, out := newTest(t, Config{ToSyslog: true, SyslogSocket: d.path, Timestamp: "off", Subsys: map[string]Override{"CPG": {SyslogFacility: &local4}}},
		Options{RepeatBurst: -1, SyslogRetry: time.Nanosecond})
	log := ls.Logger()
	log.Info("one")
	d.until("one")
	d.stop()
	log.Info("lost 1")
	log.Info("lost 2")
	if n := strings.Count(out.String(), "cannot log to syslog"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, out.String())
	}
	d2 := newSyslogd(t, d.path)
	For(log, "CPG").Info("two")
	got := d2.until("again")
	if len(got) != 2 || !strings.Contains(got[0].msg, "[CPG   ] two") || got[0].facility != 20 || !strings.Contains(got[1].msg, "records for it dropped meanwhile: 2") || got[1].facility != 3 {
		t.Errorf("after the restart:\n%s", messages(got))
	}
	if n := ls.SyslogDropped(); n != 2 {
		t.Errorf("SyslogDropped = %d, want 2", n)
	}
	if !strings.Contains(out.String(), "logging to syslog at "+d.path+" again") {
		t.Errorf("no notice on stderr:\n%s", out.String())
	}
}

// A daemon that does not read: records are dropped and counted, never
// waited for; once it reads again, records arrive without a reconnect.
func TestSyslogStalledDaemonDrops(t *testing.T) {
	d := newSyslogd(t, "")
	ls, out := newTest(t, Config{ToSyslog: true, SyslogSocket: d.path, Timestamp: "off"}, Options{RepeatBurst: -1})
	sent := 0
	for ls.SyslogDropped() == 0 && sent < 1_000_000 {
		ls.Logger().Info("flood", "i", sent)
		sent++
	}
	if ls.SyslogDropped() == 0 {
		t.Fatalf("%d records into a socket nobody reads and none dropped", sent)
	}
	for {
		if _, ok := d.next(); !ok {
			break
		}
	}
	ls.Logger().Info("after the stall")
	d.until("after the stall")
	if out.String() != "" {
		t.Errorf("a full queue is no outage, yet stderr says:\n%s", out.String())
	}
}

// Reconfigure turns syslog on and off.
func TestSyslogReconfigure(t *testing.T) {
	d := newSyslogd(t, "")
	ls, _ := newTest(t, Config{SyslogSocket: d.path, Timestamp: "off"}, Options{})
	ls.Logger().Info("before")
	if err := ls.Reconfigure(Config{ToSyslog: true, SyslogSocket: d.path, SyslogFacility: "local2", Timestamp: "off"}); err != nil {
		t.Fatal(err)
	}
	ls.Logger().Info("on")
	if got := d.until("on"); len(got) != 1 || got[0].facility != 18 {
		t.Errorf("got %+v", got)
	}
	if err := ls.Reconfigure(Config{SyslogSocket: d.path, Timestamp: "off"}); err != nil {
		t.Fatal(err)
	}
	ls.Logger().Info("off")
	if g, ok := d.next(); ok {
		t.Errorf("sent with syslog off: %+v", g)
	}
	if err := ls.Reconfigure(Config{ToSyslog: true, SyslogFacility: "local9"}); err == nil {
		t.Error("facility local9 accepted")
	}
}

// The log file and stderr overrides of a logger_subsys section, and debug
// on sending debug records to the file whatever logfile_priority says.
func TestLogfileSubsysOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "corosync.log")
	keys := map[string]string{
		"logging.to_logfile":                           "no",
		"logging.logfile":                              path,
		"logging.logfile_priority":                     "warning",
		"logging.logger_subsys.CPG.to_logfile":         "yes",
		"logging.logger_subsys.CPG.logfile_priority":   "info",
		"logging.logger_subsys.QUORUM.to_logfile":      "yes",
		"logging.logger_subsys.QUORUM.debug":           "on",
		"logging.logger_subsys.TOTEM.to_stderr":        "no",
		"logging.logger_subsys.TOTEM.logfile_priority": "info",
		"logging.timestamp":                            "off",
	}
	cfg, err := ConfigFrom(func(k string) string { return keys[k] }, Subsystems())
	if err != nil {
		t.Fatal(err)
	}
	ls, out := newTest(t, cfg, Options{RepeatBurst: -1})
	log := ls.Logger()
	For(log, "CPG").Info("cpg info")
	For(log, "QUORUM").Debug("quorum debug")
	For(log, "QUORUM").Info("quorum info")
	For(log, "TOTEM").Warn("totem warning")
	For(log, "MAIN").Warn("main warning")
	_ = ls.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file := string(b)
	for _, want := range []string{"cpg info", "quorum debug", "quorum info"} {
		if !strings.Contains(file, want) {
			t.Errorf("log file lacks %q:\n%s", want, file)
		}
	}
	for _, not := range []string{"totem", "main"} {
		if strings.Contains(file, not) {
			t.Errorf("log file has %q (to_logfile off for it):\n%s", not, file)
		}
	}
	if s := out.String(); strings.Contains(s, "totem warning") || !strings.Contains(s, "main warning") || !strings.Contains(s, "quorum debug") {
		t.Errorf("stderr:\n%s", s)
	}
}

// A daemon restarted between two records (rsyslog after a rotation): the
// old socket refuses the second record, which is sent again at once on a
// new connection, whatever the retry interval; nothing is lost.
func TestSyslogRestartBetweenRecords(t *testing.T) {
	d := newSyslogd(t, "")
	ls, out := newTest(t, Config{ToSyslog: true, SyslogSocket: d.path, Timestamp: "off"}, Options{SyslogRetry: time.Hour})
	ls.Logger().Info("one")
	d.until("one")
	d.stop()
	d2 := newSyslogd(t, d.path)
	ls.Logger().Info("two")
	if got := d2.until("two"); len(got) != 1 {
		t.Errorf("got\n%s", messages(got))
	}
	if ls.SyslogDropped() != 0 || out.String() != "" {
		t.Errorf("dropped %d, stderr %q", ls.SyslogDropped(), out.String())
	}
}
