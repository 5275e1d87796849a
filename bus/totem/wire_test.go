package totem

import (
	"bytes"
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
