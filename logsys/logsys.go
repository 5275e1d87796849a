// Package logsys is corosync's logging system on log/slog: records carry a
// corosync subsystem (TOTEM, CPG, QUORUM, …) and a syslog priority; the
// logging.* keys decide where they go (stderr, a log file, syslog) and
// which subsystems log at debug; every record is also kept in a bounded flight
// recorder (corosync's blackbox) and, once a bus connection is attached,
// published on the node's log subject for that subsystem.
package logsys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Priorities beyond slog's four, placed so that slog's ordering holds:
// trace < debug < info < notice < warning < err < crit < alert < emerg.
const (
	LevelTrace   slog.Level = -8
	LevelDebug   slog.Level = slog.LevelDebug
	LevelInfo    slog.Level = slog.LevelInfo
	LevelNotice  slog.Level = 2
	LevelWarning slog.Level = slog.LevelWarn
	LevelError   slog.Level = slog.LevelError
	LevelCrit    slog.Level = 10
	LevelAlert   slog.Level = 11
	LevelEmerg   slog.Level = 12
)

// SubsysKey is the attribute that names a record's subsystem.
const SubsysKey = "subsys"

// For returns a logger for one subsystem.
func For(base *slog.Logger, subsys string) *slog.Logger { return base.With(SubsysKey, subsys) }

// PriorityName is corosync's name of a level.
func PriorityName(l slog.Level) string {
	switch {
	case l <= LevelTrace:
		return "trace"
	case l <= LevelDebug:
		return "debug"
	case l <= LevelInfo:
		return "info"
	case l <= LevelNotice:
		return "notice"
	case l <= LevelWarning:
		return "warning"
	case l <= LevelError:
		return "error"
	case l <= LevelCrit:
		return "crit"
	case l <= LevelAlert:
		return "alert"
	}
	return "emerg"
}

// ParsePriority reads corosync's priority names (logfile_priority,
// syslog_priority).
func ParsePriority(s string) (slog.Level, error) {
	for _, l := range []slog.Level{LevelTrace, LevelDebug, LevelInfo, LevelNotice, LevelWarning, LevelError, LevelCrit, LevelAlert, LevelEmerg} {
		if PriorityName(l) == s {
			return l, nil
		}
	}
	if s == "err" {
		return LevelError, nil
	}
	return 0, fmt.Errorf("expected one of alert, crit, debug, emerg, err, info, notice, warning, trace, found %q", s)
}

// Config is the logging section of corosync.conf.
type Config struct {
	ToStderr        bool
	ToLogfile       bool
	ToSyslog        bool
	Logfile         string
	LogfilePriority slog.Level
	// SyslogPriority is the lowest priority sent to syslog.
	SyslogPriority slog.Level
	// SyslogFacility is a facility name (FacilityCode); "" is daemon.
	SyslogFacility string
	// SyslogSocket is the syslog daemon's unix datagram socket
	// (logging.syslog_socket, corobus's own key); DefaultSyslogSocket
	// when empty.
	SyslogSocket string
	// Debug is "off", "on" or "trace" for every subsystem.
	Debug string
	// Timestamp is "off", "on" or "hires".
	Timestamp string
	// SubsysDebug overrides Debug per subsystem (logger_subsys.X.debug).
	SubsysDebug map[string]string
	// Subsys holds the other logger_subsys.X overrides.
	Subsys map[string]Override
}

// Override is what a logger_subsys section changes for its subsystem;
// nil fields keep the top-level setting.
type Override struct {
	ToStderr, ToLogfile, ToSyslog   *bool
	LogfilePriority, SyslogPriority *slog.Level
	SyslogFacility                  *string
}

// sinks is where a subsystem's records go and from which priority on.
type sinks struct {
	stderr, file, syslog       bool
	stderrMin, fileMin, sysMin slog.Level
	facility                   int
}

