package cfg

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

// Sizes and offsets are those gcc gives ipc_cfg.h's and cfg.h's structs on
// x86-64 (corosync 3.1.7).
func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want Request
		err  error
	}{
		{"killnode", request(ReqKillNode, 288, func(b []byte) {
			cswire.PutU32(b, 16, 3)
			reason := "Killed by corosync-cfgtool"
			b[24] = byte(len(reason) + 1) // libcfg counts the NUL
			copy(b[26:], reason)
		}), Request{ID: ReqKillNode, NodeID: 3, Reason: "Killed by corosync-cfgtool"}, nil},
		{"tryshutdown", request(ReqTryShutdown, 24, func(b []byte) { cswire.PutU32(b, 16, ShutdownRegardless) }),
			Request{ID: ReqTryShutdown, Flags: ShutdownRegardless}, nil},
		{"reply", request(ReqReplyToShutdown, 24, func(b []byte) { cswire.PutU32(b, 16, 1) }),
			Request{ID: ReqReplyToShutdown, Response: 1}, nil},
		{"addrs", request(ReqGetNodeAddrs, 24, func(b []byte) { cswire.PutU32(b, 16, 2) }), Request{ID: ReqGetNodeAddrs, NodeID: 2}, nil},
		{"nodestatus", request(ReqNodeStatusGet, 32, func(b []byte) { cswire.PutU32(b, 16, 2); cswire.PutU32(b, 24, 1) }),
			Request{ID: ReqNodeStatusGet, NodeID: 2, Version: 1}, nil},
		{"trackstart", request(ReqTrackStart, 24, func(b []byte) { b[16] = 1 }), Request{ID: ReqTrackStart, Track: 1}, nil},
		{"local", request(ReqLocalGet, 16, nil), Request{ID: ReqLocalGet}, nil},
		{"long reason", request(ReqKillNode, 288, func(b []byte) { cswire.PutU32(b, 24, 300) }), Request{ID: ReqKillNode}, cswire.ErrInvalidParam},
		{"short killnode", request(ReqKillNode, 100, nil), Request{ID: ReqKillNode}, cswire.ErrInvalidParam},
		{"unknown", request(12, 16, nil), Request{ID: 12}, cswire.ErrInvalidParam},
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

func TestResponseLayouts(t *testing.T) {
	if b := EncodeLocalGet(4); len(b) != 32 || cswire.I32(b, 0) != ResLocalGet || cswire.U32(b, 24) != 4 {
		t.Errorf("local_get wrong: % x", b)
	}
	a := EncodeNodeAddrs(AFInet, [][]byte{{127, 0, 0, 1}})
	if len(a) != 48 || cswire.U32(a, 24) != AFInet || cswire.U32(a, 28) != 1 || a[32] != 127 || a[35] != 1 {
		t.Errorf("node addrs wrong: % x", a)
	}
	if e := EncodeNodeAddrs(AFInet, nil); cswire.I32(e, 16) != int32(cswire.ErrNotExist) {
		t.Errorf("no address must be CS_ERR_NOT_EXIST")
	}
	r := EncodeRingStatus([]Ring{{Name: "0 127.0.0.1", Status: "OK"}})
	if len(r) != 10272 || cswire.U32(r, 24) != 1 || string(r[32:43]) != "0 127.0.0.1" || string(r[2080:2082]) != "OK" {
		t.Errorf("ring status wrong")
	}
	var st NodeStatus
	st.NodeID, st.Reachable, st.OnwireVer = 2, true, 1
	st.Links[0] = LinkStatus{Enabled: true, Connected: true, MTU: 1397, Src: "10.0.0.1", Dst: "10.0.0.2"}
	n := EncodeNodeStatusV1(st)
	if len(n) != 4200 || cswire.U32(n, 24) != NodeStatusV1 || cswire.U32(n, 28) != 2 || n[32] != 1 || n[37] != 1 ||
		n[40] != 1 || n[41] != 1 || cswire.U32(n, 44) != 1397 || string(n[48:56]) != "10.0.0.1" || string(n[304:312]) != "10.0.0.2" {
		t.Errorf("node status wrong")
	}
	if ts := EncodeTestShutdown(ShutdownRequest, cswire.OK); len(ts) != 32 || cswire.I32(ts, 0) != ResTestShutdown {
		t.Errorf("testshutdown wrong")
	}
}

func TestExecRoundTrip(t *testing.T) {
	for _, e := range []Exec{
		{Kind: ExecKillNode, NodeID: 3, Reason: "why"},
		{Kind: ExecShutdown},
		{Kind: ExecReloadConfig, Request: 77},
	} {
		got, err := DecodeExec(e.Encode())
		if err != nil || got != e {
			t.Errorf("%+v: got %+v, %v", e, got, err)
		}
	}
}

func TestDecodeNeverPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(400))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if len(b) >= 16 && r.IntN(2) == 0 {
			cswire.PutI32(b, 8, int32(len(b)))
			cswire.PutI32(b, 0, int32(r.IntN(13)))
		}
		_, _ = DecodeRequest(b)
		_, _ = DecodeExec(b)
	}
}
