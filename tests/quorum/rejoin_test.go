package quorum

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestLastManStandingRejoinMatchesCorosync runs one sequence on three real
// corosync nodes, then on three corobus nodes, with the same files
// (quorum.last_man_standing: 1, window 10 s), and compares, step by step,
// what corosync-quorumtool -s prints on every node and what the clients
// on node 1 are told (libquorum model v1, and model v0, each with
// libvotequorum; CS_TRACK_CHANGES): node 3 killed and expected votes
// stepped down to 2 after the window; node 3 restarted.
//
// corosync 3.1.7 after the rejoin: expected votes 3 on every node, quorum
// 2 (node 3's NODEINFO makes it a member again, and recalculate_quorum
// raises expected votes to the total votes); node 1's libquorum client is
// told once per model (v1: the nodelist with node 3 joined, then quorate
// with three members), its libvotequorum client once of each (nodelist,
// expected votes 3, quorum with node 3 a member). corobus told the v1
// client three times of each (the ring's round ran three times, for node
// 3's services registering one by one), the last two nodelists with node
// 3 both joined and left, the v0 client three times, and libvotequorum
// three nodelists and two quorum notifications, the first with node 3
// dead.
//
// The corosync half runs in TestOnCorosync (corosyncRejoin).
func TestLastManStandingRejoinMatchesCorosync(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	netcluster.RequireBackend(t, netcluster.Corosync)
	path := buildClient(t)
	want := corosyncRef[string](t, "LastManStandingRejoinMatchesCorosync")
	got := rejoinTranscript(t, netcluster.Corobus, path)
	t.Logf("on three corosync nodes:\n%s", want)
	ws, gs := sections(normalizeRejoin(want)), sections(normalizeRejoin(got))
	if len(ws) != len(gs) {
		t.Errorf("corosync's transcript has %d sections, corobus's %d", len(ws), len(gs))
	}
	for i := 0; i < len(ws) && i < len(gs); i++ {
		if ws[i].name != gs[i].name {
			t.Errorf("section %d is %q with corosync but %q with corobus", i, ws[i].name, gs[i].name)
			break
		}
		if ws[i].body != gs[i].body {
			t.Errorf("%s: differs\n--- corosync\n%s+++ corobus\n%s", ws[i].name, ws[i].body, gs[i].body)
		}
	}
	if t.Failed() {
		t.Logf("on three corobus nodes:\n%s", got)
	}
}

// corosyncRejoin is the sequence's transcript on three corosync nodes.
func corosyncRejoin(t *testing.T) string {
	return rejoinTranscript(t, netcluster.Corosync, buildClient(t))
}

