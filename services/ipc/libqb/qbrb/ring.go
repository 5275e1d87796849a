// Package qbrb is libqb's process-shared ring buffer (qb_rb_* of libqb
// 2.0, lib/ringbuffer.c, lib/ringbuffer_helper.c), byte for byte, so that
// a Go process and a libqb program exchange messages through it: the
// transport of libqb's SHM IPC, in which each connection has three of
// them (request, response, event).
//
// A ring is two files of /dev/shm. "<name>-header" holds the shared
// header (64-bit Linux, every field at libqb's offset):
//
//	 0 write_pt  u32    where the producer writes next (in 32-bit words)
//	 4 read_pt   u32    where the consumer reads next
//	 8 word_size u32    the data's size in words
//	12 hdr_path  [4096] this file's path
//	4108 data_path [4096] the data file's path
//	8204 ref_count i32  1 while only the creator maps it, 2 with its peer
//	8208 posix_sem sem_t (32 bytes): one token per chunk written
//	8240 user_data       what the user asked for (SHM IPC: an i32, the
//	                     request ring's flow-control flag)
//
// "<name>-data" holds the chunks: a size word (bytes), a magic word
// (0xA1A1A1A1 once committed, 0xA110CED0 while written, 0xD0D0D0D0 once
// read), then the data padded to a word, wrapping at the end (libqb maps
// the file twice in a row to write across the end; this package copies
// in two parts instead). The producer owns write_pt, the consumer
// read_pt; a chunk is visible once its magic is committed, after the new
// write_pt. libqb 2.0's process-shared rings use no lock: one producer,
// one consumer, the semaphore and the magic words order them.
//
// The other side of a ring is another process, maybe hostile: nothing
// read from the shared memory is trusted. The ring's size, its pointers
// and its path are this side's own; a pointer or a chunk size read from
// the mapping is checked before use, every index is reduced into the
// mapping, and an access that faults (the peer shrank a file under the
// mapping: SIGBUS) is recovered into ErrFault. Any of those ends the ring
// for its user, never the process.
package qbrb

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Layout of struct qb_ringbuffer_shared_s on 64-bit Linux.
const (
	pathMax         = 4096
	offWritePt      = 0
	offReadPt       = 4
	offWordSize     = 8
	offHdrPath      = 12
	offDataPath     = offHdrPath + pathMax  // 4108
	offRefCount     = offDataPath + pathMax // 8204
	offSem          = offRefCount + 4       // 8208, sem_t aligned to 8
	offUserData     = offSem + semSize      // 8240
	HeaderSize      = offUserData + 8       // 8248: sizeof, aligned(8)
	UserDataSize    = 4                     // what SHM IPC asks for: an int32
	chunkHeaderWord = 2
	// ChunkMargin is what libqb reserves beside each chunk's data when it
	// checks for room: the two header words and one for alignment.
	ChunkMargin = 4 * (chunkHeaderWord + 1)
)

// Chunk magic words.
const (
	magicCommitted = 0xA1A1A1A1
	magicDead      = 0xD0D0D0D0
	magicAlloc     = 0xA110CED0
)

// Errors of a ring. Every one but ErrNoRoom and ErrEmpty means the peer
// broke the protocol or the memory: the ring is unusable.
var (
	ErrNoRoom  = errors.New("no room in the ring")
	ErrEmpty   = errors.New("no chunk in the ring")
	ErrCorrupt = errors.New("ring corrupt")
	ErrFault   = errors.New("ring memory fault (a file shrunk under its mapping)")
	ErrTooBig  = errors.New("message larger than the ring takes")
	ErrClosed  = errors.New("ring closed")
)

// Ring is one side of a shared ring. It is not safe for concurrent use:
// its user serializes writes, and reads.
type Ring struct {
	name      string
	hdr, data []byte
	words     uint32 // the data's size in words: this side's own
	maxChunk  int    // the largest message
	readPos   uint32 // the consumer's read_pt, this side's own
	writePos  uint32 // the producer's write_pt, this side's own
	creator   bool
	sem       Sem
}

// DataSize is the size of the data file libqb makes for messages of up to
// maxMsgSize bytes: room for one message, its margin and one byte,
// rounded up to whole pages.
func DataSize(maxMsgSize int) int {
	page := os.Getpagesize()
	n := maxMsgSize + ChunkMargin + 1
	return (n + page - 1) / page * page
}

