package vscheck

import (
	"strings"
	"testing"
)

func parse(t *testing.T, name, text string) *Log {
	t.Helper()
	l, err := Parse(name, strings.NewReader(strings.TrimSpace(text)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Two members of three, the third killed: what CPG must produce.
const goodA = `
I 1/10
C m=1/10 l= j=1/10/1
C m=1/10,2/20 l= j=2/20/1
S 0
D 1/10 0 64
D 2/20 0 64
S 1
D 1/10 1 64
C m=1/10,2/20,3/30 l= j=3/30/1
D 3/30 0 64
D 2/20 1 64
C m=1/10,2/20 l=3/30/3 j=
D 2/20 2 64
END`

const goodB = `
I 2/20
C m=1/10,2/20 l= j=2/20/1
D 1/10 0 64
S 0
D 2/20 0 64
D 1/10 1 64
S 1
C m=1/10,2/20,3/30 l= j=3/30/1
D 3/30 0 64
D 2/20 1 64
S 2
C m=1/10,2/20 l=3/30/3 j=
D 2/20 2 64
END`

const killedC = `
I 3/30
C m=1/10,2/20,3/30 l= j=3/30/1
S 0
D 3/30 0 64
D 2/20 1 64
S 1`

func TestAcceptsWhatCPGPromises(t *testing.T) {
	if err := Check([]*Log{parse(t, "a", goodA), parse(t, "b", goodB), parse(t, "c", killedC)}); err != nil {
		t.Fatal(err)
	}
}

// Each rule, broken once: the checker must say so.
func TestCatchesEveryViolation(t *testing.T) {
	for _, c := range []struct {
		name, a, b, want string
	}{
		{"duplicate", strings.Replace(goodA, "D 2/20 2 64", "D 2/20 2 64\nD 2/20 2 64", 1), goodB, "delivered twice"},
		{"total order", goodA, strings.Replace(goodB, "D 3/30 0 64\nD 2/20 1 64", "D 2/20 1 64\nD 3/30 0 64", 1), "opposite orders"},
		{"self order", strings.Replace(goodA, "D 1/10 1 64", "D 1/10 7 64", 1), goodB, "own message"},
		{"self delivery", strings.Replace(goodA, "S 1\n", "S 1\nS 2\n", 1), goodB, "delivered 2 of its own"},
		{"open segments may differ", goodA, strings.Replace(goodB, "S 2\nC m=1/10,2/20 l=3/30/3 j=\nD 2/20 2 64\nEND", "C m=1/10,2/20 l=3/30/3 j=", 1), ""},
		{"virtual synchrony (missing)", strings.Replace(goodA, "D 3/30 0 64\n", "", 1), strings.Replace(goodB, "D 3/30 0 64\n", "", 1),
			""},
		{"virtual synchrony (lost)", strings.Replace(goodA, "D 3/30 0 64\n", "", 1), goodB, "different messages"},
		{"membership", strings.Replace(goodA, "D 2/20 2 64", "D 3/30 5 64", 1), goodB, "not in the configuration"},
		{"ambiguous", goodA + "\nC m=1/10,2/20 l= j=2/20/1", goodB, "seen twice"},
		{"reported", goodA + "\nE dispatch 2", goodB, "reported"},
	} {
		err := Check([]*Log{parse(t, "a", c.a), parse(t, "b", c.b)})
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error about %q", c.name, err, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{"D 1/2", "D x/2 3 4", "C m=1/2", "Z", "D 1/2 x 4", "I 1"} {
		if _, err := Parse("bad", strings.NewReader(bad+"\n")); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