// sinksFor resolves the top-level settings and the subsystem's overrides.
// As in corosync, debug: on (or trace) for a subsystem sends its debug (or
// trace) records to every output, whatever the priorities say.
func (c *Config) sinksFor(subsys string) sinks {
	s := sinks{stderr: c.ToStderr, file: c.ToLogfile, syslog: c.ToSyslog,
		stderrMin: c.threshold(subsys), fileMin: c.LogfilePriority, sysMin: c.SyslogPriority}
	fac := c.SyslogFacility
	if o, ok := c.Subsys[subsys]; ok {
		if o.ToStderr != nil {
			s.stderr = *o.ToStderr
		}
		if o.ToLogfile != nil {
			s.file = *o.ToLogfile
		}
		if o.ToSyslog != nil {
			s.syslog = *o.ToSyslog
		}
		if o.LogfilePriority != nil {
			s.fileMin = *o.LogfilePriority
		}
		if o.SyslogPriority != nil {
			s.sysMin = *o.SyslogPriority
		}
		if o.SyslogFacility != nil {
			fac = *o.SyslogFacility
		}
	}
	if s.stderrMin < LevelInfo {
		s.fileMin, s.sysMin = s.stderrMin, s.stderrMin
	}
	s.facility, _ = FacilityCode(fac) // checked by ConfigFrom and New
	return s
}

// lowest is the lowest level any output of subsys takes.
func (s sinks) lowest() slog.Level {
	return min(s.stderrMin, s.fileMin, s.sysMin)
}

// wantsFile and wantsSyslog: whether any subsystem writes to the log file
// or to syslog, so that it is opened.
func (c *Config) wantsFile() bool {
	return c.ToLogfile || c.anyOverride(func(o Override) *bool { return o.ToLogfile })
}

// Check reports what would keep New from starting, without creating
// anything: the mistakes New refuses, and a log file that cannot be opened
// (a directory, or in a directory that does not exist). corosync -t
// refuses such a file ("Can't open logfile"); `corobus config` checks it
// as `corobus up` would fail on it.
func (c *Config) Check() error {
	if err := c.check(); err != nil {
		return err
	}
	if !c.wantsFile() {
		return nil
	}
	if st, err := os.Stat(c.Logfile); err == nil && st.IsDir() {
		return fmt.Errorf("the log file %s is a directory", c.Logfile)
	}
	dir := filepath.Dir(c.Logfile)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the log file %s cannot be opened: %w", c.Logfile, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("the log file %s cannot be opened: %s is not a directory", c.Logfile, dir)
	}
	return nil
}

func (c *Config) wantsSyslog() bool {
	return c.ToSyslog || c.anyOverride(func(o Override) *bool { return o.ToSyslog })
}

func (c *Config) anyOverride(f func(Override) *bool) bool {
	for _, o := range c.Subsys {
		if b := f(o); b != nil && *b {
			return true
		}
	}
	return false
}

// check finds what New and Reconfigure cannot apply.
func (c *Config) check() error {
	if _, err := FacilityCode(c.SyslogFacility); err != nil {
		return fmt.Errorf("syslog facility: %w", err)
	}
	for s, o := range c.Subsys {
		if o.SyslogFacility != nil {
			if _, err := FacilityCode(*o.SyslogFacility); err != nil {
				return fmt.Errorf("syslog facility of %s: %w", s, err)
			}
		}
	}
	if c.wantsFile() && c.Logfile == "" {
		return fmt.Errorf("logging to a file without a log file named")
	}
	return nil
}

// Subsystems are the corosync logging subsystems a logger_subsys section
// may name.
func Subsystems() []string {
	return []string{"MAIN", "BUS", "TOTEM", "SYNC", "SERV", "LCR", "OBJDB", "CMAP", "CPG", "QUORUM", "VOTEQ", "CFG", "IPC", "MON", "WD"}
}

