package logsys

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Throttle bounds how often a repeated condition is logged. The first
// Burst occurrences of a key in a window are printed; the rest are counted,
// and when the window ends one summary line says how many there were. A
// key that keeps repeating after that gets only the summary, once per
// window; a key quiet for a whole window is forgotten, so that the next
// occurrence is printed at once. So a condition that repeats forever costs
// at most Burst+1 lines in its first window and one line per window after.
type Throttle struct {
	every time.Duration
	burst int
	clock Clock

	mu   sync.Mutex
	keys map[string]*throttleWindow
}

// Clock is the time a Throttle runs on (tests replace it).
type Clock interface {
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

type throttleWindow struct {
	printed    int
	suppressed int
	summary    func(repeated int, over time.Duration)
	stop       func() bool
}

// maxThrottleKeys bounds a throttle's memory: past it, new keys are not
// tracked (they are printed), which only happens when nothing repeats.
const maxThrottleKeys = 4096

// DefaultThrottleWindow is how often a repeating condition is summarized.
const DefaultThrottleWindow = time.Minute

// NewThrottle summarizes once per every, after burst printed occurrences
// (both at least 1).
func NewThrottle(every time.Duration, burst int) *Throttle {
	return NewThrottleClock(every, burst, realClock{})
}

// NewThrottleClock is NewThrottle on a given clock.
func NewThrottleClock(every time.Duration, burst int, clock Clock) *Throttle {
	if every <= 0 {
		every = DefaultThrottleWindow
	}
	return &Throttle{every: every, burst: max(burst, 1), clock: clock, keys: map[string]*throttleWindow{}}
}

// Allow reports whether an occurrence of key may be printed now. When it
// may not, it is counted, and summary (the latest one given) is called at
// the end of the window, outside any lock, with the count.
func (t *Throttle) Allow(key string, summary func(repeated int, over time.Duration)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.keys[key]
	if w == nil {
		if len(t.keys) >= maxThrottleKeys {
			return true
		}
		w = &throttleWindow{}
		t.keys[key] = w
		w.stop = t.clock.AfterFunc(t.every, func() { t.endWindow(key, w) })
	}
	if w.printed < t.burst {
		w.printed++
		return true
	}
	w.suppressed++
	w.summary = summary
	return false
}

// endWindow prints a key's summary, if it has one, and starts its next
// window with no burst left; a key with nothing to summarize is forgotten.
func (t *Throttle) endWindow(key string, w *throttleWindow) {
	t.mu.Lock()
	if t.keys[key] != w {
		t.mu.Unlock()
		return // flushed meanwhile
	}
	n, summary := w.suppressed, w.summary
	if n == 0 {
		delete(t.keys, key)
		t.mu.Unlock()
		return
	}
	w.suppressed, w.summary, w.printed = 0, nil, t.burst
	w.stop = t.clock.AfterFunc(t.every, func() { t.endWindow(key, w) })
	t.mu.Unlock()
	summary(n, t.every)
}

// Flush prints every pending summary now and forgets every key (at exit,
// so that no count is lost).
func (t *Throttle) Flush() {
	t.mu.Lock()
	var pending []func()
	for key, w := range t.keys {
		w.stop()
		if w.suppressed > 0 {
			n, s := w.suppressed, w.summary
			pending = append(pending, func() { s(n, t.every) })
		}
		delete(t.keys, key)
	}
	t.mu.Unlock()
	for _, p := range pending {
		p()
	}
}

// Repeating returns a logger that throttles log's records: two records are
// the same condition when they have the same level and the same message
// and attributes up to numbers (counts, ids, addresses, durations). Each
// condition prints its first burst records, then a summary per every: the
// latest record with repeated=<count> over=<every>. Debug and trace
// records pass untouched (they are printed only when asked for).
func Repeating(log *slog.Logger, every time.Duration, burst int) *slog.Logger {
	return RepeatingWith(log, NewThrottle(every, burst))
}

// RepeatingWith is Repeating on a throttle the caller keeps (to Flush it
// when it stops).
func RepeatingWith(log *slog.Logger, th *Throttle) *slog.Logger {
	return slog.New(&repeatHandler{inner: log.Handler(), th: th})
}

type repeatHandler struct {
	inner slog.Handler
	th    *Throttle
	with  string // normalized attributes and groups added by With
}

func (h *repeatHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *repeatHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < LevelInfo {
		return h.inner.Handle(ctx, r)
	}
	var attrs []string
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a.Key+"="+a.Value.String())
		return true
	})
	key := ConditionKey(r.Level, h.with+r.Message, attrs)
	last := r.Clone()
	inner := h.inner
	if h.th.Allow(key, func(n int, over time.Duration) {
		// The summary is a line of its own time, with the latest
		// occurrence's message and attributes.
		s := slog.NewRecord(time.Now(), last.Level, last.Message, 0)
		last.Attrs(func(a slog.Attr) bool { s.AddAttrs(a); return true })
		s.AddAttrs(slog.Int("repeated", n), slog.Duration("over", over))
		_ = inner.Handle(context.Background(), s)
	}) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

func (h *repeatHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.inner = h.inner.WithAttrs(as)
	var b strings.Builder
	b.WriteString(h.with)
	for _, a := range as {
		b.WriteString(a.Key + "=" + a.Value.String() + " ")
	}
	h2.with = b.String()
	return &h2
}

func (h *repeatHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.inner = h.inner.WithGroup(name)
	h2.with = h.with + name + "."
	return &h2
}

// numbers are the parts of a line that differ between repeats of one
// condition: counts, ids, addresses, ports, durations with their units.
var numbers = regexp.MustCompile(`[0-9][0-9.:]*[a-zµ]*`)

// ConditionKey names a condition: a record's level, message and
// attributes (key=value, any order) with every number replaced by #.
func ConditionKey(l slog.Level, msg string, attrs []string) string {
	attrs = slices.Clone(attrs)
	slices.Sort(attrs)
	return PriorityName(l) + "|" + numbers.ReplaceAllString(msg+"|"+strings.Join(attrs, " "), "#")
}