// Create makes the ring name (files name-header and name-data, which must
// not exist), as libqb's qb_rb_open with QB_RB_FLAG_CREATE |
// QB_RB_FLAG_SHARED_PROCESS and sizeof(int32_t) of user data, then gives
// both files to uid:gid, mode 0600 (qb_rb_chown, qb_rb_chmod).
func Create(name string, maxMsgSize, uid, gid int) (r *Ring, err error) {
	hdrPath, dataPath := name+"-header", name+"-data"
	if len(dataPath) >= pathMax || len(hdrPath) >= pathMax {
		return nil, fmt.Errorf("ring %s: name too long", name)
	}
	size := DataSize(maxMsgSize)
	r = &Ring{name: name, words: uint32(size / 4), maxChunk: maxMsgSize, creator: true}
	defer func() {
		if err != nil {
			r.unmap()
			_ = os.Remove(hdrPath)
			_ = os.Remove(dataPath)
		}
	}()
	if r.hdr, err = createMapped(hdrPath, HeaderSize+UserDataSize, uid, gid); err != nil {
		return nil, err
	}
	if r.data, err = createMapped(dataPath, size, uid, gid); err != nil {
		return nil, err
	}
	// Nothing else maps the files yet: plain stores, then the header.
	r.sem = semAt(r.hdr[offSem:])
	r.sem.init()
	put32(r.hdr, offWordSize, r.words)
	put32(r.hdr, offWritePt, 0)
	put32(r.hdr, offReadPt, 0)
	copy(r.hdr[offHdrPath:offHdrPath+pathMax-1], hdrPath)
	copy(r.hdr[offDataPath:offDataPath+pathMax-1], dataPath)
	// libqb writes 5 one word past the end of its doubled mapping's first
	// half, which is word 0; the first chunk written overwrites it.
	put32(r.data, 0, 5)
	atomic.StoreInt32(r.i32(offRefCount), 1)
	return r, nil
}

// createMapped creates path (never following a link, never an existing
// file), sizes and allocates it, hands it to uid:gid mode 0600, and maps
// it shared.
func createMapped(path string, size, uid, gid int) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("sizing %s: %w", path, err)
	}
	// Allocated now, so that a full /dev/shm fails here rather than as a
	// SIGBUS on a later write (posix_fallocate, as libqb).
	if err := syscall.Fallocate(fd, 0, 0, int64(size)); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return nil, fmt.Errorf("allocating %s: %w", path, err)
	}
	if err := syscall.Fchown(fd, uid, gid); err != nil && !errors.Is(err, syscall.EPERM) {
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := syscall.Fchmod(fd, 0o600); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	b, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return b, nil
}

// Open maps an existing ring as its peer does (qb_rb_open without
// QB_RB_FLAG_CREATE): the header with userData bytes of user data, then
// the data file the header names, and counts itself in ref_count. The
// header is the creator's word: for clients of a server they trust.
func Open(name string, userData int) (r *Ring, err error) {
	r = &Ring{name: name}
	defer func() {
		if err != nil {
			r.unmap()
		}
	}()
	if r.hdr, err = mapFile(name+"-header", HeaderSize+userData); err != nil {
		return nil, err
	}
	r.sem = semAt(r.hdr[offSem:])
	r.words = get32(r.hdr, offWordSize)
	dataPath := cstring(r.hdr[offDataPath : offDataPath+pathMax])
	if dataPath != name+"-data" {
		return nil, fmt.Errorf("ring %s: header names data file %q: %w", name, dataPath, ErrCorrupt)
	}
	if r.words == 0 || r.words > 1<<28 {
		return nil, fmt.Errorf("ring %s: word_size %d: %w", name, r.words, ErrCorrupt)
	}
	if r.data, err = mapFile(dataPath, int(r.words)*4); err != nil {
		return nil, err
	}
	r.maxChunk = int(r.words)*4 - ChunkMargin - 1
	if r.readPos, r.writePos = get32(r.hdr, offReadPt), get32(r.hdr, offWritePt); r.readPos >= r.words || r.writePos >= r.words {
		return nil, fmt.Errorf("ring %s: pointers %d/%d of %d words: %w", name, r.readPos, r.writePos, r.words, ErrCorrupt)
	}
	atomic.AddInt32(r.i32(offRefCount), 1)
	return r, nil
}

func mapFile(path string, size int) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer syscall.Close(fd)
	b, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return b, nil
}

