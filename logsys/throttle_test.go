package logsys

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/logsys/logsystest"
)

func TestThrottleSummarizesThenQuiets(t *testing.T) {
	clock := &logsystest.ManualClock{}
	th := NewThrottleClock(time.Minute, 1, clock)
	var summaries []int
	note := func(n int, over time.Duration) {
		if over != time.Minute {
			t.Errorf("summary over %s", over)
		}
		summaries = append(summaries, n)
	}
	printed := 0
	for range 100 {
		if th.Allow("k", note) {
			printed++
		}
	}
	if printed != 1 {
		t.Fatalf("printed %d of 100 in the first window, want 1", printed)
	}
	clock.EndWindows()
	// Still repeating: only the summary, once per window.
	for range 50 {
		if th.Allow("k", note) {
			printed++
		}
	}
	clock.EndWindows()
	clock.EndWindows() // a quiet window: the key is forgotten
	if th.Allow("k", note) {
		printed++
	}
	if printed != 2 || fmt.Sprint(summaries) != "[99 50]" {
		t.Fatalf("printed %d, summaries %v; want 2 and [99 50]", printed, summaries)
	}
	// Other keys have windows of their own; Flush prints what is pending.
	for range 3 {
		th.Allow("other", note)
	}
	th.Flush()
	if fmt.Sprint(summaries) != "[99 50 2]" {
		t.Fatalf("summaries after flush %v", summaries)
	}
}

func TestThrottleBurst(t *testing.T) {
	clock := &logsystest.ManualClock{}
	th := NewThrottleClock(time.Minute, 3, clock)
	printed := 0
	for range 10 {
		if th.Allow("k", func(int, time.Duration) {}) {
			printed++
		}
	}
	if printed != 3 {
		t.Fatalf("burst 3 printed %d", printed)
	}
}

func TestConditionKey(t *testing.T) {
	a := ConditionKey(LevelError, "Error trying to connect to route (attempt 52): dial tcp 172.30.0.2:5405: i/o timeout", nil)
	b := ConditionKey(LevelError, "Error trying to connect to route (attempt 7): dial tcp 172.30.0.1:5405: i/o timeout", nil)
	if a != b {
		t.Errorf("attempts of one condition differ:\n%s\n%s", a, b)
	}
	c := ConditionKey(LevelWarning, "layer exited; restarting", []string{"layer=bus", "in=1.6s"})
	d := ConditionKey(LevelWarning, "layer exited; restarting", []string{"in=100ms", "layer=bus"})
	e := ConditionKey(LevelWarning, "layer exited; restarting", []string{"in=100ms", "layer=sync"})
	if c != d || c == e {
		t.Errorf("keys: %q %q %q", c, d, e)
	}
	if ConditionKey(LevelError, "x", nil) == ConditionKey(LevelWarning, "x", nil) {
		t.Error("levels share a key")
	}
}

// TestRepeatingLogger: a condition logged every few seconds for an hour
// prints its first line and one summary a minute; debug records pass.
func TestRepeatingLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clock := &logsystest.ManualClock{}
	log := slog.New(&repeatHandler{inner: base.Handler(), th: NewThrottleClock(time.Minute, 1, clock)}).With("subsys", "IPC")
	for minute := range 60 {
		for i := range 12 {
			log.Error("the IPC name is taken", "service", "cmap", "attempt", minute*12+i)
			log.Debug("retrying", "attempt", minute*12+i)
		}
		clock.EndWindows()
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	taken, debug, summarized := 0, 0, 0
	for _, l := range lines {
		switch {
		case strings.Contains(l, "retrying"):
			debug++
		case strings.Contains(l, "IPC name is taken"):
			taken++
			if strings.Contains(l, "repeated=") {
				summarized++
			}
		}
	}
	if taken != 61 || summarized != 60 || debug != 720 {
		t.Fatalf("an hour of a condition every 5 s: %d lines (%d summaries), %d debug; want 61 (60), 720", taken, summarized, debug)
	}
	if !strings.Contains(lines[0], "attempt=0") || !strings.Contains(buf.String(), "repeated=11") {
		t.Fatalf("first line or summary count wrong:\n%s", strings.Join(lines[:4], "\n"))
	}
}

// TestLogsysLimitsFloods: the safety net under every layer prints a burst
// of one condition, then a summary; the flight recorder keeps everything.
func TestLogsysLimitsFloods(t *testing.T) {
	cfg := Config{ToStderr: true, Debug: "off", Timestamp: "off"}
	ls, out := newTest(t, cfg, Options{Node: 1, RepeatBurst: 5})
	log := For(ls.Logger(), "SYNC")
	for i := range 1000 {
		log.Info("sync round restarts for a late member", "ring", fmt.Sprintf("1.%d", i), "node", 3)
	}
	log.Info("something else")
	_ = ls.Close()
	got := out.String()
	if n := strings.Count(got, "late member"); n != 6 {
		t.Fatalf("printed %d lines of the condition, want 5 and a summary:\n%s", n, got)
	}
	if !strings.Contains(got, "repeated=995") || !strings.Contains(got, "something else") {
		t.Fatalf("summary or other line missing:\n%s", got)
	}
	if n := len(ls.Recorder().Records()); n != 1001 {
		t.Fatalf("recorder kept %d records, want 1001", n)
	}
	// Without a limit, everything prints.
	ls2, out2 := newTest(t, cfg, Options{Node: 1, RepeatBurst: -1})
	for range 100 {
		ls2.Logger().Info("same")
	}
	if n := strings.Count(out2.String(), "same"); n != 100 {
		t.Fatalf("unlimited printed %d of 100", n)
	}
}
