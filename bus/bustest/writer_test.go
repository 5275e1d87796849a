package bustest

import (
	"fmt"
	"slices"
	"testing"
)

// recordingTB is a testing.TB whose Log and Cleanup are recorded, so that
// the test can end it and write after.
type recordingTB struct {
	testing.TB
	lines    []string
	cleanups []func()
}

func (r *recordingTB) Log(args ...any)  { r.lines = append(r.lines, fmt.Sprint(args...)) }
func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// A server's goroutine may log after its test's cleanups ran; t.Log then
// panics ("Log in goroutine after ... has completed"). Writer drops those
// lines.
func TestWriterDropsWhatComesAfterTheTest(t *testing.T) {
	tb := &recordingTB{TB: t}
	w := Writer(tb)
	fmt.Fprintln(w, "during")
	for _, f := range slices.Backward(tb.cleanups) {
		f()
	}
	fmt.Fprintln(w, "after")
	if want := []string{"during\n"}; !slices.Equal(tb.lines, want) {
		t.Errorf("logged %q, want %q", tb.lines, want)
	}
}