// ConfigFrom reads the logging.* keys through get (which returns "" for an
// absent key). Bad values are errors naming the key.
func ConfigFrom(get func(key string) string, subsystems []string) (Config, error) {
	c := Config{LogfilePriority: LevelInfo, SyslogPriority: LevelInfo, SyslogFacility: "daemon",
		Debug: "off", Timestamp: "on", SubsysDebug: map[string]string{}, Subsys: map[string]Override{}}
	var err error
	fail := func(key string, e error) {
		if err == nil {
			err = fmt.Errorf("%s: %w", key, e)
		}
	}
	optBool := func(key string) *bool {
		switch v := get(key); v {
		case "":
			return nil
		case "yes", "on", "true", "1":
			return new(true)
		case "no", "off", "false", "0":
			return new(false)
		default:
			fail(key, fmt.Errorf("expected yes or no, found %q", v))
			return nil
		}
	}
	boolKey := func(key string, def bool) bool {
		if b := optBool(key); b != nil {
			return *b
		}
		return def
	}
	oneOf := func(key, def string, allowed ...string) string {
		v := get(key)
		if v == "" {
			return def
		}
		for _, a := range allowed {
			if v == a {
				return v
			}
		}
		fail(key, fmt.Errorf("expected %s, found %q", strings.Join(allowed, ", "), v))
		return def
	}
	optPriority := func(key string) *slog.Level {
		p := get(key)
		if p == "" {
			return nil
		}
		l, perr := ParsePriority(p)
		if perr != nil {
			fail(key, perr)
			return nil
		}
		return &l
	}
	optFacility := func(key string) *string {
		f := get(key)
		if f == "" {
			return nil
		}
		if _, ferr := FacilityCode(f); ferr != nil {
			fail(key, ferr)
			return nil
		}
		return &f
	}
	c.ToStderr = boolKey("logging.to_stderr", true)
	c.ToLogfile = boolKey("logging.to_logfile", false)
	c.ToSyslog = boolKey("logging.to_syslog", false)
	c.Logfile = get("logging.logfile")
	c.SyslogSocket = get("logging.syslog_socket")
	c.Debug = oneOf("logging.debug", "off", "off", "on", "trace")
	c.Timestamp = oneOf("logging.timestamp", "on", "off", "on", "hires")
	if l := optPriority("logging.logfile_priority"); l != nil {
		c.LogfilePriority = *l
	}
	if l := optPriority("logging.syslog_priority"); l != nil {
		c.SyslogPriority = *l
	}
	if f := optFacility("logging.syslog_facility"); f != nil {
		c.SyslogFacility = *f
	}
	for _, s := range subsystems {
		p := "logging.logger_subsys." + s + "."
		if d := oneOf(p+"debug", "", "off", "on", "trace"); d != "" {
			c.SubsysDebug[s] = d
		}
		o := Override{ToStderr: optBool(p + "to_stderr"), ToLogfile: optBool(p + "to_logfile"), ToSyslog: optBool(p + "to_syslog"),
			LogfilePriority: optPriority(p + "logfile_priority"), SyslogPriority: optPriority(p + "syslog_priority"),
			SyslogFacility: optFacility(p + "syslog_facility")}
		if o != (Override{}) {
			c.Subsys[s] = o
		}
		if o.ToLogfile != nil && *o.ToLogfile && c.Logfile == "" && err == nil {
			err = fmt.Errorf("%sto_logfile is on but logging.logfile is not set", p)
		}
	}
	if c.ToLogfile && c.Logfile == "" && err == nil {
		err = fmt.Errorf("logging.to_logfile is on but logging.logfile is not set")
	}
	return c, err
}

// threshold is the lowest level printed on stderr (and published) for a
// subsystem: info, or what its debug setting asks for.
func (c Config) threshold(subsys string) slog.Level {
	d := c.Debug
	if o, ok := c.SubsysDebug[subsys]; ok {
		d = o
	}
	switch d {
	case "trace":
		return LevelTrace
	case "on":
		return LevelDebug
	}
	return LevelInfo
}

