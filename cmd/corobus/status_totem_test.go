package main

import (
	"bytes"
	"testing"

	"github.com/corobus/corobus/bus/totem"
)

// A node refusing nodes of another protocol version names them, their
// version and its own; a node refusing nobody prints no such line.
func TestPrintTotemStatusRefused(t *testing.T) {
	st := &totem.Status{State: "operational", Ring: totem.RingID{Rep: 2, Seq: 4}, Members: []uint32{2, 3}, Reachable: []uint32{2, 3}, Sequencer: 2, Views: 1, Protocol: 1}
	var b bytes.Buffer
	printTotemStatus(&b, st)
	want := "Ring:       2.4 (operational), sequencer node 2, 1 views\nMembers:    2 3 (reachable 2 3)\n"
	if b.String() != want {
		t.Fatalf("status:\n%s\nwant:\n%s", b.String(), want)
	}
	st.Refused = []totem.RefusedPeer{{Node: 1, Protocol: 0}, {Node: 4, Protocol: 2}}
	b.Reset()
	printTotemStatus(&b, st)
	want += "Refused:    node 1 (totem protocol 0, this node's 1), node 4 (totem protocol 2, this node's 1): run one build on every node\n"
	if b.String() != want {
		t.Fatalf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}
