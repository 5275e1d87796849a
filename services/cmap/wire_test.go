package cmap

import (
	"errors"
	"testing"

	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/cswire/cswiretest"
)

// request builds a request message the way libcmap lays it out.
func request(id int32, size int, fill func(b []byte)) []byte {
	return cswiretest.Request(id, size, fill)
}

func TestDecodeRequest(t *testing.T) {
	set := request(ReqSet, setValueOff+4, func(b []byte) {
		cswire.PutName(b, offKey, "totem.token")
		cswire.PutU64(b, offAfterKey, 4)
		b[offAfterKey+8] = 6 // u32
		cswire.PutU32(b, setValueOff, 5000)
	})
	for _, tc := range []struct {
		name string
		msg  []byte
		want Request
		err  error
	}{
		{"set", set, Request{ID: ReqSet, Key: "totem.token", Type: 6, Value: set[setValueOff:]}, nil},
		{"get", request(ReqGet, getReqSize, func(b []byte) {
			cswire.PutName(b, offKey, "a.b")
			cswire.PutU64(b, offAfterKey, 256)
		}), Request{ID: ReqGet, Key: "a.b", MaxLen: 256}, nil},
		{"adjust", request(ReqAdjustInt, adjustSize, func(b []byte) {
			cswire.PutName(b, offKey, "a.b")
			cswire.PutI32(b, offAfterKey, -1)
		}), Request{ID: ReqAdjustInt, Key: "a.b", Step: -1}, nil},
		{"iter next", request(ReqIterNext, handleReq, func(b []byte) { cswire.PutU64(b, 16, 77) }),
			Request{ID: ReqIterNext, Handle: 77}, nil},
		{"track add", request(ReqTrackAdd, trackAddSize, func(b []byte) {
			cswire.PutName(b, offKey, "totem.")
			cswire.PutI32(b, offAfterKey, TrackAdd|TrackPrefix)
			cswire.PutU64(b, offAfterKey+8, 0xdead)
		}), Request{ID: ReqTrackAdd, Key: "totem.", Track: TrackAdd | TrackPrefix, UserCtx: 0xdead}, nil},
		{"set map", request(ReqSetCurrentMap, setMapSize, func(b []byte) { cswire.PutI32(b, 16, MapStats) }),
			Request{ID: ReqSetCurrentMap, Map: MapStats}, nil},
		{"short header", []byte{1, 2, 3}, Request{}, cswire.ErrShort},
		{"lying size", func() []byte { b := request(ReqDelete, offAfterKey, nil); cswire.PutI32(b, 8, 9999); return b }(),
			Request{ID: ReqDelete}, cswire.ErrInvalidParam},
		{"truncated get", request(ReqGet, 100, nil), Request{ID: ReqGet}, cswire.ErrInvalidParam},
		{"value past end", request(ReqSet, setValueOff, func(b []byte) { cswire.PutU64(b, offAfterKey, 1<<40) }),
			Request{ID: ReqSet}, cswire.ErrInvalidParam},
		{"name too long", request(ReqDelete, offAfterKey, func(b []byte) { b[offKey] = 0xff; b[offKey+1] = 0xff }),
			Request{ID: ReqDelete}, cswire.ErrInvalidParam},
		{"unknown id", request(42, 16, nil), Request{ID: 42}, cswire.ErrInvalidParam},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest(tc.msg)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.want.ID || got.Key != tc.want.Key || got.Type != tc.want.Type ||
				string(got.Value) != string(tc.want.Value) || got.MaxLen != tc.want.MaxLen ||
				got.Step != tc.want.Step || got.Handle != tc.want.Handle || got.Track != tc.want.Track ||
				got.UserCtx != tc.want.UserCtx || got.Map != tc.want.Map {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEncodeSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		size int
		id   int32
	}{
		{"status set", EncodeStatus(ReqSet, cswire.OK), 24, ReqSet},
		{"failed get keeps struct size", EncodeStatus(ReqGet, cswire.ErrNotExist), 40, ReqGet},
		{"get u32", EncodeGet(6, []byte{1, 2, 3, 4}, 8), 44, ReqGet},
		{"get type only", EncodeGet(6, []byte{1, 2, 3, 4}, 0), 40, ReqGet},
		{"iter init", EncodeHandle(ReqIterInit, 5), 32, ReqIterInit},
		{"iter next", EncodeIterNext("a.b", 11, 3), 304, ReqIterNext},
		{"set map", EncodeStatus(ReqSetCurrentMap, cswire.OK), 24, ResSetCurrentMap},
		{"notify", EncodeNotify(Notify{Key: "k.k", NewValue: []byte{1}, OldValue: []byte{2, 3}}), 336 + 3, ResNotifyCallback},
	} {
		if len(tc.b) != tc.size || int(cswire.I32(tc.b, 8)) != tc.size || cswire.I32(tc.b, 0) != tc.id {
			t.Errorf("%s: len %d, header size %d id %d; want %d bytes, id %d", tc.name, len(tc.b), cswire.I32(tc.b, 8), cswire.I32(tc.b, 0), tc.size, tc.id)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(request(ReqSet, setValueOff+4, func(b []byte) { cswire.PutU64(b, offAfterKey, 4) }))
	f.Add(request(ReqGet, getReqSize, nil))
	f.Add(request(ReqTrackAdd, trackAddSize, nil))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := DecodeRequest(msg)
		if err == nil && len(r.Value) > len(msg) {
			t.Fatalf("value longer than the message")
		}
	})
}
