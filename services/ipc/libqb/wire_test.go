package libqb

import (
	"encoding/binary"
	"testing"
)

func connRequest(id, size int32, max uint32) []byte {
	b := make([]byte, connRequestSize)
	binary.LittleEndian.PutUint32(b, uint32(id))
	binary.LittleEndian.PutUint32(b[8:], uint32(size))
	binary.LittleEndian.PutUint32(b[16:], max)
	return b
}

func TestParseConnRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
		ok   bool
	}{
		{"libqb's request", connRequest(-1, 24, 8192), 8192, true},
		{"wrong id", connRequest(0, 24, 8192), 0, false},
		{"lying size", connRequest(-1, 99, 8192), 0, false},
		{"short", []byte{0xff, 0xff, 0xff, 0xff}, 0, false},
	} {
		max, err := parseConnRequest(tc.b)
		if (err == nil) != tc.ok || max != tc.max {
			t.Errorf("%s: %d, %v", tc.name, max, err)
		}
	}
}

// The response has libqb's layout: 12 328 bytes, error at 16, type SOCKET
// (0) at 24, max_msg_size at 28, then the control file and base name.
func TestConnResponseLayout(t *testing.T) {
	b := connResponse(0, 0, 1<<20, "/dev/shm/qb-1-2-3-x/qb-control-cmap", "/dev/shm/qb-1-2-3-x/qb-cmap", "")
	if len(b) != 12328 || int32(binary.LittleEndian.Uint32(b)) != -1 || binary.LittleEndian.Uint32(b[8:]) != 12328 {
		t.Fatalf("header: len %d id %d size %d", len(b), int32(binary.LittleEndian.Uint32(b)), binary.LittleEndian.Uint32(b[8:]))
	}
	if binary.LittleEndian.Uint32(b[24:]) != 0 || binary.LittleEndian.Uint32(b[28:]) != 1<<20 {
		t.Errorf("type/max_msg_size wrong")
	}
	if got := string(b[40 : 40+35]); got != "/dev/shm/qb-1-2-3-x/qb-control-cmap" {
		t.Errorf("control path %q", got)
	}
	if got := string(b[40+pathMax : 40+pathMax+27]); got != "/dev/shm/qb-1-2-3-x/qb-cmap" {
		t.Errorf("base name %q", got)
	}
	refused := connResponse(-13, 0, 0, "", "", "")
	if int32(binary.LittleEndian.Uint32(refused[16:])) != -13 {
		t.Errorf("refusal carries %d", int32(binary.LittleEndian.Uint32(refused[16:])))
	}
}

func FuzzParseConnRequest(f *testing.F) {
	f.Add(connRequest(-1, 24, 8192))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if max, err := parseConnRequest(b); err == nil && len(b) != connRequestSize {
			t.Fatalf("accepted %d bytes (max %d)", len(b), max)
		}
	})
}
