package qbrb

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"testing"
)

// hostile is a ring's other side that writes what it likes into the
// shared files, through a mapping of its own: what a client that
// corrupts its shared memory does to the server.
type hostile struct {
	t    *testing.T
	name string
	hdr  []byte
	data []byte
}

func newHostile(t *testing.T, name string) *hostile {
	t.Helper()
	h := &hostile{t: t, name: name}
	var err error
	if h.hdr, err = mapFile(name+"-header", HeaderSize+UserDataSize); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(name + "-data")
	if err != nil {
		t.Fatal(err)
	}
	if h.data, err = mapFile(name+"-data", int(fi.Size())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Munmap(h.hdr); _ = syscall.Munmap(h.data) })
	return h
}

func (h *hostile) hdr32(off int, v uint32)  { binary.LittleEndian.PutUint32(h.hdr[off:], v) }
func (h *hostile) data32(off int, v uint32) { binary.LittleEndian.PutUint32(h.data[off:], v) }

// consumerRing is a ring as the server holds a request ring, with a
// hostile client beside it that already wrote one good message.
func consumerRing(t *testing.T) (*Ring, *hostile, *Ring) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "rb")
	r, err := Create(name, 4096, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	client, err := Open(name, UserDataSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Write(message(1, 100)); err != nil {
		t.Fatal(err)
	}
	return r, newHostile(t, name), client
}

// Each corruption a client can make of a ring the server reads is an
// error of that read — never a crash, never a read outside the mapping.
func TestCorruptedRequestRing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(h *hostile, r *Ring)
		want    error
	}{
		{"chunk size that lies", func(h *hostile, r *Ring) { h.data32(0, 0xfffffff0) }, ErrCorrupt},
		{"chunk size past the write pointer", func(h *hostile, r *Ring) { h.data32(0, 4000) }, ErrCorrupt},
		{"chunk size beyond the largest message", func(h *hostile, r *Ring) { h.data32(0, 4100); h.hdr32(offWritePt, 1100) }, ErrCorrupt},
		{"write pointer beyond the ring", func(h *hostile, r *Ring) { h.hdr32(offWritePt, r.words+7) }, ErrCorrupt},
		{"chunk never committed (killed mid-write)", func(h *hostile, r *Ring) { h.data32(4, magicAlloc) }, ErrEmpty},
		{"chunk already read", func(h *hostile, r *Ring) { h.data32(4, magicDead) }, ErrEmpty},
		{"data file truncated", func(h *hostile, r *Ring) { _ = os.Truncate(h.name+"-data", 0) }, ErrFault},
		{"header file truncated", func(h *hostile, r *Ring) { _ = os.Truncate(h.name+"-header", 0) }, ErrFault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, h, _ := consumerRing(t)
			tc.corrupt(h, r)
			var err error
			if ok, werr := r.TryWait(); werr != nil {
				err = werr
			} else if !ok {
				t.Fatal("no token for the message written")
			} else {
				_, err = r.Read(make([]byte, 4096))
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("read after %s: %v, want %v", tc.name, err, tc.want)
			}
		})
	}
	t.Run("semaphore never posted", func(t *testing.T) {
		r, h, _ := consumerRing(t)
		h.hdr32(offSem, 0) // the message's token taken back
		if ok, err := r.TryWait(); ok || err != nil {
			t.Errorf("a token where none was posted: %v %v", ok, err)
		}
	})
	t.Run("semaphore value beyond SEM_VALUE_MAX", func(t *testing.T) {
		r, h, _ := consumerRing(t)
		h.hdr32(offSem, 0xffffffff)
		if _, err := r.TryWait(); !errors.Is(err, ErrSemCorrupt) {
			t.Errorf("trywait on a corrupt semaphore: %v", err)
		}
	})
}

