package pacemaker

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// notifier is the service manager's notification socket, as systemd gives
// a Type=notify unit ($NOTIFY_SOCKET): the engines of every node send to
// it, and the kernel tells who sent (SO_PASSCRED), as systemd checks that
// READY=1 comes from the unit's main process.
type notifier struct {
	Path string

	mu    sync.Mutex
	ready map[int]bool // pids that said READY=1
	wake  chan struct{}
	conn  *net.UnixConn
}

func newNotifier(t *testing.T) *notifier {
	t.Helper()
	// A short path: sun_path holds 108 bytes.
	dir, err := os.MkdirTemp("", "pcmk-notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	// The engines run as root; in their mount namespaces /tmp is the
	// machine's, so the path reaches them.
	_ = os.Chmod(path, 0o777)
	nf := &notifier{Path: path, ready: map[int]bool{}, wake: make(chan struct{}), conn: conn}
	done := make(chan struct{})
	go nf.read(done)
	t.Cleanup(func() { conn.Close(); <-done })
	return nf
}

func (nf *notifier) read(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := nf.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		pid := senderPID(oob[:oobn])
		if pid == 0 {
			continue
		}
		for _, line := range bytes.Split(buf[:n], []byte("\n")) {
			if string(line) == "READY=1" {
				nf.mu.Lock()
				nf.ready[pid] = true
				close(nf.wake)
				nf.wake = make(chan struct{})
				nf.mu.Unlock()
			}
		}
	}
}

// senderPID is the pid of a datagram's SCM_CREDENTIALS, 0 without one.
func senderPID(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if cred, err := syscall.ParseUnixCredentials(&m); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

// isReady reports whether pid said READY=1, and a channel closed at the
// next READY=1 of anyone.
func (nf *notifier) isReady(pid int) (bool, <-chan struct{}) {
	nf.mu.Lock()
	defer nf.mu.Unlock()
	return nf.ready[pid], nf.wake
}
