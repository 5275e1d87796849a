package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/corobus/corobus/objdb"
)

// The copies table heads every column, the reason a copy is behind
// included, and ends no line in blanks.
func TestPrintCopies(t *testing.T) {
	var b bytes.Buffer
	printCopies(&b, []objdb.CopyStatus{
		{Name: "corobus-ipc", PID: 12350, State: "behind", Reason: "cluster feed lost: x"},
		{Name: "corobus-objdb", PID: 12345, State: "current", Via: "node2"},
	})
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[1], "UNCONFIRMED  REASON") ||
		!strings.HasSuffix(lines[2], "cluster feed lost: x") || !strings.HasSuffix(lines[3], " -") {
		t.Errorf("table:\n%s", b.String())
	}
	for _, l := range lines {
		if strings.TrimRight(l, " ") != l {
			t.Errorf("line ends in blanks: %q", l)
		}
	}
}
