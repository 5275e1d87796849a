package totem

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// The ring sequence file is corosync's: a state directory corosync used
// starts corobus from corosync's sequence, and the other way round.
func TestRingSequenceFileIsCorosyncs(t *testing.T) {
	for _, tc := range []struct {
		name string
		file []byte
		want uint64
	}{
		{"corosync's 8 bytes", binary.LittleEndian.AppendUint64(nil, 0x1_0000_0005), 0x1_0000_0005},
		{"corobus's old decimal text", []byte("42\n"), 42},
		{"garbage starts at 0, as corosync does", []byte("xyz"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "ringid_7")
			if err := os.WriteFile(p, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			n := &Node{cfg: Config{StateDir: dir, NodeID: 7}, log: slog.New(slog.DiscardHandler)}
			got, err := n.loadSeq()
			if err != nil || got != tc.want {
				t.Fatalf("loadSeq = %d, %v; want %d", got, err, tc.want)
			}
			n.saveSeq(got + 1)
			b, _ := os.ReadFile(p)
			if len(b) != 8 || binary.LittleEndian.Uint64(b) != tc.want+1 {
				t.Errorf("saved % x, want the 8 bytes of %d", b, tc.want+1)
			}
		})
	}
}
