package objdb

import (
	"errors"
	"strings"
	"testing"

	"github.com/corobus/corobus/services/cswire"
)

func TestNoSpaceSaysSo(t *testing.T) {
	dir := t.TempDir() // a filesystem with room
	for _, tc := range []struct {
		err  error
		full bool
	}{
		{nil, false},
		{errors.New("nats: timeout"), false},
		{errors.New("write /x/msgs/1.blk: no space left on device"), true},
		{errors.New("nats: API error: code=503 err_code=10023 description=insufficient resources"), true},
	} {
		why, full := NoSpace(dir, tc.err)
		if full != tc.full || full && !strings.Contains(why, "no space") {
			t.Errorf("NoSpace(%v) = %q, %v; want full=%v", tc.err, why, full, tc.full)
		}
	}
	s := &Store{cfg: StoreConfig{StateDir: dir}}
	err := s.writeError("test.k", errors.New("write: no space left on device"))
	if !errors.Is(err, cswire.ErrNoSpace) || !strings.Contains(err.Error(), "no space") || strings.Contains(err.Error(), "partitioned") {
		t.Errorf("a write on a full disk: %v", err)
	}
	err = s.writeError("test.k", errors.New("nats: timeout"))
	if !errors.Is(err, ErrTryAgain) || strings.Contains(err.Error(), "no space") {
		t.Errorf("a write without a quorum: %v", err)
	}
}
