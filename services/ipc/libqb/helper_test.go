package libqb

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
)

// The tests play the attacker with this same test binary, re-executed as
// another user: LIBQB_TEST_HELPER selects what it does, its arguments
// follow "--" on the command line, and it talks with the test in lines on
// stdin and stdout.
const helperEnv = "LIBQB_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		args := os.Args
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		if err := runHelper(mode, args); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if helperBin != "" {
		_ = os.RemoveAll(filepath.Dir(helperBin))
	}
	os.Exit(code)
}

func runHelper(mode string, args []string) error {
	in := bufio.NewScanner(os.Stdin)
	switch mode {
	case "inject":
		// inject REQUEST-SOCKET BIND-NAME|- HEX: one datagram into a
		// connection's request socket, from a socket bound to BIND-NAME
		// when given.
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		if args[1] != "-" {
			// A name given as Go shows abstract names (up to its first
			// NUL) but longer: the padding differs.
			name, _ := hex.DecodeString(args[1])
			if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: "@" + string(name)}); err != nil {
				fmt.Println("bind:", err)
				return nil
			}
		}
		to, err := AbstractAddr(args[0])
		if err != nil {
			return err
		}
		msg, _ := hex.DecodeString(args[2])
		if err := syscall.Sendto(fd, msg, 0, to); err != nil {
			fmt.Println("send:", err)
			return nil
		}
		fmt.Println("sent")
		return nil
	case "flood":
		// flood SERVICE N: N connections that never send anything; on
		// each "count" line, how they stand.
		n, _ := strconv.Atoi(args[1])
		addr, err := AbstractAddr(args[0])
		if err != nil {
			return err
		}
		var open []int
		failed := 0
		for range n {
			fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("socket after %d: %w", len(open), err)
			}
			if err := syscall.Connect(fd, addr); err != nil {
				syscall.Close(fd)
				failed++
				continue
			}
			open = append(open, fd)
		}
		fmt.Printf("connected %d failed %d\n", len(open), failed)
		refused, closed := 0, 0
		buf := make([]byte, connResponseSize)
		for in.Scan() {
			if in.Text() != "count" {
				return nil
			}
			still := open[:0]
			for _, fd := range open {
				n, _, err := syscall.Recvfrom(fd, buf, syscall.MSG_DONTWAIT)
				switch {
				case err != nil && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)):
					still = append(still, fd)
					continue
				case n >= ResHeaderSize && int32(binary.LittleEndian.Uint32(buf[16:])) == -int32(syscall.EAGAIN):
					refused++
				default:
					closed++
				}
				syscall.Close(fd)
			}
			open = still
			fmt.Printf("open %d refused %d closed %d\n", len(open), refused, closed)
		}
		return nil
	case "client":
		// client SERVICE: connect, say where the connection lives, hold
		// it until stdin ends.
		c, resp := dialRaw(args[0])
		if len(resp) != connResponseSize {
			return fmt.Errorf("handshake answered with %d bytes", len(resp))
		}
		fmt.Printf("base %s control %s\n", c.base, c.control)
		_, _ = io.Copy(io.Discard, os.Stdin)
		return nil
	case "probe":
		// probe DIR FILE: what this user can do with another's connection.
		_, err := os.ReadDir(args[0])
		fmt.Printf("readdir: %v\n", errText(err))
		f, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err == nil {
			f.Close()
		}
		fmt.Printf("open: %v\n", errText(err))
		return nil
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// dialRaw is dial without a test: the helper's handshake.
func dialRaw(service string) (*rawClient, []byte) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, nil
	}
	addr, _ := AbstractAddr(service)
	if err := syscall.Connect(fd, addr); err != nil {
		return nil, nil
	}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5})
	if err := writeAll(fd, connRequest(-1, 24, 8192)); err != nil {
		return nil, nil
	}
	resp := make([]byte, connResponseSize)
	got := 0
	for got < len(resp) {
		n, _ := recv(fd, resp[got:])
		if n <= 0 {
			break
		}
		got += n
	}
	return &rawClient{setup: fd, base: cstring(resp[40+pathMax:]), control: cstring(resp[40:])}, resp[:got]
}

// helper is a running helper process.
type helper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

var (
	helperOnce sync.Once
	helperBin  string
	helperErr  error
)

// startHelper runs this test binary as uid (and the same gid) in mode.
// The binary is copied where any user may execute it: `go test` keeps it
// in a directory only its owner can enter.
func startHelper(t *testing.T, uid int, mode string, args ...string) *helper {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("playing another user needs root: skipping")
	}
	helperOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			helperErr = err
			return
		}
		dir, err := os.MkdirTemp("", "libqb-helper")
		if err != nil {
			helperErr = err
			return
		}
		if err = os.Chmod(dir, 0o755); err != nil {
			helperErr = err
			return
		}
		b, err := os.ReadFile(self)
		if err != nil {
			helperErr = err
			return
		}
		helperBin = filepath.Join(dir, "libqb.test")
		helperErr = os.WriteFile(helperBin, b, 0o755)
	})
	if helperErr != nil {
		t.Fatalf("copying the test binary for the helper: %v", helperErr)
	}
	cmd := exec.Command(helperBin, append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stderr = bustest.Writer(t)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the helper: %v", err)
	}
	h := &helper{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return h
}

// line reads the helper's next line.
func (h *helper) line(t *testing.T) string {
	t.Helper()
	if !h.out.Scan() {
		t.Fatalf("helper ended without a line: %v", h.out.Err())
	}
	l := h.out.Text()
	if strings.HasPrefix(l, "error:") {
		t.Fatalf("helper: %s", l)
	}
	return l
}

func (h *helper) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(h.in, line+"\n"); err != nil {
		t.Fatalf("writing to the helper: %v", err)
	}
}
