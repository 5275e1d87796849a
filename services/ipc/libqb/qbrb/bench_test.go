package qbrb

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWriteRead is the hot path of a SHM request or response: one
// chunk written (with its semaphore post), its token taken and the chunk
// read back, through real mappings of the same files.
func BenchmarkWriteRead(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			name := filepath.Join(b.TempDir(), "rb")
			w, err := Create(name, 1<<20, os.Getuid(), os.Getgid())
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			r, err := Open(name, UserDataSize)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			msg, buf := make([]byte, size), make([]byte, 1<<20)
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := w.Write(msg); err != nil {
					b.Fatal(err)
				}
				if ok, err := r.TryWait(); !ok || err != nil {
					b.Fatal(ok, err)
				}
				if _, err := r.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