// Name is the ring's name: its files are Name()+"-header" and "-data".
func (r *Ring) Name() string { return r.name }

// MaxMessage is the largest message the ring takes.
func (r *Ring) MaxMessage() int { return r.maxChunk }

// guarded runs f with faults on the mappings turned into ErrFault: a
// peer that truncates a ring's file makes this side's next access to the
// lost pages raise SIGBUS, which the runtime then reports as a panic of
// this goroutine instead of a crash of the process.
func (r *Ring) guarded(f func() error) (err error) {
	if r.hdr == nil || r.data == nil {
		return ErrClosed
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); !fault {
				panic(p)
			}
			err = fmt.Errorf("ring %s: %w: %v", r.name, ErrFault, p)
		}
	}()
	return f()
}

// Write appends msg as one chunk and posts the semaphore: the producer's
// qb_rb_chunk_write. ErrNoRoom when the consumer has not read enough yet.
func (r *Ring) Write(msg []byte) error {
	if len(msg) > r.maxChunk {
		return fmt.Errorf("ring %s: %d bytes: %w", r.name, len(msg), ErrTooBig)
	}
	return r.guarded(func() error {
		rp := atomic.LoadUint32(r.u32(offReadPt))
		if rp >= r.words {
			return fmt.Errorf("ring %s: read_pt %d of %d words: %w", r.name, rp, r.words, ErrCorrupt)
		}
		wp := r.writePos
		if r.free(wp, rp) < len(msg)+ChunkMargin {
			return ErrNoRoom
		}
		r.setWord(wp, 0)
		atomic.StoreUint32(r.word(wp+1), magicAlloc)
		r.copyIn(wp+chunkHeaderWord, msg)
		r.setWord(wp, uint32(len(msg)))
		next := r.step(wp, uint32(len(msg)))
		atomic.StoreUint32(r.u32(offWritePt), next)
		atomic.StoreUint32(r.word(wp+1), magicCommitted)
		r.writePos = next
		return r.sem.Post()
	})
}

// free is qb_rb_space_free: the bytes the producer may use.
func (r *Ring) free(wp, rp uint32) int {
	var words uint32
	switch {
	case wp > rp:
		words = rp - wp + r.words - 1
	case wp < rp:
		words = rp - wp - 1
	case r.sem.Value() > 0:
		words = 0
	default:
		words = r.words
	}
	return int(words) * 4
}

// Read takes the next chunk into buf once the semaphore gave its token
// (TryWait, Wait): the consumer's qb_rb_chunk_read. The chunk is checked
// against what the producer committed — its magic, its size against the
// ring's largest message and buf, its end against write_pt — copied, then
// reclaimed. ErrEmpty when there is no committed chunk (a token without a
// chunk is the producer's error: the caller decides).
func (r *Ring) Read(buf []byte) (n int, err error) {
	err = r.guarded(func() error {
		rp := r.readPos
		if atomic.LoadUint32(r.word(rp+1)) != magicCommitted {
			return ErrEmpty
		}
		size := r.getWord(rp)
		wp := atomic.LoadUint32(r.u32(offWritePt))
		if wp >= r.words {
			return fmt.Errorf("ring %s: write_pt %d of %d words: %w", r.name, wp, r.words, ErrCorrupt)
		}
		if int64(size) > int64(r.maxChunk) || int64(size) > int64(len(buf)) {
			return fmt.Errorf("ring %s: chunk of %d bytes (at most %d): %w", r.name, size, min(r.maxChunk, len(buf)), ErrCorrupt)
		}
		used := (wp + r.words - rp) % r.words
		if chunkHeaderWord+(size+3)/4 > used {
			return fmt.Errorf("ring %s: chunk of %d bytes at %d runs past write_pt %d: %w", r.name, size, rp, wp, ErrCorrupt)
		}
		r.copyOut(buf[:size], rp+chunkHeaderWord)
		n = int(size)
		r.setWord(rp, 0)
		atomic.StoreUint32(r.word(rp+1), magicDead)
		r.readPos = r.step(rp, size)
		atomic.StoreUint32(r.u32(offReadPt), r.readPos)
		return nil
	})
	return n, err
}

// TryWait takes one of the semaphore's tokens if there is one.
func (r *Ring) TryWait() (ok bool, err error) {
	err = r.guarded(func() error {
		ok, err = r.sem.TryWait()
		return err
	})
	return ok, err
}