// Options are the parts of a process's logging that are not configuration.
type Options struct {
	Node uint32
	// NodeName is what the lines call the node (config.Node.Name: the
	// nodelist's name); empty: "node<Node>".
	NodeName string
	Layer    string
	// Stderr is where to_stderr writes (os.Stderr when nil).
	Stderr io.Writer
	// RecorderSize bounds the flight recorder (records); 8192 if zero.
	RecorderSize int
	// PublishQueue bounds records waiting to be published; 4096 if zero.
	PublishQueue int
	// RepeatBurst is how many records of one condition (same subsystem,
	// level, message and attributes up to numbers) are printed per
	// RepeatWindow before the rest are only counted and summarized (see
	// Throttle): a safety net under every layer, so that no loop can flood
	// a node's log. 10 if zero; negative: no limit. Debug and trace
	// records are never limited.
	RepeatBurst int
	// RepeatWindow is DefaultThrottleWindow if zero.
	RepeatWindow time.Duration
	// Ident names the process in syslog, as "ident[pid]"; "corobus" if
	// empty.
	Ident string
	// SyslogRetry is how long an unreachable syslog socket is left alone
	// before a record tries it again; DefaultSyslogRetry if zero.
	SyslogRetry time.Duration
}

// Logsys is one process's logging.
type Logsys struct {
	cfg    atomic.Pointer[Config] // replaced whole by Reconfigure
	opts   Options
	out    io.Writer
	mu     sync.Mutex // serializes writes
	file   *os.File
	sys    *syslogConn // nil: no subsystem logs to syslog
	sysOut atomic.Uint64
	rec    *Recorder
	pub    atomic.Pointer[publisher]
	queue  chan Record
	drops  atomic.Uint64
	done   chan struct{}
	closed sync.Once
	logger *slog.Logger
	repeat *Throttle // nil: no limit
}

type publisher struct {
	publish func(subject string, data []byte) error
	subject func(subsys string) string
}

// New opens the log file and the syslog socket if configured and starts
// the publisher. A syslog socket that cannot be reached is no error: a
// warning says so on stderr, records for syslog are dropped (and counted,
// SyslogDropped), and the socket is tried again later.
func New(cfg Config, opts Options) (*Logsys, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.RecorderSize <= 0 {
		opts.RecorderSize = 8192
	}
	if opts.PublishQueue <= 0 {
		opts.PublishQueue = 4096
	}
	if opts.Ident == "" {
		opts.Ident = "corobus"
	}
	l := &Logsys{opts: opts, out: opts.Stderr, rec: NewRecorder(opts.RecorderSize),
		queue: make(chan Record, opts.PublishQueue), done: make(chan struct{})}
	l.cfg.Store(&cfg)
	switch {
	case opts.RepeatBurst == 0:
		l.repeat = NewThrottle(opts.RepeatWindow, 10)
	case opts.RepeatBurst > 0:
		l.repeat = NewThrottle(opts.RepeatWindow, opts.RepeatBurst)
	}
	if cfg.wantsFile() {
		f, err := os.OpenFile(cfg.Logfile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("opening the log file: %w", err)
		}
		l.file = f
	}
	l.mu.Lock()
	l.syslogSwitch(&cfg)
	l.mu.Unlock()
	l.logger = slog.New(&handler{ls: l, subsys: "MAIN"})
	go l.publishLoop()
	return l, nil
}

// syslogSwitch opens, keeps or closes the syslog socket for cfg, under
// l.mu. A socket newly opened is dialled at once, so that a missing
// daemon is reported when the process starts rather than at its first
// record.
func (l *Logsys) syslogSwitch(cfg *Config) {
	path := cfg.SyslogSocket
	if path == "" {
		path = DefaultSyslogSocket
	}
	if l.sys != nil && (!cfg.wantsSyslog() || l.sys.path != path) {
		l.sys.close()
		l.sys = nil
	}
	if l.sys != nil || !cfg.wantsSyslog() {
		return
	}
	l.sys = newSyslogConn(path, l.opts.SyslogRetry)
	if err := l.sys.dial(time.Now()); err != nil {
		l.syslogDown(cfg, err)
	}
}

