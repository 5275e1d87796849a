// Package testlog holds what tests use to read back what the code under
// test logged.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a log destination (an io.Writer for slog's handlers, a
// supervisor's output, a process's stderr) that a test reads while the
// code under test still writes to it from other goroutines. Its zero
// value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
