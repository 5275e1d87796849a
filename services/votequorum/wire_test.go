package votequorum

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

// Sizes and offsets are those gcc gives ipc_votequorum.h's structs on
// x86-64 (corosync 3.1.7).
func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want Request
		err  error
	}{
		{"getinfo", request(ReqGetInfo, 24, func(b []byte) { cswire.PutU32(b, 16, 3) }), Request{ID: ReqGetInfo, NodeID: 3}, nil},
		{"setexpected", request(ReqSetExpected, 24, func(b []byte) { cswire.PutU32(b, 16, 5) }), Request{ID: ReqSetExpected, Expected: 5}, nil},
		{"setvotes", request(ReqSetVotes, 24, func(b []byte) { cswire.PutU32(b, 16, 2); cswire.PutU32(b, 20, 4) }),
			Request{ID: ReqSetVotes, Votes: 2, NodeID: 4}, nil},
		{"trackstart", request(ReqTrackStart, 32, func(b []byte) { cswire.PutU64(b, 16, 0xabc); cswire.PutU32(b, 24, TrackChanges) }),
			Request{ID: ReqTrackStart, Context: 0xabc, Flags: TrackChanges}, nil},
		{"trackstop", request(ReqTrackStop, 16, nil), Request{ID: ReqTrackStop}, nil},
		{"register", request(ReqQdeviceRegister, 272, func(b []byte) { copy(b[16:], "Qdevice") }),
			Request{ID: ReqQdeviceRegister, Name: "Qdevice"}, nil},
		{"update", request(ReqQdeviceUpdate, 528, func(b []byte) { copy(b[16:], "a"); copy(b[271:], "bb") }),
			Request{ID: ReqQdeviceUpdate, Name: "a", NewName: "bb"}, nil},
		{"poll", request(ReqQdevicePoll, 296, func(b []byte) {
			copy(b[16:], "Qdevice")
			cswire.PutU32(b, 272, 1)
			cswire.PutU32(b, 280, 2)
			cswire.PutU64(b, 288, 0x10)
		}), Request{ID: ReqQdevicePoll, Name: "Qdevice", CastVote: true, Ring: RingID{NodeID: 2, Seq: 0x10}}, nil},
		{"master wins", request(ReqQdeviceMasterWins, 280, func(b []byte) { copy(b[16:], "Q"); cswire.PutU32(b, 272, 1) }),
			Request{ID: ReqQdeviceMasterWins, Name: "Q", Allow: true}, nil},
		{"name without NUL", request(ReqQdeviceRegister, 272, func(b []byte) {
			for i := 16; i < 271; i++ {
				b[i] = 'x'
			}
		}), Request{ID: ReqQdeviceRegister, Name: string(make255('x'))}, nil},
		{"short poll", request(ReqQdevicePoll, 280, nil), Request{ID: ReqQdevicePoll}, cswire.ErrInvalidParam},
		{"unknown", request(10, 16, nil), Request{ID: 10}, cswire.ErrInvalidParam},
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

func make255(c byte) []byte {
	b := make([]byte, 255)
	for i := range b {
		b[i] = c
	}
	return b
}

func TestResponseLayouts(t *testing.T) {
	in := Info{NodeID: 1, State: StateMember, Votes: 2, ExpectedVotes: 3, HighestExpected: 4, TotalVotes: 5,
		Quorum: 6, Flags: InfoQuorate | InfoWaitForAll, QdeviceVotes: 7, QdeviceName: "Qdevice"}
	b := EncodeGetInfo(in)
	if len(b) != 320 || cswire.I32(b, 0) != ResGetInfo || cswire.I32(b, 8) != 320 {
		t.Fatalf("getinfo header wrong: % x", b[:24])
	}
	if cswire.U32(b, 24) != 1 || cswire.U32(b, 48) != 6 || cswire.U32(b, 56) != 7 || string(b[60:67]) != "Qdevice" || b[67] != 0 {
		t.Errorf("getinfo fields wrong")
	}
	got, code, err := DecodeGetInfo(b)
	if err != nil || code != cswire.OK || got != in {
		t.Errorf("round trip: %+v %v %v", got, code, err)
	}
	q := EncodeQuorumNotification(true, 0x99, []NodeState{{1, StateMember}, {2, StateDead}})
	if cswire.I32(q, 8) != 48+16 || cswire.U32(q, 24) != 1 || cswire.U64(q, 32) != 0x99 || cswire.U32(q, 40) != 2 ||
		cswire.U32(q, 48) != 1 || cswire.U32(q, 52) != StateMember || cswire.U32(q, 56) != 2 || cswire.U32(q, 60) != StateDead {
		t.Errorf("quorum notification wrong: % x", q)
	}
	SetContext(q, 0x77)
	if cswire.U64(q, 32) != 0x77 {
		t.Errorf("SetContext on a quorum notification wrote the wrong field")
	}
	n := EncodeNodelistNotification(5, RingID{NodeID: 1, Seq: 8}, []uint32{1, 2, 3})
	if cswire.I32(n, 8) != 56+12 || cswire.U64(n, 24) != 5 || cswire.U32(n, 32) != 1 || cswire.U64(n, 40) != 8 ||
		cswire.U32(n, 48) != 3 || cswire.U32(n, 56) != 1 || cswire.U32(n, 64) != 3 {
		t.Errorf("nodelist notification wrong: % x", n)
	}
	e := EncodeExpectedVotesNotification(5, 3)
	if len(e) != 40 || cswire.U64(e, 24) != 5 || cswire.U32(e, 32) != 3 {
		t.Errorf("expected votes notification wrong: % x", e)
	}
	if s := EncodeStatus(ReqGetInfo, cswire.ErrNotExist); len(s) != 320 || cswire.I32(s, 16) != int32(cswire.ErrNotExist) {
		t.Errorf("failed getinfo must keep its size")
	}
}

func TestExecRoundTrip(t *testing.T) {
	for _, e := range []Exec{
		{Kind: ExecNodeInfo, NodeID: 1, Votes: 2, Expected: 3, Flags: 4},
		{Kind: ExecReconfigure, NodeID: 1, Value: 9, Param: ParamNodeVotes},
		{Kind: ExecQdeviceReg, Op: QdeviceOpRegister, Name: "Qdevice"},
		{Kind: ExecQdeviceReconfigure, Name: "a", NewName: "b"},
	} {
		got, err := DecodeExec(e.Encode())
		if err != nil || got != e {
			t.Errorf("%+v: got %+v, %v", e, got, err)
		}
	}
	b := Exec{Kind: ExecNodeInfo}.Encode()
	if _, err := DecodeExec(b[:20]); err == nil {
		t.Errorf("a truncated message decoded")
	}
}

func TestDecodeNeverPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(600))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if len(b) >= 16 && r.IntN(2) == 0 {
			cswire.PutI32(b, 8, int32(len(b)))
			cswire.PutI32(b, 0, int32(r.IntN(11)))
		}
		_, _ = DecodeRequest(b)
		_, _ = DecodeExec(b)
	}
}
