package qbrb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// peer is testdata/rbpeer.c: the other side of a ring through libqb's
// own qb_rb_* functions.
type peer struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

var (
	peerOnce sync.Once
	peerBin  string
	peerErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if peerBin != "" {
		_ = os.RemoveAll(filepath.Dir(peerBin))
	}
	os.Exit(code)
}

// startPeer runs rbpeer MODE NAME MAXMSG, skipping visibly when libqb's
// development files or gcc are missing.
func startPeer(t *testing.T, mode, name string, maxMsg int) *peer {
	t.Helper()
	if _, err := os.Stat("/usr/include/qb/qbrb.h"); err != nil {
		t.Skipf("libqb's headers are missing (apt-get install libqb-dev): skipping the comparison with libqb")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skipf("gcc is missing: skipping the comparison with libqb")
	}
	peerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rbpeer")
		if err != nil {
			peerErr = err
			return
		}
		peerBin = filepath.Join(dir, "rbpeer")
		if out, err := exec.Command("gcc", "-O2", "-o", peerBin, "testdata/rbpeer.c", "-lqb").CombinedOutput(); err != nil {
			peerErr = fmt.Errorf("building rbpeer: %v\n%s", err, out)
		}
	})
	if peerErr != nil {
		t.Fatal(peerErr)
	}
	cmd := exec.Command(peerBin, mode, name, fmt.Sprint(maxMsg))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<22)}
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
	if got := p.line(); got != "ready" {
		t.Fatalf("rbpeer %s: %s", mode, got)
	}
	return p
}

