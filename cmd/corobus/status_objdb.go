package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/objdb"
)

// copiesStatus asks every watched copy of node's objdb view (objdb
// processes, cmap instances, …) for its state: scatter-gather, each
// answers for itself, and the answers are taken until none came for
// 300 ms. The copies of the processes in want (the node's objdb layers,
// which always hold one) are waited for up to 3 s: on a loaded machine
// the first answer came after 300 ms, and a status listed no copy at all.
// Nil when none answers.
func copiesStatus(nc *nats.Conn, subjects bus.Subjects, node uint32, want []int) []objdb.CopyStatus {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subjects.ObjdbCopies(node), inbox, nil); err != nil {
		return nil
	}
	missing := map[int]bool{}
	for _, pid := range want {
		missing[pid] = true
	}
	var out []objdb.CopyStatus
	patience := time.Now().Add(3 * time.Second)
	for {
		wait := 300 * time.Millisecond
		if len(missing) > 0 {
			wait = max(wait, time.Until(patience))
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			break
		}
		var cs objdb.CopyStatus
		if json.Unmarshal(m.Data, &cs) == nil {
			out = append(out, cs)
			delete(missing, cs.PID)
		}
	}
	slices.SortFunc(out, func(a, b objdb.CopyStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// printCopies renders the objdb copies section of `corobus status`:
//
//	Objdb copies:
//	  COPY           PID    STATE    REVISION  VIA    NODE SEQ  UNCONFIRMED  REASON
//	  corobus-objdb  12345  current  1042      keeper/node2  311       0            -
//	  corobus-ipc    12350  behind   998       node3  311       0            cluster feed lost: …
func printCopies(w io.Writer, list []objdb.CopyStatus) {
	fmt.Fprintln(w, "Objdb copies:")
	if len(list) == 0 {
		fmt.Fprintln(w, "  none answering")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  COPY\tPID\tSTATE\tREVISION\tVIA\tNODE SEQ\tUNCONFIRMED\tREASON")
	for _, c := range list {
		via := orDash(c.Via)
		if c.Relayed {
			// The cluster keys come through the node keeper's relay,
			// whose consumer is on Via.
			via = "keeper/" + via
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%s\t%d\t%d\t%s\n", c.Name, c.PID, c.State, c.Revision, via, c.NodeSeq, c.Pending, orDash(c.Reason))
	}
	_ = tw.Flush()
}

// peersLine is the JetStream peers line of `corobus status`: each peer's
// state as the meta leader reports it, "unknown" when no leader answers.
func peersLine(st bus.Status, names map[string]string) string {
	var peers []string
	for _, p := range st.Peers {
		peers = append(peers, named(names, p.Server)+" "+p.State)
	}
	from := "per meta leader " + named(names, st.PeersFrom)
	if st.PeersFrom == "" {
		from = "no meta leader answering: nobody knows"
	}
	return strings.Join(peers, ", ") + " (" + from + ")"
}