// syslogDown reports, once per outage, that syslog cannot be reached: on
// stderr whatever to_stderr says (the one place left that a supervisor or
// an operator running the process sees), and in the log file if there is
// one.
func (l *Logsys) syslogDown(cfg *Config, err error) {
	if l.sys.down {
		return
	}
	l.sys.down, l.sys.lost = true, 0
	l.local(cfg, LevelWarning, fmt.Sprintf("cannot log to syslog at %s: %v; records for syslog are dropped until it answers (tried again every %v at most)",
		l.sys.path, err, l.sys.retry))
}

// local writes a record about logging itself to stderr and the log file,
// under l.mu, and returns it; it never goes to syslog (which may be why
// it is written) nor through the throttle.
func (l *Logsys) local(cfg *Config, level slog.Level, msg string) Record {
	r := Record{Time: time.Now(), Node: l.opts.Node, Layer: l.opts.Layer, Subsys: "MAIN", Level: PriorityName(level), Msg: msg, level: level}
	l.rec.Add(r)
	line := l.format(cfg, r)
	_, _ = io.WriteString(l.out, line)
	if l.file != nil {
		_, _ = io.WriteString(l.file, line)
	}
	return r
}

// Reopen closes and reopens the log file (corosync_cfg_reopen_log_files:
// after a log rotation moved the old one away). Without a log file it
// does nothing.
func (l *Logsys) Reopen() error {
	cfg := l.cfg.Load()
	if !cfg.wantsFile() {
		return nil
	}
	f, err := os.OpenFile(cfg.Logfile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("reopening the log file: %w", err)
	}
	l.mu.Lock()
	old := l.file
	l.file = f
	l.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Reconfigure applies a new logging section while the process runs
// (corosync applies logging on corosync_cfg_reload_config): thresholds,
// outputs and format change for the next record; a log file newly named
// is opened before anything changes, so a file that cannot be opened
// leaves the old configuration in place. Syslog switched on (or to
// another socket) is dialled at once; an unreachable one is reported as
// at start, not refused.
func (l *Logsys) Reconfigure(cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	var f *os.File
	if cfg.wantsFile() {
		var err error
		f, err = os.OpenFile(cfg.Logfile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("opening the log file: %w", err)
		}
	}
	l.mu.Lock()
	old := l.file
	l.file = f
	l.cfg.Store(&cfg)
	l.syslogSwitch(&cfg)
	l.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Logger is the process's logger (subsystem MAIN until For/With says
// otherwise).
func (l *Logsys) Logger() *slog.Logger { return l.logger }

// Recorder is the flight recorder.
func (l *Logsys) Recorder() *Recorder { return l.rec }

// Dropped counts records not published because the queue was full.
func (l *Logsys) Dropped() uint64 { return l.drops.Load() }

// SyslogDropped counts records for syslog that were not sent: the daemon
// was not reading (its socket's queue was full) or could not be reached.
func (l *Logsys) SyslogDropped() uint64 { return l.sysOut.Load() }

// Attach starts publishing records: publish sends data on subject (a NATS
// connection's Publish), subject names the subject of a subsystem.
func (l *Logsys) Attach(publish func(subject string, data []byte) error, subject func(subsys string) string) {
	l.pub.Store(&publisher{publish: publish, subject: subject})
}

// Detach stops publishing (before the connection closes).
func (l *Logsys) Detach() { l.pub.Store(nil) }

// Close stops the publisher and closes the log file.
func (l *Logsys) Close() error {
	var err error
	l.closed.Do(func() {
		if l.repeat != nil {
			l.repeat.Flush() // no count is lost at exit
		}
		close(l.done)
		l.mu.Lock()
		if l.file != nil {
			err = l.file.Close()
			l.file = nil
		}
		if l.sys != nil {
			l.sys.close()
			l.sys = nil
		}
		l.mu.Unlock()
	})
	return err
}

// publishLoop sends records in the background: logging never waits for the
// bus, and a publish error is counted, never logged (that would log
// through this very path, forever).
func (l *Logsys) publishLoop() {
	for {
		select {
		case <-l.done:
			return
		case r := <-l.queue:
			p := l.pub.Load()
			if p == nil {
				continue
			}
			b, err := json.Marshal(r)
			if err != nil {
				l.drops.Add(1)
				continue
			}
			if p.publish(p.subject(r.Subsys), b) != nil {
				l.drops.Add(1)
			}
		}
	}
}

// Record is one log record as the flight recorder keeps it and as it is
// published.
type Record struct {
	Time   time.Time         `json:"time"`
	Node   uint32            `json:"node"`
	Layer  string            `json:"layer"`
	Subsys string            `json:"subsys"`
	Level  string            `json:"level"`
	Msg    string            `json:"msg"`
	Attrs  map[string]string `json:"attrs,omitempty"`
	level  slog.Level
}

func (l *Logsys) handle(r Record) {
	l.rec.Add(r)
	cfg := l.cfg.Load()
	sinks := cfg.sinksFor(r.Subsys)
	printable := r.level >= sinks.lowest()
	if printable && l.repeat != nil && r.level >= LevelInfo && !l.repeat.Allow(recordKey(r), func(n int, over time.Duration) {
		s := r
		s.Attrs = make(map[string]string, len(r.Attrs)+2)
		for k, v := range r.Attrs {
			s.Attrs[k] = v
		}
		s.Attrs["repeated"], s.Attrs["over"] = fmt.Sprint(n), over.String()
		s.Time = time.Now()
		// At the end of the window: the configuration may have changed.
		cfg := l.cfg.Load()
		l.output(cfg, cfg.sinksFor(s.Subsys), s)
	}) {
		return // counted; summarized at the end of its window
	}
	if printable {
		l.output(cfg, sinks, r)
	}
}

func recordKey(r Record) string {
	attrs := make([]string, 0, len(r.Attrs))
	for k, v := range r.Attrs {
		attrs = append(attrs, k+"="+v)
	}
	return ConditionKey(r.level, r.Subsys+"|"+r.Msg, attrs)
}

// output prints and publishes a record that passed the filters: on
// stderr and published from the subsystem's debug threshold on, in the
// log file and syslog from their priorities on. s is cfg.sinksFor(r.Subsys).
func (l *Logsys) output(cfg *Config, s sinks, r Record) {
	toStderr := s.stderr && r.level >= s.stderrMin
	toFile := s.file && r.level >= s.fileMin
	toSyslog := s.syslog && r.level >= s.sysMin
	if toStderr || toFile || toSyslog {
		var line string
		if toStderr || toFile {
			line = l.format(cfg, r)
		}
		l.mu.Lock()
		if toStderr {
			_, _ = io.WriteString(l.out, line)
		}
		if toFile && l.file != nil {
			_, _ = io.WriteString(l.file, line)
		}
		if toSyslog && l.sys != nil {
			l.syslog(cfg, s.facility, r)
		}
		l.mu.Unlock()
	}
	if r.level >= s.stderrMin && l.pub.Load() != nil {
		select {
		case l.queue <- r:
		default:
			l.drops.Add(1)
		}
	}
}

// syslog sends r, under l.mu, through corobus's own RFC 3164 client
// (syslog.go) rather than log/syslog: that one writes blocking (a
// stalled daemon would stop every goroutine that logs), dials again on
// every failed record, and has one facility and its own priority map per
// writer, where corosync raises debug and trace one step. The message is the stderr line without its
// time stamp and pid (syslog has both): "node1 cpg [CPG   ] joined
// group=g1", as corosync sends "[CPG   ] …" without its priority, which
// syslog carries.
func (l *Logsys) syslog(cfg *Config, facility int, r Record) {
	now := time.Now()
	err := l.sys.send(l.syslogDatagram(facility, r), now)
	switch {
	case err == nil:
		if l.sys.down {
			l.sys.down = false
			back := l.local(cfg, LevelNotice, fmt.Sprintf("logging to syslog at %s again; records for it dropped meanwhile: %d", l.sys.path, l.sys.lost))
			_ = l.sys.send(l.syslogDatagram(cfg.sinksFor(back.Subsys).facility, back), now)
		}
		return
	case errors.Is(err, errSyslogFull), errors.Is(err, syscall.EMSGSIZE), errors.Is(err, syscall.ENOBUFS), errors.Is(err, errSyslogWaiting):
	default:
		l.syslogDown(cfg, err)
	}
	l.sysOut.Add(1)
	l.sys.lost++
}

// syslogDatagram is r as sent to syslog: "node1 cpg [CPG   ] joined
// group=g1" behind the RFC 3164 header.
func (l *Logsys) syslogDatagram(facility int, r Record) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s ", l.nodeName(), l.opts.Layer)
	writeBody(&b, r)
	return syslogLine(facility, SyslogSeverity(r.level), r.Time, l.opts.Ident, os.Getpid(), b.String())
}

// nodeName is the node as the lines name it.
func (l *Logsys) nodeName() string {
	if l.opts.NodeName != "" {
		return l.opts.NodeName
	}
	return "node" + strconv.FormatUint(uint64(l.opts.Node), 10)
}

// format writes a line the way corosync does:
// "Nov 25 03:10:00.123 [4711] node1 objdb notice  [OBJDB ] message k=v".
func (l *Logsys) format(cfg *Config, r Record) string {
	var b strings.Builder
	switch cfg.Timestamp {
	case "on":
		b.WriteString(r.Time.Format("Jan 02 15:04:05 "))
	case "hires":
		b.WriteString(r.Time.Format("Jan 02 15:04:05.000 "))
	}
	fmt.Fprintf(&b, "[%d] %s %s %-7s ", os.Getpid(), l.nodeName(), l.opts.Layer, PriorityName(r.level))
	writeBody(&b, r)
	b.WriteByte('\n')
	return b.String()
}

// writeBody writes "[SUBSYS] message k=v …", attributes sorted.
func writeBody(b *strings.Builder, r Record) {
	fmt.Fprintf(b, "[%-6s] %s", r.Subsys, r.Msg)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := r.Attrs[k]
		if strings.ContainsAny(v, " \t\"=") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(b, " %s=%s", k, v)
	}
}