func rejoinTranscript(t *testing.T, backend netcluster.Backend, path string) string {
	ctx := context.Background()
	c := netcluster.Start(t, netcluster.Options{Nodes: 3, Backend: backend, Keys: map[string]string{
		"quorum.last_man_standing": "1", "quorum.last_man_standing_window": "10000"}})
	keepLogs(t, c)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	var b strings.Builder
	show := func(step string, nn ...*netcluster.Node) {
		for _, n := range nn {
			st, err := status(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "== %s: node %d: corosync-quorumtool -s\n%src=%d\n", step, n.ID, st.text, st.exit)
		}
	}
	waitStatus(t, settle, fmt.Sprintf("%s: quorate, 3 nodes, expected votes 3", backend), func(st quorumStatus) bool {
		return st.quorate && st.nodes == 3 && st.expected == 3
	}, n1, n2, n3)
	v1 := startClient(t, n1, path)
	v0 := startClient(t, n1, path, "QC_MODEL0=1")
	t.Cleanup(func() {
		if t.Failed() {
			// Every line, with its time: the transcript has a step's only.
			t.Logf("%s: node 1's clients, whole output:\n--- model v1\n%s--- model v0\n%s", backend, v1.text(), v0.text())
		}
	})
	clients := func(step string, since int64) {
		// The notifications of a step may follow its status by a
		// little: wait until neither client printed anything for 3 s.
		last, quiet := v1.text()+v0.text(), time.Now()
		for time.Since(quiet) < 3*time.Second {
			time.Sleep(200 * time.Millisecond)
			if now := v1.text() + v0.text(); now != last {
				last, quiet = now, time.Now()
			}
		}
		for _, cl := range []struct {
			name string
			c    *client
		}{{"model v1", v1}, {"model v0", v0}} {
			writeCallbacks(&b, step, cl.name, cl.c.linesSince(since))
		}
	}

	since := nowMS()
	t.Logf("%s: node 3 killed at %d", backend, since)
	if err := n3.Kill(); err != nil {
		t.Fatal(err)
	}
	c.WaitView(t, settle, []*netcluster.Node{n1, n2}, []uint32{1, 2})
	waitStatus(t, settle+10*time.Second, fmt.Sprintf("%s: expected votes stepped down to 2", backend), func(st quorumStatus) bool {
		return st.quorate && st.nodes == 2 && st.expected == 2 && st.quorumVal == 2
	}, n1, n2)
	show("node 3 killed, window passed", n1, n2)
	clients("node 3 killed, window passed", since)

	since = nowMS()
	if err := n3.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(t, settle)
	waitStatus(t, settle, fmt.Sprintf("%s: 3 nodes, quorate", backend), func(st quorumStatus) bool {
		return st.quorate && st.nodes == 3 && st.total == 3
	}, n1, n2, n3)
	clients("node 3 restarted", since)
	show("node 3 restarted", n1, n2, n3)
	return b.String()
}

// writeCallbacks writes a client's callbacks of a step in two sections,
// libquorum's and libvotequorum's, each in order: they must be corosync's,
// one for one. Not compared: the order of the two libraries' callbacks
// (two processes on corobus), and the order of a votequorum
// notification's nodes (corosync lists them in the order its node table
// grew, the reverse of the order their first NODEINFO was delivered):
// they are put in id order.
func writeCallbacks(b *strings.Builder, step, model string, lines []string) {
	fmt.Fprintf(b, "== %s: node 1's libquorum client (%s)\n", step, model)
	var vq []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "vq-expected ") && len(vq) > 0 && vq[len(vq)-1] == l:
			// The same expected votes twice in a row: a member's own
			// NODEINFO, sent before the rejoining node's came in,
			// delivered after it, sets the member's expected votes back
			// (recalculate_quorum then raises them again, and tells
			// again). The race is corosync's algorithm's too; corobus,
			// which multicasts the NODEINFOs in each of a ring's rounds,
			// met it in 1 of 3 runs.
		case strings.HasPrefix(l, "vq-"):
			vq = append(vq, sortNodes(l))
		default:
			fmt.Fprintln(b, l)
		}
	}
	fmt.Fprintf(b, "== %s: its libvotequorum client\n", step)
	for _, l := range vq {
		fmt.Fprintln(b, l)
	}
}

// sortNodes puts a vq-quorum line's nodes=id:state,… in id order.
func sortNodes(l string) string {
	head, nodes, ok := strings.Cut(l, "nodes=")
	if !ok || !strings.HasPrefix(l, "vq-quorum ") {
		return l
	}
	list := strings.Split(nodes, ",")
	sort.Slice(list, func(i, j int) bool {
		var a, b int
		fmt.Sscan(strings.SplitN(list[i], ":", 2)[0], &a)
		fmt.Sscan(strings.SplitN(list[j], ":", 2)[0], &b)
		return a < b
	})
	return head + "nodes=" + strings.Join(list, ",")
}

var ringSeqRE = regexp.MustCompile(`(ring=[0-9a-f]+\.|ring_seq=)[0-9a-f]+`)

// normalizeRejoin is normalize, plus the ring sequences the clients print.
func normalizeRejoin(s string) string {
	return ringSeqRE.ReplaceAllString(normalize(s), "$1(seq)")
}