// The rings the server writes (response, event): a client that lies about
// where it reads, or shrinks the files, makes the write fail; one that
// died while waiting on the semaphore (its waiter count left behind)
// costs a futex wake-up that wakes nobody.
func TestCorruptedResponseRing(t *testing.T) {
	newPair := func(t *testing.T) (*Ring, *hostile) {
		name := filepath.Join(t.TempDir(), "rb")
		r, err := Create(name, 4096, os.Getuid(), os.Getgid())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r, newHostile(t, name)
	}
	t.Run("read pointer beyond the ring", func(t *testing.T) {
		r, h := newPair(t)
		h.hdr32(offReadPt, r.words)
		if err := r.Write(message(1, 10)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("write: %v", err)
		}
	})
	t.Run("read pointer that claims a full ring", func(t *testing.T) {
		r, h := newPair(t)
		h.hdr32(offReadPt, 1)
		if err := r.Write(message(1, 10)); !errors.Is(err, ErrNoRoom) {
			t.Errorf("write: %v", err)
		}
	})
	t.Run("data file truncated", func(t *testing.T) {
		r, h := newPair(t)
		_ = os.Truncate(h.name+"-data", 0)
		if err := r.Write(message(1, 10)); !errors.Is(err, ErrFault) {
			t.Errorf("write: %v", err)
		}
	})
	t.Run("a waiter killed in sem_wait", func(t *testing.T) {
		r, h := newPair(t)
		h.hdr32(offSem+4, 1) // one waiter registered, never to come back
		for i := range 3 {
			if err := r.Write(message(i, 10)); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if n, _ := r.Pending(); n != 3 {
			t.Errorf("%d tokens posted, want 3", n)
		}
	})
	t.Run("semaphore at SEM_VALUE_MAX", func(t *testing.T) {
		r, h := newPair(t)
		if err := r.Write(message(1, 10)); err != nil {
			t.Fatal(err)
		}
		h.hdr32(offSem, semValueMax)
		if err := r.Write(message(2, 10)); !errors.Is(err, ErrSemCorrupt) {
			t.Errorf("write: %v", err)
		}
	})
}

// Random corruption of both files, over and over: whatever a client
// writes, draining the ring ends in an error or an empty ring, every
// message read fits the ring's largest, and the process survives.
func TestRandomCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	n := 1000
	if testing.Short() {
		n = 100
	}
	for range n {
		pokes := make([]byte, 8*(1+rng.IntN(6)))
		for i := range pokes {
			pokes[i] = byte(rng.Uint32())
		}
		corruptAndDrain(t, pokes)
	}
}

// FuzzRingCorruption is TestRandomCorruption driven by the fuzzer:
// go test -fuzz FuzzRingCorruption ./services/ipc/libqb/qbrb
func FuzzRingCorruption(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 2, 1, 0, 0, 0xd0, 0xce, 0x10, 0xa1})
	f.Fuzz(func(t *testing.T, pokes []byte) { corruptAndDrain(t, pokes) })
}

// corruptAndDrain writes a few messages, applies the pokes — 8 bytes
// each: a target (header, data, semaphore, pointer, truncation) and
// offset, then a value — and drains the ring as the server would; then
// applies them to a ring the server writes, and writes.
func corruptAndDrain(t *testing.T, pokes []byte) {
	dir := t.TempDir()
	req, err := Create(filepath.Join(dir, "req"), 4096, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	client, err := Open(req.Name(), UserDataSize)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for i := range 3 {
		_ = client.Write(message(i, 500*i+3))
	}
	applyPokes(&hostile{t: t, name: req.Name(), hdr: client.hdr, data: client.data}, pokes)
	buf := make([]byte, 4096)
	for range 10 {
		ok, err := req.TryWait()
		if err != nil || !ok {
			break
		}
		n, err := req.Read(buf)
		if err != nil {
			break
		}
		if n > req.MaxMessage() {
			t.Fatalf("read %d bytes from a ring of %d", n, req.MaxMessage())
		}
	}

	resp, err := Create(filepath.Join(dir, "resp"), 4096, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	applyPokes(newHostile(t, resp.Name()), pokes)
	for i := range 5 {
		if err := resp.Write(message(i, 1000)); err != nil {
			break
		}
	}
}

func applyPokes(h *hostile, pokes []byte) {
	// The hostile side's own accesses fault too once it truncated a file.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); !fault {
				panic(p)
			}
		}
	}()
	for len(pokes) >= 8 {
		target, off, v := pokes[0]%6, int(binary.LittleEndian.Uint16(pokes[2:])), binary.LittleEndian.Uint32(pokes[4:])
		pokes = pokes[8:]
		switch target {
		case 0: // anywhere in the header's fields
			h.hdr32(off%(HeaderSize+UserDataSize-3)&^3, v)
		case 1: // anywhere in the data
			h.data32(off%len(h.data)&^3, v)
		case 2: // the semaphore's words
			h.hdr32(offSem+4*(off%2), v)
		case 3: // a pointer
			h.hdr32([]int{offWritePt, offReadPt, offWordSize}[off%3], v)
		case 4: // a chunk's size or magic
			h.data32(4*(off%8), v)
		case 5:
			if v%7 == 0 {
				_ = os.Truncate(h.name+[]string{"-header", "-data"}[off%2], int64(v%9000))
			}
		}
	}
}
