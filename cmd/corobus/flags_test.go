package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// The verbs with operands (sub's patterns, objctl's objects) read their
// flags after the operands too: until 3 Dec `corobus sub totem.hb --count
// 1` followed three patterns (totem.hb, --count and 1) until interrupted,
// and `corobus objctl totem -l` listed the keys and an object "-l".
func TestFlagsAfterOperands(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		operands []string
		count    int
		list     bool
	}{
		{[]string{"totem.hb", "--count", "1"}, []string{"totem.hb"}, 1, false},
		{[]string{"--count", "2", "a", "-l", "b"}, []string{"a", "b"}, 2, true},
		{[]string{"totem", "-l"}, []string{"totem"}, 0, true},
		{[]string{"a", "--", "-l", "--count"}, []string{"a", "-l", "--count"}, 0, false},
		{[]string{"--", "-l"}, []string{"-l"}, 0, false},
		{nil, nil, 0, false},
	} {
		a := &app{stdout: io.Discard, stderr: io.Discard}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		count := fs.Int("count", 0, "")
		list := fs.Bool("l", false, "")
		got, err := parseInterspersed(a, fs, tc.args)
		if err != nil || !slices.Equal(got, tc.operands) || *count != tc.count || *list != tc.list {
			t.Errorf("%q: operands %q, --count %d, -l %v, error %v; want %q, %d, %v", tc.args, got, *count, *list, err, tc.operands, tc.count, tc.list)
		}
	}
	a := &app{stdout: io.Discard, stderr: io.Discard}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("count", 0, "")
	if _, err := parseInterspersed(a, fs, []string{"a", "--count", "x"}); err == nil {
		t.Error("a bad flag after an operand was taken")
	}
}
