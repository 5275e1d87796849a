package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
)

// totemStatus asks node's totem for its ring (for NodeStatus; nil when
// totem does not answer, e.g. a bus without the totem hook).
func totemStatus(nc *nats.Conn, subjects bus.Subjects, node uint32) *totem.Status {
	st, err := totem.FetchStatus(nc, subjects, node, time.Second)
	if err != nil {
		return nil
	}
	return &st
}

// printTotemStatus renders the ring lines of `corobus status`:
//
//	Ring:       1.12 (operational), sequencer node 1, 3 views
//	Members:    1 2 3 (reachable 1 2 3)
//
// and, when the node refuses nodes of another totem protocol version
// (another build: they can never join its ring), a line naming them:
//
//	Refused:    node 4 (totem protocol 0, this node's 1): run one build on every node
func printTotemStatus(w io.Writer, st *totem.Status) {
	if st == nil {
		fmt.Fprintln(w, "Ring:       unknown (totem not answering)")
		return
	}
	fmt.Fprintf(w, "Ring:       %s (%s), sequencer node %d, %d views\n", st.Ring, st.State, st.Sequencer, st.Views)
	fmt.Fprintf(w, "Members:    %s (reachable %s)\n", ids(st.Members), ids(st.Reachable))
	if len(st.Refused) > 0 {
		r := make([]string, len(st.Refused))
		for i, p := range st.Refused {
			r[i] = fmt.Sprintf("node %d (totem protocol %d, this node's %d)", p.Node, p.Protocol, st.Protocol)
		}
		fmt.Fprintf(w, "Refused:    %s: run one build on every node\n", strings.Join(r, ", "))
	}
}

func ids(v []uint32) string {
	if len(v) == 0 {
		return "none"
	}
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, " ")
}
