package main

import (
	"strconv"
	"strings"
	"testing"
)

// The bus's GODEBUG sets a schedtrace the runtime takes (an int32 number
// of milliseconds: a larger one is ignored, and the monitor thread would
// sleep deeply again), and leaves the user's own settings after it, where
// they win.
func TestBusGodebug(t *testing.T) {
	for _, tc := range []struct{ user, want string }{
		{"", "GODEBUG=schedtrace=2147483647"},
		{"gctrace=1", "GODEBUG=schedtrace=2147483647,gctrace=1"},
		{"schedtrace=1000,scheddetail=1", "GODEBUG=schedtrace=2147483647,schedtrace=1000,scheddetail=1"},
	} {
		got := busGodebug(tc.user)
		if got != tc.want {
			t.Errorf("busGodebug(%q) = %q, want %q", tc.user, got, tc.want)
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(got, "GODEBUG="), ",")
		v, ok := strings.CutPrefix(first, "schedtrace=")
		if !ok {
			t.Fatalf("busGodebug(%q) = %q: no schedtrace first", tc.user, got)
		}
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n <= 0 {
			t.Errorf("schedtrace=%s: the runtime takes a positive int32 (%v)", v, err)
		}
	}
}
