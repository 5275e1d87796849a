package logsys

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"
)

// DefaultSyslogSocket is where the local syslog daemon (or journald's
// syslog socket) takes records.
const DefaultSyslogSocket = "/dev/log"

// DefaultSyslogRetry is how long a syslog socket that could not be reached
// is left alone before the next record tries it again.
const DefaultSyslogRetry = 5 * time.Second

// syslogMax bounds one datagram: the size rsyslog and syslog-ng take by
// default; a longer record is cut there rather than refused by the kernel.
const syslogMax = 8192

// facilities are libqb's facility names (qb_log_facility2int), which
// corosync's syslog_facility accepts, with their RFC 3164 codes.
var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// FacilityCode is the RFC 3164 code of a facility name; "" is daemon,
// corosync's default.
func FacilityCode(name string) (int, error) {
	if name == "" {
		return facilities["daemon"], nil
	}
	if c, ok := facilities[name]; ok {
		return c, nil
	}
	return 0, fmt.Errorf("expected daemon, local0 … local7, kern, user, mail, auth, syslog, lpr, news, uucp, cron, authpriv or ftp, found %q", name)
}

// SyslogSeverity is the severity a record of level l is sent to syslog
// with. Corosync has libqb raise debug records to info and trace records
// to debug on their way to syslog (QB_LOG_CONF_PRIORITY_BUMP), so that a
// daemon that drops debug still shows what debug: on asked for; corobus
// does the same. Above debug, corosync's priorities are syslog's.
func SyslogSeverity(l slog.Level) int {
	switch {
	case l <= LevelTrace:
		return 7
	case l <= LevelInfo:
		return 6
	case l <= LevelNotice:
		return 5
	case l <= LevelWarning:
		return 4
	case l <= LevelError:
		return 3
	case l <= LevelCrit:
		return 2
	case l <= LevelAlert:
		return 1
	}
	return 0
}

// syslogLine is one RFC 3164 datagram as the C library's syslog(3) sends
// it to the local daemon: "<PRI>Mmm dd hh:mm:ss ident[pid]: message",
// without a host name (the daemon adds its own).
func syslogLine(facility, severity int, t time.Time, ident string, pid int, msg string) []byte {
	b := fmt.Appendf(make([]byte, 0, 64+len(msg)), "<%d>%s %s[%d]: ", facility*8+severity, t.Format(time.Stamp), ident, pid)
	msg = strings.TrimRight(msg, "\n")
	if len(b)+len(msg) > syslogMax {
		msg = msg[:syslogMax-len(b)]
	}
	return append(b, msg...)
}

// errSyslogFull: the daemon is not reading (its socket's queue is full);
// the record is dropped rather than waited for.
var errSyslogFull = errors.New("the syslog socket's queue is full")

// errSyslogWaiting: the socket could not be reached lately and is not
// tried again before its retry time.
var errSyslogWaiting = errors.New("waiting to try the syslog socket again")

// syslogConn is a connected, non-blocking unix datagram socket to the
// syslog daemon. Its owner serializes calls.
type syslogConn struct {
	path  string
	retry time.Duration
	fd    int       // -1: not connected
	next  time.Time // no connection attempt before then
	down  bool      // an outage was reported and has not ended
	lost  uint64    // records dropped since the outage began
}

func newSyslogConn(path string, retry time.Duration) *syslogConn {
	if path == "" {
		path = DefaultSyslogSocket
	}
	if retry <= 0 {
		retry = DefaultSyslogRetry
	}
	return &syslogConn{path: path, retry: retry, fd: -1}
}

func (c *syslogConn) dial(now time.Time) error {
	c.next = now.Add(c.retry)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: c.path}); err != nil {
		_ = syscall.Close(fd)
		return err
	}
	c.fd = fd
	return nil
}

// send writes one datagram and never waits. A full queue drops it
// (errSyslogFull). A socket that fails (the daemon restarted: its old
// socket refuses) is closed and dialled again at once, once; a socket that
// cannot be dialled is tried again after the retry interval, and records
// until then are dropped (errSyslogWaiting).
func (c *syslogConn) send(b []byte, now time.Time) error {
	var last error
	for range 2 {
		if c.fd < 0 {
			if now.Before(c.next) {
				if last != nil {
					return last
				}
				return errSyslogWaiting
			}
			if err := c.dial(now); err != nil {
				return err
			}
		}
		var err error
		for {
			_, err = syscall.Write(c.fd, b)
			if err != syscall.EINTR {
				break
			}
		}
		switch err {
		case nil:
			return nil
		case syscall.EAGAIN:
			return errSyslogFull
		case syscall.EMSGSIZE, syscall.ENOBUFS:
			return err // this record only
		}
		// A connection that worked and fails now: the daemon restarted
		// (its old socket refuses). One new connection at once.
		_ = syscall.Close(c.fd)
		c.fd, last, c.next = -1, err, now
	}
	return last
}

func (c *syslogConn) close() {
	if c.fd >= 0 {
		_ = syscall.Close(c.fd)
		c.fd = -1
	}
}
