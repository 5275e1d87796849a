package quorum

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/cswire/cswiretest"
)

func request(id int32, size int, fill func(b []byte)) []byte {
	return cswiretest.Request(id, size, fill)
}

func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want Request
		err  error
	}{
		{"getquorate", request(ReqGetQuorate, 16, nil), Request{ID: ReqGetQuorate}, nil},
		{"trackstart", request(ReqTrackStart, 24, func(b []byte) { cswire.PutU32(b, 16, TrackChanges) }),
			Request{ID: ReqTrackStart, Flags: TrackChanges}, nil},
		{"model", request(ReqModelGetType, 24, func(b []byte) { cswire.PutU32(b, 16, ModelV1) }),
			Request{ID: ReqModelGetType, Model: ModelV1}, nil},
		{"short trackstart", request(ReqTrackStart, 16, nil), Request{ID: ReqTrackStart}, cswire.ErrInvalidParam},
		{"lying size", func() []byte { b := request(ReqGetType, 16, nil); cswire.PutI32(b, 8, 99); return b }(),
			Request{ID: ReqGetType}, cswire.ErrInvalidParam},
		{"unknown", request(9, 16, nil), Request{ID: 9}, cswire.ErrInvalidParam},
		{"short", []byte{1}, Request{}, cswire.ErrShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest(tc.msg)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The layouts below are those of ipc_quorum.h's structs as gcc lays them
// out on x86-64 (sizeof and offsetof printed from corosync 3.1.7's header).
func TestNotificationLayouts(t *testing.T) {
	v0 := EncodeNotificationV0(true, 0x1234, []uint32{1, 2, 3})
	if got := cswire.I32(v0, 8); got != 48+12 {
		t.Errorf("v0 size %d, want 60", got)
	}
	if cswire.U32(v0, 24) != 1 || cswire.U64(v0, 32) != 0x1234 || cswire.U32(v0, 40) != 3 ||
		cswire.U32(v0, 44) != 1 || cswire.U32(v0, 52) != 3 {
		t.Errorf("v0 fields wrong: % x", v0)
	}
	v1 := EncodeNotificationV1(false, RingID{NodeID: 7, Seq: 0x55}, []uint32{4, 5})
	if cswire.I32(v1, 0) != ResV1QuorumNotification || cswire.I32(v1, 8) != 56+8 ||
		cswire.U32(v1, 24) != 0 || cswire.U32(v1, 32) != 7 || cswire.U64(v1, 40) != 0x55 ||
		cswire.U32(v1, 48) != 2 || cswire.U32(v1, 52) != 4 || cswire.U32(v1, 56) != 5 {
		t.Errorf("v1 fields wrong: % x", v1)
	}
	nl := EncodeNodelistV1(RingID{NodeID: 1, Seq: 9}, []uint32{1, 2}, []uint32{2}, []uint32{3})
	if cswire.I32(nl, 8) != 64+16 || cswire.U32(nl, 24) != 1 || cswire.U64(nl, 32) != 9 ||
		cswire.U32(nl, 40) != 2 || cswire.U32(nl, 48) != 1 || cswire.U32(nl, 56) != 1 ||
		cswire.U32(nl, 60) != 1 || cswire.U32(nl, 64) != 2 || cswire.U32(nl, 68) != 2 || cswire.U32(nl, 72) != 3 {
		t.Errorf("nodelist fields wrong: % x", nl)
	}
	if b := EncodeGetQuorate(true); len(b) != 32 || cswire.U32(b, 24) != 1 || cswire.I32(b, 16) != int32(cswire.OK) {
		t.Errorf("getquorate wrong: % x", b)
	}
	if b := EncodeType(ReqModelGetType, TypeSet, cswire.OK); cswire.I32(b, 0) != ResModelGetType || cswire.U32(b, 24) != TypeSet {
		t.Errorf("model gettype wrong: % x", b)
	}
}

func TestDecodeNeverPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(64))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if len(b) >= 16 && r.IntN(2) == 0 {
			cswire.PutI32(b, 8, int32(len(b)))
			cswire.PutI32(b, 0, int32(r.IntN(6)))
		}
		_, _ = DecodeRequest(b)
	}
}
