package node

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// NotifySocket is the service manager's notification socket named in
// environ ($NOTIFY_SOCKET: set by systemd for a Type=notify unit), or "".
func NotifySocket(environ []string) string {
	sock := ""
	for _, e := range environ {
		if v, ok := strings.CutPrefix(e, "NOTIFY_SOCKET="); ok {
			sock = v // the last assignment wins, as with getenv
		}
	}
	return sock
}

// Notify sends state ("READY=1", "STOPPING=1", …) to the notification
// socket named in environ, as sd_notify(3) does: one datagram on a unix
// socket, a path or, with a leading '@', an abstract name. Without
// $NOTIFY_SOCKET it does nothing and reports false.
func Notify(environ []string, state string) (bool, error) {
	sock := NotifySocket(environ)
	if sock == "" {
		return false, nil
	}
	if sock[0] != '/' && sock[0] != '@' {
		return false, fmt.Errorf("NOTIFY_SOCKET=%q: neither an absolute path nor an abstract name (@…)", sock)
	}
	// Go names an abstract unix address with a leading '@', as systemd
	// does.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notifying the service manager on %s: %w", sock, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notifying the service manager on %s: %w", sock, err)
	}
	return true, nil
}
