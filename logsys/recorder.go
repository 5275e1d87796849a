package logsys

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// Recorder is the flight recorder: the last N records of every level, kept
// in memory whether or not they were printed, and dumped on demand
// (corosync-blackbox).
type Recorder struct {
	mu   sync.Mutex
	buf  []Record
	next int
	full bool
}

// NewRecorder keeps the last size records.
func NewRecorder(size int) *Recorder { return &Recorder{buf: make([]Record, size)} }

// Add records r, overwriting the oldest record when full.
func (r *Recorder) Add(rec Record) {
	r.mu.Lock()
	r.buf[r.next] = rec
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Records returns the kept records, oldest first.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return slices.Clone(r.buf[:r.next])
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}

// Dump writes the records as text lines, oldest first.
func (r *Recorder) Dump(w io.Writer) error {
	for _, rec := range r.Records() {
		var attrs []string
		for k, v := range rec.Attrs {
			attrs = append(attrs, k+"="+v)
		}
		slices.Sort(attrs)
		line := fmt.Sprintf("%s %-7s [%-6s] %s", rec.Time.Format("Jan 02 15:04:05.000000"), rec.Level, rec.Subsys, rec.Msg)
		if len(attrs) > 0 {
			line += " " + strings.Join(attrs, " ")
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