// handler is the slog.Handler: it collects attributes, remembers the
// subsystem, and hands finished records to Logsys.
type handler struct {
	ls     *Logsys
	subsys string
	group  string
	attrs  []slog.Attr
}

// Enabled lets everything through: the flight recorder keeps records that
// are not printed, which is what makes it worth dumping after a failure.
func (h *handler) Enabled(context.Context, slog.Level) bool { return true }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Time: r.Time, Node: h.ls.opts.Node, Layer: h.ls.opts.Layer, Subsys: h.subsys,
		Level: PriorityName(r.Level), Msg: r.Message, level: r.Level}
	if len(h.attrs) > 0 || r.NumAttrs() > 0 {
		rec.Attrs = make(map[string]string, len(h.attrs)+r.NumAttrs())
		for _, a := range h.attrs {
			addAttr(rec.Attrs, "", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == SubsysKey {
				rec.Subsys = a.Value.String()
				return true
			}
			addAttr(rec.Attrs, h.group, a)
			return true
		})
	}
	h.ls.handle(rec)
	return nil
}

func addAttr(m map[string]string, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, ga := range a.Value.Group() {
			addAttr(m, key, ga)
		}
		return
	}
	m[key] = a.Value.String()
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr{}, h.attrs...)
	for _, a := range attrs {
		if a.Key == SubsysKey && h.group == "" {
			h2.subsys = a.Value.String()
			continue
		}
		if h.group != "" {
			a = slog.Attr{Key: h.group + "." + a.Key, Value: a.Value}
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	if h.group != "" {
		name = h.group + "." + name
	}
	h2.group = name
	return &h2
}
