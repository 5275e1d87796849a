package qbrb

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// A process-shared POSIX semaphore as glibc 2.34+ lays it out on 64-bit
// Linux (nptl's struct new_sem, sysdeps/nptl/internaltypes.h): one 64-bit
// word holding the value in its low half and the number of possibly
// blocked waiters in its high half, then an int telling the futex calls
// whether they are process-private. sem_post adds a token with a CAS and
// wakes one waiter through a futex on the value's half when the waiter
// count is not zero (nptl/sem_post.c); sem_wait takes a token with a CAS,
// or registers as a waiter and sleeps on that futex while the value is
// zero (nptl/sem_waitcommon.c). That layout is part of glibc's ABI:
// programs built years apart share these semaphores.
const (
	semSize     = 32 // sizeof(sem_t)
	semValueMax = 0x7fffffff
	semNWaiters = 32 // shift of the waiter count
	futexWait   = 0  // FUTEX_WAIT
	futexWake   = 1  // FUTEX_WAKE
	// futexPrivateFlag is FUTEX_PRIVATE_FLAG, glibc's FUTEX_SHARED value.
	futexPrivateFlag = 128
	casAttemptMax    = 1 << 16
)

// Errors of the semaphore.
var (
	// ErrSemCorrupt: the semaphore's word holds what no sem_post and
	// sem_wait can leave there, or another process keeps changing it
	// under a CAS loop.
	ErrSemCorrupt = errors.New("semaphore corrupt")
	// ErrTimeout: no token came in time.
	ErrTimeout = errors.New("timed out waiting on the semaphore")
)

// Sem is a sem_t in shared memory. Its methods must run under the ring's
// fault guard: the memory belongs to a file another process can shrink.
type Sem struct {
	data    *uint64 // value (low 32 bits), waiters (high 32 bits)
	private *int32
}

func semAt(b []byte) Sem {
	return Sem{data: (*uint64)(unsafe.Pointer(&b[0])), private: (*int32)(unsafe.Pointer(&b[8]))}
}

// init is sem_init(sem, pshared=1, 0): no token, no waiter, and glibc's
// FUTEX_SHARED in the private field — which is FUTEX_PRIVATE_FLAG (128):
// glibc's futex calls XOR it away from the flag they always set, so that
// a shared semaphore's futex calls go without it.
func (s Sem) init() {
	atomic.StoreUint64(s.data, 0)
	atomic.StoreInt32(s.private, futexPrivateFlag)
}

// valueWord is the futex: the value's half of the data word.
func (s Sem) valueWord() *uint32 { return (*uint32)(unsafe.Pointer(s.data)) }

// Value is sem_getvalue: the tokens available.
func (s Sem) Value() uint32 { return uint32(atomic.LoadUint64(s.data)) }

// Post is sem_post: one more token, and a wake-up for a waiter if there
// may be one.
func (s Sem) Post() error {
	for range casAttemptMax {
		d := atomic.LoadUint64(s.data)
		if uint32(d) >= semValueMax {
			return ErrSemCorrupt
		}
		if atomic.CompareAndSwapUint64(s.data, d, d+1) {
			if d>>semNWaiters > 0 {
				futexWakeOne(s.valueWord())
			}
			return nil
		}
	}
	return ErrSemCorrupt
}

// TryWait is sem_trywait: take a token if there is one.
func (s Sem) TryWait() (bool, error) {
	for range casAttemptMax {
		d := atomic.LoadUint64(s.data)
		if uint32(d) == 0 {
			return false, nil
		}
		if uint32(d) > semValueMax {
			return false, ErrSemCorrupt
		}
		if atomic.CompareAndSwapUint64(s.data, d, d-1) {
			return true, nil
		}
	}
	return false, ErrSemCorrupt
}

// Wait is sem_timedwait with a relative timeout: take a token, sleeping
// on the futex while there is none. It blocks its thread: for clients,
// never for the server.
func (s Sem) Wait(timeout time.Duration) error {
	if ok, err := s.TryWait(); ok || err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	d := atomic.AddUint64(s.data, 1<<semNWaiters)
	for {
		if uint32(d) == 0 {
			left := time.Until(deadline)
			if left <= 0 {
				atomic.AddUint64(s.data, ^uint64(1<<semNWaiters-1)) // no longer a waiter
				return ErrTimeout
			}
			ts := syscall.NsecToTimespec(left.Nanoseconds())
			// EAGAIN (the value changed), EINTR and wake-ups all mean:
			// look again.
			futex(s.valueWord(), futexWait, 0, &ts)
			d = atomic.LoadUint64(s.data)
			continue
		}
		if atomic.CompareAndSwapUint64(s.data, d, d-1-1<<semNWaiters) {
			return nil
		}
		d = atomic.LoadUint64(s.data)
	}
}

// futexWakeOne wakes one waiter of a word of a shared mapping. FUTEX_WAKE
// never blocks, so it goes without telling the Go scheduler (a raw
// system call): a server that answers a request from an otherwise idle
// process would wake the runtime's monitor thread each time it entered a
// scheduled system call — about a tenth of the gateway's CPU time per
// request before.
func futexWakeOne(addr *uint32) {
	_, _, _ = syscall.RawSyscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWake, 1, 0, 0, 0)
}

// futex is the futex(2) call on a word of a shared mapping: no
// FUTEX_PRIVATE_FLAG, so that it meets the other process's futex on the
// same page.
func futex(addr *uint32, op int, val uint32, ts *syscall.Timespec) syscall.Errno {
	_, _, e := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), uintptr(op), uintptr(val),
		uintptr(unsafe.Pointer(ts)), 0, 0)
	return e
}
