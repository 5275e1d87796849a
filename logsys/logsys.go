// Package logsys is corosync's logging system on log/slog: records carry a
// corosync subsystem (TOTEM, CPG, QUORUM, …) and a syslog priority; the
// logging.* keys decide where they go (stderr, a log file) and which
// subsystems log at debug; every record is also kept in a bounded flight
// recorder (corosync's blackbox) and, once a bus connection is attached,
// published on the node's log subject for that subsystem.
package logsys

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	Logfile         string
	LogfilePriority slog.Level
	// Debug is "off", "on" or "trace" for every subsystem.
	Debug string
	// Timestamp is "off", "on" or "hires".
	Timestamp string
	// SubsysDebug overrides Debug per subsystem (logger_subsys.X.debug).
	SubsysDebug map[string]string
}

// Subsystems are the corosync logging subsystems a logger_subsys section
// may name.
func Subsystems() []string {
	return []string{"MAIN", "BUS", "TOTEM", "SYNC", "SERV", "LCR", "OBJDB", "CMAP", "CPG", "QUORUM", "VOTEQ", "CFG", "IPC", "MON", "WD"}
}

// ConfigFrom reads the logging.* keys through get (which returns "" for an
// absent key). Bad values are errors naming the key.
func ConfigFrom(get func(key string) string, subsystems []string) (Config, error) {
	c := Config{LogfilePriority: LevelInfo, Debug: "off", Timestamp: "on", SubsysDebug: map[string]string{}}
	var err error
	boolKey := func(key string, def bool) bool {
		switch v := get(key); v {
		case "":
			return def
		case "yes", "on", "true", "1":
			return true
		case "no", "off", "false", "0":
			return false
		default:
			if err == nil {
				err = fmt.Errorf("%s: expected yes or no, found %q", key, v)
			}
			return def
		}
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
		if err == nil {
			err = fmt.Errorf("%s: expected %s, found %q", key, strings.Join(allowed, ", "), v)
		}
		return def
	}
	c.ToStderr = boolKey("logging.to_stderr", true)
	c.ToLogfile = boolKey("logging.to_logfile", false)
	c.Logfile = get("logging.logfile")
	c.Debug = oneOf("logging.debug", "off", "off", "on", "trace")
	c.Timestamp = oneOf("logging.timestamp", "on", "off", "on", "hires")
	if p := get("logging.logfile_priority"); p != "" {
		l, perr := ParsePriority(p)
		if perr != nil && err == nil {
			err = fmt.Errorf("logging.logfile_priority: %w", perr)
		}
		c.LogfilePriority = l
	}
	for _, s := range subsystems {
		if d := oneOf("logging.logger_subsys."+s+".debug", "", "off", "on", "trace"); d != "" {
			c.SubsysDebug[s] = d
		}
	}
	if c.ToLogfile && c.Logfile == "" && err == nil {
		err = fmt.Errorf("logging.to_logfile is on but logging.logfile is not set")
	}
	return c, err
}

// threshold is the lowest level printed for a subsystem.
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
	Node  uint32
	Layer string
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
}

// Logsys is one process's logging.
type Logsys struct {
	cfg    atomic.Pointer[Config] // replaced whole by Reconfigure
	opts   Options
	out    io.Writer
	mu     sync.Mutex // serializes writes
	file   *os.File
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

// New opens the log file if configured and starts the publisher.
func New(cfg Config, opts Options) (*Logsys, error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.RecorderSize <= 0 {
		opts.RecorderSize = 8192
	}
	if opts.PublishQueue <= 0 {
		opts.PublishQueue = 4096
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
	if cfg.ToLogfile {
		f, err := os.OpenFile(cfg.Logfile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("opening the log file: %w", err)
		}
		l.file = f
	}
	l.logger = slog.New(&handler{ls: l, subsys: "MAIN"})
	go l.publishLoop()
	return l, nil
}

// Reopen closes and reopens the log file (corosync_cfg_reopen_log_files:
// after a log rotation moved the old one away). Without a log file it
// does nothing.
func (l *Logsys) Reopen() error {
	cfg := l.cfg.Load()
	if !cfg.ToLogfile {
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
// leaves the old configuration in place.
func (l *Logsys) Reconfigure(cfg Config) error {
	var f *os.File
	if cfg.ToLogfile {
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
	printable := r.level >= l.cfg.Load().threshold(r.Subsys)
	if printable && l.repeat != nil && r.level >= LevelInfo && !l.repeat.Allow(recordKey(r), func(n int, over time.Duration) {
		s := r
		s.Attrs = make(map[string]string, len(r.Attrs)+2)
		for k, v := range r.Attrs {
			s.Attrs[k] = v
		}
		s.Attrs["repeated"], s.Attrs["over"] = fmt.Sprint(n), over.String()
		s.Time = time.Now()
		l.output(s)
	}) {
		return // counted; summarized at the end of its window
	}
	if printable {
		l.output(r)
	}
}

func recordKey(r Record) string {
	attrs := make([]string, 0, len(r.Attrs))
	for k, v := range r.Attrs {
		attrs = append(attrs, k+"="+v)
	}
	return ConditionKey(r.level, r.Subsys+"|"+r.Msg, attrs)
}

// output prints and publishes a record that passed the filters.
func (l *Logsys) output(r Record) {
	if cfg := l.cfg.Load(); cfg.ToStderr || cfg.ToLogfile {
		line := l.format(cfg, r)
		l.mu.Lock()
		if cfg.ToStderr {
			_, _ = io.WriteString(l.out, line)
		}
		if l.file != nil && r.level >= cfg.LogfilePriority {
			_, _ = io.WriteString(l.file, line)
		}
		l.mu.Unlock()
	}
	if l.pub.Load() != nil {
		select {
		case l.queue <- r:
		default:
			l.drops.Add(1)
		}
	}
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
	fmt.Fprintf(&b, "[%d] node%d %s %-7s [%-6s] %s", os.Getpid(), l.opts.Node, l.opts.Layer, PriorityName(r.level), r.Subsys, r.Msg)
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
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	b.WriteByte('\n')
	return b.String()
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