func (p *peer) line() string {
	p.t.Helper()
	l, err := p.out.ReadString('\n')
	if err != nil {
		p.t.Fatalf("rbpeer ended: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

func (p *peer) do(cmd string) string {
	p.t.Helper()
	p.send(cmd)
	return p.line()
}

func (p *peer) send(cmd string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) write(msg []byte) {
	p.t.Helper()
	if got := p.do("write " + hex.EncodeToString(msg)); got != fmt.Sprintf("wrote %d", len(msg)) {
		p.t.Fatalf("libqb's write of %d bytes: %s", len(msg), got)
	}
}

func (p *peer) read(timeout time.Duration) []byte {
	p.t.Helper()
	got := p.do(fmt.Sprintf("read %d", timeout.Milliseconds()))
	h, ok := strings.CutPrefix(got, "read ")
	if !ok && got != "read" {
		p.t.Fatalf("libqb's read: %s", got)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// message is a test message of n bytes that says which one it is.
func message(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	if n >= 4 {
		binary.LittleEndian.PutUint32(b, uint32(i))
	}
	return b
}

// A ring libqb creates and a ring this package creates have the same
// header, byte for byte but for their paths, and the same data file.
func TestLayoutMatchesLibqb(t *testing.T) {
	dir := t.TempDir()
	const maxMsg = 8192
	theirs := filepath.Join(dir, "theirs")
	p := startPeer(t, "create", theirs, maxMsg)
	ours, err := Create(filepath.Join(dir, "ours"), maxMsg, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	th, oh := read(theirs+"-header"), read(ours.Name()+"-header")
	if len(th) != HeaderSize+UserDataSize || len(oh) != len(th) {
		t.Fatalf("header files: libqb's %d bytes, ours %d, want %d", len(th), len(oh), HeaderSize+UserDataSize)
	}
	if got := cstring(th[offHdrPath:]); got != theirs+"-header" {
		t.Errorf("libqb's hdr_path at %d: %q", offHdrPath, got)
	}
	if got := cstring(th[offDataPath:]); got != theirs+"-data" {
		t.Errorf("libqb's data_path at %d: %q", offDataPath, got)
	}
	blank := func(h []byte) []byte {
		h = bytes.Clone(h)
		clear(h[offHdrPath:offRefCount])
		return h
	}
	if !bytes.Equal(blank(th), blank(oh)) {
		t.Errorf("headers differ beyond their paths:\nlibqb %x\nours  %x", blank(th)[:16], blank(oh)[:16])
		for i := range th {
			if blank(th)[i] != blank(oh)[i] {
				t.Errorf("first difference at offset %d: libqb %#x, ours %#x", i, th[i], oh[i])
				break
			}
		}
	}
	td, od := read(theirs+"-data"), read(ours.Name()+"-data")
	if len(td) != DataSize(maxMsg) || !bytes.Equal(td, od) {
		t.Errorf("data files: libqb's %d bytes (word 0 = %d), ours %d (word 0 = %d)", len(td), get32(td, 0), len(od), get32(od, 0))
	}
	p.do("close")
}

// Messages this package writes reach a libqb reader, which sleeps on the
// semaphore's futex until they come; messages libqb writes reach this
// package, sleeping the same way. A ring carries one direction, as each
// of a libqb connection's three does; sizes vary so that chunks wrap
// around the ring's end.
func TestExchangeWithLibqb(t *testing.T) {
	const maxMsg = 8192
	for _, creator := range []string{"us", "libqb"} {
		t.Run("created by "+creator, func(t *testing.T) {
			dir := t.TempDir()
			// out: we write, libqb reads; in: libqb writes, we read.
			open := func(name string) (*Ring, *peer) {
				name = filepath.Join(dir, name)
				if creator == "us" {
					r, err := Create(name, maxMsg, os.Getuid(), os.Getgid())
					if err != nil {
						t.Fatal(err)
					}
					return r, startPeer(t, "open", name, maxMsg)
				}
				p := startPeer(t, "create", name, maxMsg)
				r, err := Open(name, UserDataSize)
				if err != nil {
					t.Fatal(err)
				}
				return r, p
			}
			out, reader := open("out")
			defer out.Close()
			in, writer := open("in")
			defer in.Close()
			for _, r := range []*Ring{out, in} {
				if n, err := r.RefCount(); n != 2 || err != nil {
					t.Fatalf("ref_count %d (%v) with both sides mapped, want 2", n, err)
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, maxMsg)
			for i := range 300 {
				n := rng.IntN(maxMsg + 1)
				if i%3 == 0 {
					n = rng.IntN(64)
				}
				msg := message(i, n)
				if i%50 == 0 {
					// libqb's reader waits first: our post must wake it.
					reader.send("read 5000")
					time.Sleep(20 * time.Millisecond)
					if err := out.Write(msg); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					got := reader.line()
					if got != "read "+hex.EncodeToString(msg) && !(n == 0 && got == "read ") {
						t.Fatalf("message %d (%d bytes) read by libqb as %.60s…", i, n, got)
					}
				} else {
					if err := out.Write(msg); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					if got := reader.read(time.Second); !bytes.Equal(got, msg) {
						t.Fatalf("message %d (%d bytes) read by libqb as %d bytes", i, n, len(got))
					}
				}
				back := message(i+1000, rng.IntN(maxMsg+1))
				if i%50 == 1 {
					// We wait first: libqb's post must wake us.
					done := make(chan error, 1)
					go func() { done <- in.Wait(5 * time.Second) }()
					time.Sleep(20 * time.Millisecond)
					writer.write(back)
					if err := <-done; err != nil {
						t.Fatalf("waiting for libqb's message %d: %v", i, err)
					}
				} else {
					writer.write(back)
					if err := in.Wait(5 * time.Second); err != nil {
						t.Fatalf("waiting for libqb's message %d: %v", i, err)
					}
				}
				got, err := in.Read(buf)
				if err != nil || !bytes.Equal(buf[:got], back) {
					t.Fatalf("libqb's message %d: %d bytes, %v", i, got, err)
				}
			}
			// Several chunks in flight, up to a full ring.
			var sent [][]byte
			for i := 0; ; i++ {
				msg := message(i, 1000+i)
				if err := out.Write(msg); err == ErrNoRoom {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, msg)
			}
			if len(sent) < 2 {
				t.Fatalf("the ring took %d messages of about 1000 bytes", len(sent))
			}
			for i, msg := range sent {
				if got := reader.read(time.Second); !bytes.Equal(got, msg) {
					t.Fatalf("queued message %d read by libqb as %d bytes", i, len(got))
				}
			}
			// Our user data is what libqb calls shared user data.
			if err := out.SetUserData32(1); err != nil {
				t.Fatal(err)
			}
			if got := reader.do("userdata"); got != "userdata 1" {
				t.Errorf("libqb reads the flag we set as %s", got)
			}
			// Nothing pending: a wait times out, a read finds nothing.
			if err := in.Wait(50 * time.Millisecond); err != ErrTimeout {
				t.Errorf("wait on an empty ring: %v", err)
			}
			if got := reader.do("read 50"); got != "err -110" {
				t.Errorf("libqb's read of an empty ring: %s, want -ETIMEDOUT", got)
			}
			if creator == "us" {
				reader.do("close")
				if n, _ := out.RefCount(); n != 1 {
					t.Errorf("ref_count %d after libqb closed, want 1", n)
				}
			}
		})
	}
}

// When the creator closes, the peer's ref_count reads 0 — what libqb's
// client takes for a closed connection — and the files are gone.
func TestCreatorCloseSeenByLibqb(t *testing.T) {
	name := filepath.Join(t.TempDir(), "rb")
	r, err := Create(name, 4096, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	p := startPeer(t, "open", name, 4096)
	if got := p.do("refcount"); got != "refcount 2" {
		t.Fatalf("libqb sees %s", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.do("refcount"); got != "refcount 0" {
		t.Errorf("after the creator's close libqb sees %s, want 0", got)
	}
	for _, f := range []string{name + "-header", name + "-data"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", f, err)
		}
	}
}
