package main

import (
	"bytes"
	"testing"

	"github.com/corobus/corobus/objdb"
)

// -q drops the key and its opening parenthesis only, also before a bin
// value, as corosync-cmapctl's print_key does (until 3 Dec corobus printed
// the value alone).
func TestCmapPrinterQuietBinary(t *testing.T) {
	v := objdb.Value{Type: objdb.Binary, Data: []byte("a\x01\\")}
	for _, tc := range []struct {
		quiet, showBinary bool
		want              string
	}{
		{false, false, "k.b (bin)\n"},
		{false, true, `k.b (bin) = a\x01\\` + "\n"},
		{true, false, "bin)\n"},
		{true, true, `bin) = a\x01\\` + "\n"},
	} {
		var b bytes.Buffer
		cmapPrinter{w: &b, quiet: tc.quiet, showBinary: tc.showBinary}.print("k.b", v)
		if b.String() != tc.want {
			t.Errorf("quiet %v, -b %v: %q, want %q", tc.quiet, tc.showBinary, b.String(), tc.want)
		}
	}
}