// Poll watches the semaphore for up to spin without sleeping and without
// taking a token: true as soon as one is posted. A busy wait, for a
// server that expects a synchronous client's next request within
// microseconds of its response.
func (r *Ring) Poll(spin time.Duration) (posted bool, err error) {
	err = r.guarded(func() error {
		start := time.Now()
		for i := 1; ; i++ {
			if r.sem.Value() != 0 {
				posted = true
				return nil
			}
			// The clock is read every 64 looks only: the look is a load.
			if i%64 == 0 && time.Since(start) >= spin {
				return nil
			}
		}
	})
	return posted, err
}

// Wait takes one of the semaphore's tokens, sleeping up to timeout on its
// futex (a client's wait: it blocks the thread).
func (r *Ring) Wait(timeout time.Duration) error {
	return r.guarded(func() error { return r.sem.Wait(timeout) })
}

// Pending is the semaphore's value: the chunks written and not yet read.
func (r *Ring) Pending() (n uint32, err error) {
	err = r.guarded(func() error { n = r.sem.Value(); return nil })
	return n, err
}

// RefCount is ref_count: 2 while both sides map the ring. libqb's client
// reads a request ring whose count is not 2 as a closed connection.
func (r *Ring) RefCount() (n int32, err error) {
	err = r.guarded(func() error { n = atomic.LoadInt32(r.i32(offRefCount)); return nil })
	return n, err
}

// UserData32 and SetUserData32 read and write the int32 of user data (the
// SHM IPC's flow-control flag, in the request ring).
func (r *Ring) UserData32() (v int32, err error) {
	err = r.guarded(func() error { v = atomic.LoadInt32(r.i32(offUserData)); return nil })
	return v, err
}

func (r *Ring) SetUserData32(v int32) error {
	return r.guarded(func() error { atomic.StoreInt32(r.i32(offUserData), v); return nil })
}

// Close ends this side's use of the ring. The creator does what libqb's
// server does (qb_rb_lastref_and_ret, qb_rb_close): the count drops to 0,
// which the peer reads as the end, and the files are unlinked; the peer
// only uncounts itself. Both unmap.
func (r *Ring) Close() error {
	if r.hdr != nil {
		_ = r.guarded(func() error {
			if r.creator {
				atomic.StoreInt32(r.i32(offRefCount), 0)
			} else {
				atomic.AddInt32(r.i32(offRefCount), -1)
			}
			return nil
		})
	}
	r.unmap()
	if r.creator {
		e1 := os.Remove(r.name + "-data")
		e2 := os.Remove(r.name + "-header")
		if e1 != nil && !errors.Is(e1, os.ErrNotExist) {
			return e1
		}
		if e2 != nil && !errors.Is(e2, os.ErrNotExist) {
			return e2
		}
	}
	return nil
}

func (r *Ring) unmap() {
	if r.data != nil {
		_ = syscall.Munmap(r.data)
		r.data = nil
	}
	if r.hdr != nil {
		_ = syscall.Munmap(r.hdr)
		r.hdr = nil
	}
}

// step is qb_rb_chunk_step: the word after a chunk of size bytes at p.
func (r *Ring) step(p, size uint32) uint32 {
	p += chunkHeaderWord + size/4
	if size%4 != 0 {
		p++
	}
	return p % r.words
}

// word addresses the data's word i (reduced into the ring).
func (r *Ring) word(i uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.data[4*(i%r.words)]))
}

func (r *Ring) getWord(i uint32) uint32    { return *r.word(i) }
func (r *Ring) setWord(i uint32, v uint32) { *r.word(i) = v }

// copyIn writes b at word i, wrapping at the end of the data.
func (r *Ring) copyIn(i uint32, b []byte) {
	off := int(4 * (i % r.words))
	n := copy(r.data[off:], b)
	copy(r.data, b[n:])
}

// copyOut reads len(b) bytes at word i, wrapping at the end of the data.
func (r *Ring) copyOut(b []byte, i uint32) {
	off := int(4 * (i % r.words))
	n := copy(b, r.data[off:])
	copy(b[n:], r.data)
}

func (r *Ring) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.hdr[off])) }
func (r *Ring) i32(off int) *int32  { return (*int32)(unsafe.Pointer(&r.hdr[off])) }

func put32(b []byte, off int, v uint32) { *(*uint32)(unsafe.Pointer(&b[off])) = v }
func get32(b []byte, off int) uint32    { return *(*uint32)(unsafe.Pointer(&b[off])) }

func cstring(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}
