package totem

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// A droppable message's key travels in the submit and the data frame,
// between the service name and the payload, and a frame cut inside it is
// refused; other messages carry none.
func TestWireKeys(t *testing.T) {
	for _, flags := range []byte{0, submitKept, submitDroppable, submitDroppable | submitKept} {
		b := appendSubmit(nil, 7, 9, flags, "cpg", 0xdeadbeef, []byte("payload"))
		f, err := parseSubmit(b)
		if err != nil {
			t.Fatalf("flags %d: %v", flags, err)
		}
		wantKey := uint32(0)
		if flags&submitDroppable != 0 {
			wantKey = 0xdeadbeef
		}
		if f.origin != 7 || f.seq != 9 || f.flags != flags || f.service != "cpg" || f.key != wantKey || !bytes.Equal(f.payload, []byte("payload")) {
			t.Fatalf("flags %d: parsed %+v", flags, f)
		}
		if flags&submitDroppable != 0 {
			if _, err := parseSubmit(b[:submitHdr+3+2]); err == nil {
				t.Fatalf("flags %d: a submit frame cut inside its key parsed", flags)
			}
		}
	}
	for _, droppable := range []bool{false, true} {
		in := dataFrame{ring: RingID{Rep: 1, Seq: 4}, id: MsgID{Node: 2, Origin: 3, Seq: 5}, prev: 4, service: "cpg", payload: []byte("x"), droppable: droppable}
		if droppable {
			in.key = 42
		}
		b := appendData(nil, &in)
		out, err := parseData(b)
		if err != nil {
			t.Fatalf("droppable %v: %v", droppable, err)
		}
		if out.ring != in.ring || out.id != in.id || out.prev != in.prev || out.service != in.service || out.droppable != in.droppable || out.key != in.key || !bytes.Equal(out.payload, in.payload) {
			t.Fatalf("droppable %v: parsed %+v, want %+v", droppable, out, in)
		}
		if droppable {
			if _, err := parseData(b[:dataHdr+3+2]); err == nil {
				t.Fatal("a data frame cut inside its key parsed")
			}
		}
	}
}

// A heartbeat of this version comes back field for field from its wire
// form (a sender that gives no hears apart from one that hears nobody);
// a body cut anywhere, or with a byte too many, is refused; the JSON
// heartbeat of a build before version 2 and the envelope of a later one
// give their node and version, which is what the receiver refuses them
// by.
func TestHeartbeatWire(t *testing.T) {
	full := Heartbeat{Node: 7, Proto: ProtocolVersion, Inc: 0xfedcba9876543210, Ring: RingID{Rep: 3, Seq: 1 << 40},
		State: stOperational, Delivered: 300, Ordered: 301, MaxSeq: 1 << 33, Members: []uint32{1, 7, 1 << 31},
		Addr: "10.0.0.7", Hears: []uint32{1, 2, 7, 200}, ConfigVersion: 9, SeqEpoch: 2, Seqr: 7, SeqFrom: 250, Token: 1000}
	bare := Heartbeat{Node: 1 << 31, Proto: ProtocolVersion, State: stGather, Hears: []uint32{}}
	none := Heartbeat{Node: 2, Proto: ProtocolVersion, State: stRecovery}
	for _, in := range []Heartbeat{full, bare, none} {
		b, err := appendHeartbeat(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		// A version-1 build decodes the heartbeat into this struct,
		// unchanged, with encoding/json: it must read whom to refuse.
		var old Heartbeat
		if err := json.Unmarshal(b, &old); err != nil || old.Node != in.Node || old.Proto != ProtocolVersion {
			t.Fatalf("%s: a version-1 build reads node %d proto %d (%v)", b, old.Node, old.Proto, err)
		}
		var out Heartbeat
		if err := parseHeartbeat(b, &out); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Fatalf("parsed %+v, want %+v", out, in)
		}
		body, err := appendHeartbeatBody(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		for cut := range len(body) {
			if err := parseHeartbeatBody(body[:cut], &Heartbeat{}); err == nil {
				t.Fatalf("%+v: body cut at %d of %d parsed", in, cut, len(body))
			}
		}
		if err := parseHeartbeatBody(append(body, 0), &Heartbeat{}); err == nil {
			t.Fatalf("%+v: body with a byte too many parsed", in)
		}
		// The same envelope written otherwise (spaces) goes through JSON.
		spaced := bytes.Replace(b, []byte(`,"hb":`), []byte(`, "hb": `), 1)
		out = Heartbeat{}
		if err := parseHeartbeat(spaced, &out); err != nil || !reflect.DeepEqual(out, in) {
			t.Fatalf("%s: parsed %+v (%v), want %+v", spaced, out, err, in)
		}
	}
	old := full
	old.Proto = 1
	j, _ := json.Marshal(old)
	var out Heartbeat
	if err := parseHeartbeat(j, &out); err != nil || out.Node != 7 || out.Proto != 1 {
		t.Fatalf("a version 1 heartbeat parsed as %+v (%v)", out, err)
	}
	later := []byte(`{"node":5,"proto":3,"hb":"bm90IGEgYm9keSBvZiB0aGlzIHZlcnNpb24="}`)
	out = Heartbeat{}
	if err := parseHeartbeat(later, &out); err != nil || !reflect.DeepEqual(out, Heartbeat{Node: 5, Proto: 3}) {
		t.Fatalf("a version 3 envelope parsed as %+v (%v)", out, err)
	}
}
