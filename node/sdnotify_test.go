package node

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	sent, err := Notify([]string{"PATH=/bin", "NOTIFY_SOCKET=" + sock}, "READY=1")
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v; want true, nil", sent, err)
	}
	_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := l.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Fatalf("received %q, want READY=1", got)
	}

	// Not started by a service manager: nothing to do, and no error.
	if sent, err := Notify([]string{"PATH=/bin"}, "READY=1"); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: Notify = %v, %v; want false, nil", sent, err)
	}
	// A value that names no socket is an error, not a silent success.
	if _, err := Notify([]string{"NOTIFY_SOCKET=relative/path"}, "READY=1"); err == nil {
		t.Fatal("NOTIFY_SOCKET=relative/path: no error")
	}
	// A socket nobody listens on any more.
	l.Close()
	if _, err := Notify([]string{"NOTIFY_SOCKET=" + sock}, "READY=1"); err == nil {
		t.Fatal("closed socket: no error")
	}
}
