package cpg_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cpg/vscheck"
	"github.com/corobus/corobus/services/cswire"
)

// corosync's answers to joins, leaves and multicasts in every state
// (exec/cpg.c's table), and the configuration changes they cause.
func TestGroupSemantics(t *testing.T) {
	c := newCluster(t, 1, cpg.Options{})
	a, b := c.member(1, 100), c.member(1, 200)

	if err := a.status(cpgwire.EncodeLeave("g", 100)); err != cswire.ErrNotExist {
		t.Errorf("leave without a join: %v, want CS_ERR_NOT_EXIST", err)
	}
	if err := a.status(cpgwire.EncodePartialMcast(cpgwire.GuaranteeAgreed, 10, cpgwire.PartialFirst, []byte("x"))); err != cswire.ErrNotExist {
		t.Errorf("partial multicast without a join: %v, want CS_ERR_NOT_EXIST", err)
	}
	long := cpgwire.EncodeJoin("g", 100, 0)
	binary.LittleEndian.PutUint32(long[16:], cpgwire.MaxNameLength+1)
	if err := a.status(long); err != cswire.ErrNameTooLong {
		t.Errorf("join with a 129-byte name: %v, want CS_ERR_NAME_TOO_LONG", err)
	}

	a.join("g")
	a.waitLog("confchg g m=[1/100] l=[] j=[1/100:1]")
	if err := a.status(cpgwire.EncodeJoin("g", 100, 0)); err != cswire.ErrExist {
		t.Errorf("join twice: %v, want CS_ERR_EXIST", err)
	}
	if err := a.status(cpgwire.EncodeJoin("other", 100, 0)); err != cswire.ErrExist {
		t.Errorf("join a second group on one connection: %v, want CS_ERR_EXIST", err)
	}
	dup := c.member(1, 100)
	if err := dup.status(cpgwire.EncodeJoin("g", 100, 0)); err != cswire.ErrExist {
		t.Errorf("the same pid joining the same group on another connection: %v, want CS_ERR_EXIST", err)
	}
	b.join("g")
	for _, m := range []*member{a, b} {
		m.waitLog("confchg g m=[1/100 1/200] l=[] j=[1/200:1]")
	}
	a.mcast("hello")
	b.mcast("world")
	for _, m := range []*member{a, b} {
		m.waitLog("deliver 1/200 world")
	}
	if !slices.Equal(cpgOnly(a.log())[1:], cpgOnly(b.log())) {
		t.Errorf("members saw different streams:\n%s\n---\n%s", strings.Join(a.log(), "\n"), strings.Join(b.log(), "\n"))
	}
	r := a.request(cpgwire.EncodeMembership("g"))
	if want := []cpgwire.Address{{NodeID: 1, PID: 100}, {NodeID: 1, PID: 200}}; !slices.Equal(r.Members, want) {
		t.Errorf("membership %v, want %v", r.Members, want)
	}
	if r := a.request(cpgwire.EncodeBareRequest(cpgwire.ReqLocalGet)); r.NodeID != 1 {
		t.Errorf("local node %d", r.NodeID)
	}

	// A leave is answered at once and done when delivered. As in
	// corosync 3.1.7 the connection then keeps the group's callbacks and
	// can join no group again (corosync: CS_ERR_EXIST for the same group,
	// CS_ERR_BUSY for ever for another, which corobus answers
	// CS_ERR_EXIST).
	if err := b.status(cpgwire.EncodeLeave("g", 200)); err != cswire.OK {
		t.Fatalf("leave: %v", err)
	}
	for _, m := range []*member{a, b} {
		m.waitLog("confchg g m=[1/100] l=[1/200:2] j=[]")
	}
	if err := b.status(cpgwire.EncodeLeave("g", 200)); err != cswire.ErrNotExist {
		t.Errorf("leave twice: %v, want CS_ERR_NOT_EXIST", err)
	}
	for _, g := range []cpgwire.Name{"g", "h"} {
		if err := b.status(cpgwire.EncodeJoin(g, 200, 0)); err != cswire.ErrExist {
			t.Errorf("join %q after a leave: %v, want CS_ERR_EXIST", g, err)
		}
	}
	a.mcast("after the leave")
	b.waitLog("deliver 1/100 after the leave")
	b.conn.Close()
	b = c.member(1, 200)
	b.join("h")
	b.waitLog("confchg h m=[1/200] l=[] j=[1/200:1]")

	// A connection that ends leaves its group with PROCDOWN.
	b.conn.Close()
	c.member(1, 300).join("h")
	a.conn.Close()
	w := c.member(1, 400)
	w.join("g")
	w.waitLog("confchg g m=[1/400] l=[] j=[1/400:1]")
	if r := w.request(cpgwire.EncodeMembership("g")); len(r.Members) != 1 {
		t.Errorf("after the PROCDOWN the group has %v", r.Members)
	}
}

// cpg_iteration_* walks the groups in corosync's order: groups in reverse
// order of first appearance in the (node, pid) sorted process list, in a
// group its first process and then the others in reverse.
func TestIterationOrder(t *testing.T) {
	c := newCluster(t, 1, cpg.Options{})
	joins := []struct {
		pid   uint32
		group string
	}{{30, "b"}, {10, "a"}, {20, "a"}, {40, "a"}, {50, "c"}, {15, "b"}}
	var ms []*member
	for _, j := range joins {
		m := c.member(1, j.pid)
		m.join(j.group)
		ms = append(ms, m)
	}
	last := ms[len(ms)-1]
	waitFor(t, "every join", func() bool {
		n := 0
		for _, g := range []string{"a", "b", "c"} {
			n += len(last.request(cpgwire.EncodeMembership(cpgwire.Name(g))).Members)
		}
		return n == len(joins)
	})
	iterate := func(typ uint32, g string) []string {
		h := last.request(cpgwire.EncodeIterInit(typ, cpgwire.Name(g))).Handle
		var out []string
		for {
			r := last.request(cpgwire.EncodeIterHandle(cpgwire.ReqIterNext, h))
			if r.Error == cswire.ErrNoSections {
				break
			}
			if r.Error != cswire.OK {
				t.Fatalf("iteration_next: %v", r.Error)
			}
			out = append(out, fmt.Sprintf("%s:%d/%d", r.Desc.Group, r.Desc.NodeID, r.Desc.PID))
		}
		if err := last.status(cpgwire.EncodeIterHandle(cpgwire.ReqIterFinalize, h)); err != cswire.OK {
			t.Errorf("iteration_finalize: %v", err)
		}
		return out
	}
	// Process list by pid: a/10 b/15 a/20 b/30 a/40 c/50.
	if got, want := iterate(cpgwire.IterAll, ""), []string{"c:1/50", "b:1/15", "b:1/30", "a:1/10", "a:1/40", "a:1/20"}; !slices.Equal(got, want) {
		t.Errorf("ALL: %v, want %v", got, want)
	}
	if got, want := iterate(cpgwire.IterNameOnly, ""), []string{"c:0/0", "b:0/0", "a:0/0"}; !slices.Equal(got, want) {
		t.Errorf("NAME_ONLY: %v, want %v", got, want)
	}
	if got, want := iterate(cpgwire.IterOneGroup, "a"), []string{"a:1/10", "a:1/40", "a:1/20"}; !slices.Equal(got, want) {
		t.Errorf("ONE_GROUP a: %v, want %v", got, want)
	}
	if err := last.request(cpgwire.EncodeIterHandle(cpgwire.ReqIterNext, 12345)).Error; err != cswire.ErrLibrary {
		t.Errorf("next of an unknown iteration: %v", err)
	}
}

// Members on three nodes multicast while a node is killed: every member
// delivers the same messages and configuration changes in the same order,
// and the killed node's processes leave with NODEDOWN at the same point
// of every survivor's stream. A partition and its heal give NODEDOWN then
// NODEUP on both sides.
func TestVirtualSynchronyAcrossNodes(t *testing.T) {
	c := newCluster(t, 3, cpg.Options{})
	var ms []*member
	for id := 1; id <= 3; id++ {
		for k := range 2 {
			m := c.member(id, uint32(100*id+k))
			m.join("vs")
			ms = append(ms, m)
		}
	}
	for _, m := range ms {
		m.waitLog("m=[1/100 1/101 2/200 2/201 3/300 3/301]")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < 200 && ctx.Err() == nil; i++ {
			for _, m := range ms[:4] {
				m.mcast(fmt.Sprintf("%d/%d #%d", m.node, m.pid, i))
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	c.kill(3)
	<-sent
	survivors := ms[:4]
	for _, m := range survivors {
		m.waitLog("l=[3/300:3 3/301:3]")
		m.waitLog("deliver 2/201 2/201 #199")
	}
	// Every member's stream keeps CPG's guarantees (vscheck: total order,
	// virtual synchrony, no duplicates, own messages in order); members
	// of one node see the very same stream.
	var logs []*vscheck.Log
	for _, m := range ms {
		logs = append(logs, m.vslog())
	}
	if err := vscheck.Check(logs); err != nil {
		t.Fatalf("the members' streams break CPG's guarantees:\n%v", err)
	}
	for k := 0; k < len(survivors); k += 2 {
		a, b := cpgOnly(survivors[k].log()), cpgOnly(survivors[k+1].log())
		n := min(len(a), len(b))
		if !slices.Equal(a[len(a)-n:], b[len(b)-n:]) {
			t.Fatalf("two members of node %d saw different streams:\n%s", survivors[k].node, diff(a[len(a)-n:], b[len(b)-n:]))
		}
	}

	// Partition {1} | {2}: each side loses the other's processes, and
	// gets them back with NODEUP when the partition heals.
	c.h.Partition([]int{1}, []int{2})
	ms[0].waitLog("confchg vs m=[1/100 1/101] l=[2/200:3 2/201:3] j=[]")
	ms[2].waitLog("confchg vs m=[2/200 2/201] l=[1/100:3 1/101:3] j=[]")
	c.h.Heal()
	for _, m := range survivors[:2] {
		m.waitLog("confchg vs m=[1/100 1/101 2/200 2/201] l=[] j=[2/201:4 2/200:4]")
	}
	for _, m := range survivors[2:] {
		m.waitLog("confchg vs m=[1/100 1/101 2/200 2/201] l=[] j=[1/101:4 1/100:4]")
	}
}

func diff(a, b []string) string {
	var out []string
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		mark := "  "
		if x != y {
			mark = "!="
		}
		out = append(out, fmt.Sprintf("%s %-60s %s", mark, x, y))
	}
	return strings.Join(out, "\n")
}

// A restarted cpg instance knows nothing: it asks every member for its
// joinlist and takes connections once it has the same picture as the
// others. The connections of the instance that went are gone with it: the
// others see their processes leave with PROCDOWN.
func TestRestartedInstanceResynchronizes(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{Logger: bustest.Logger(t)})
	a := c.member(1, 10)
	a.join("r")
	a.waitLog("confchg r m=[1/10] l=[] j=[1/10:1]")
	b := c.member(2, 20)
	b.join("r")
	a.waitLog("confchg r m=[1/10 2/20] l=[] j=[2/20:1]")

	c.mu.Lock()
	old := c.svcs[2]
	c.mu.Unlock()
	c.stop(2, old)
	svc := c.start(2)
	waitFor(t, "the new instance to synchronize", svc.Ready)
	a.waitLog("confchg r m=[1/10] l=[2/20:5] j=[]")
	fresh := c.member(2, 22)
	fresh.join("r")
	fresh.waitLog("confchg r m=[1/10 2/22] l=[] j=[2/22:1]")
	a.waitLog("confchg r m=[1/10 2/22] l=[] j=[2/22:1]")
}

// Messages larger than one totem message go in chunks; callbacks larger
// than a client takes go as partial deliveries; a libcpg fragmented send
// arrives whole, in order with the small ones.
func TestLargeMessages(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{Chunk: 1000, MaxEvent: 4096})
	a, b := c.member(1, 1), c.member(2, 2)
	a.join("big")
	b.join("big")
	b.waitLog("m=[1/1 2/2]")
	big := bytes.Repeat([]byte("0123456789"), 1000)
	a.mcast("small-1")
	a.conn.Request(context.Background(), cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, big))
	a.mcast("small-2")
	// A fragmented send: three fragments of one message.
	msg := bytes.Repeat([]byte("abcdefghij"), 900)
	frags := [][]byte{msg[:3000], msg[3000:6000], msg[6000:]}
	for i, f := range frags {
		typ := cpgwire.PartialContinued
		switch i {
		case 0:
			typ = cpgwire.PartialFirst
		case len(frags) - 1:
			typ = cpgwire.PartialLast
		}
		if err := a.status(cpgwire.EncodePartialMcast(cpgwire.GuaranteeAgreed, uint32(len(msg)), typ, f)); err != cswire.OK {
			t.Fatalf("fragment %d: %v", i, err)
		}
	}
	a.mcast("small-3")
	for _, m := range []*member{a, b} {
		m.waitLog("deliver 1/1 small-3")
		var got [][]byte
		for _, e := range m.snapshot() {
			if e.ID == cpgwire.ResDeliverCallback {
				got = append(got, e.Data)
			}
		}
		want := [][]byte{[]byte("small-1"), big, []byte("small-2"), msg, []byte("small-3")}
		if len(got) != len(want) {
			t.Fatalf("%d deliveries, want %d: %s", len(got), len(want), strings.Join(m.log(), "\n"))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("delivery %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
			}
		}
	}
}

// The clients' multicasts wait (flow control) while the window is full
// and while the groups synchronize after a view change.
func TestFlowControl(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{Window: 8})
	a := c.member(1, 1)
	a.join("fc")
	a.waitLog("m=[1/1]")
	for i := range 500 {
		a.mcast(fmt.Sprint(i))
	}
	a.waitLog("deliver 1/1 499")
	if n := c.svc(1).Counters()["flow_control"]; n == 0 {
		t.Error("500 multicasts through a window of 8 never raised flow control")
	}
	waitFor(t, "the flow control to drop", func() bool { return a.flowLevel() == 0 })
	a.mu.Lock()
	a.flows = nil
	a.mu.Unlock()
	c.kill(2)
	a.waitLog("totem")
	waitFor(t, "the flow control to drop after the sync", func() bool { return a.flowLevel() == 0 })
	a.mu.Lock()
	flows := slices.Clone(a.flows)
	a.mu.Unlock()
	if !slices.Contains(flows, 2) {
		t.Errorf("the view change did not hold the multicasts: levels %v", flows)
	}
}

// Every configuration change is published on the bus
// (<prefix>.cpg.<node>.confchg.<group>), every synchronization on
// …cpg.<node>.ring, and the groups are served on …cpg.<node>.groups.
func TestGroupEventsOnTheBus(t *testing.T) {
	c := newCluster(t, 1, cpg.Options{})
	nc := c.h.Client(1)
	var got []cpg.ConfChgEvent
	var mu sync.Mutex
	all := strings.TrimSuffix(c.h.Subjects.CPGConfChg(1, ""), "=") + "*"
	sub, err := nc.Subscribe(all, func(m *nats.Msg) {
		var ev cpg.ConfChgEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("confchg event %q: %v", m.Data, err)
			return
		}
		if m.Subject != c.h.Subjects.CPGConfChg(1, string(ev.Name)) {
			t.Errorf("event of group %q on %s", ev.Name, m.Subject)
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	a := c.member(1, 7)
	a.join("bus.group x")
	a.waitLog("j=[1/7:1]")
	a.conn.Close()
	waitFor(t, "two events", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if e := got[0]; e.Group != "bus.group x" || len(e.Joined) != 1 || e.Joined[0] != (cpgwire.Address{NodeID: 1, PID: 7, Reason: cpgwire.ReasonJoin}) || len(e.Members) != 1 {
		t.Errorf("join event %+v", e)
	}
	if e := got[1]; len(e.Left) != 1 || e.Left[0].Reason != cpgwire.ReasonProcDown || len(e.Members) != 0 {
		t.Errorf("procdown event %+v", e)
	}
	m, err := nc.Request(c.h.Subjects.CPGGroups(1), []byte(`{"type":3}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep cpg.GroupsReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" || rep.Node != 1 || m.Header.Get(micro.ErrorHeader) != "" {
		t.Errorf("groups reply %s: %v", m.Data, err)
	}
	// A request it cannot read is refused at once with the error
	// headers of every request/reply subject (code 400) besides the
	// JSON's error; until 3 Dec only the JSON said it.
	for _, bad := range []string{"garbage", `{"type":7}`} {
		m, err := nc.Request(c.h.Subjects.CPGGroups(1), []byte(bad), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep cpg.GroupsReply
		_ = json.Unmarshal(m.Data, &rep)
		if rep.Error == "" || m.Header.Get(micro.ErrorHeader) == "" || m.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("groups request %q: answered %q, error %q, code %q; want refused (code 400)", bad, m.Data,
				m.Header.Get(micro.ErrorHeader), m.Header.Get(micro.ErrorCodeHeader))
		}
	}
}

// The window in bytes: large multicasts raise flow control long before
// the window in messages is near, and it drops once they are back.
// Two nodes: a node alone in its ring delivers its multicasts without the
// totem, and so without its window (TestAlone).
func TestFlowControlBytes(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{Window: 1024, WindowBytes: 256 << 10})
	a := c.member(1, 1)
	a.join("fcb")
	a.waitLog("m=[1/1]")
	for i := range 40 {
		a.mcast(fmt.Sprintf("%d %s", i, strings.Repeat("x", 64<<10)))
	}
	waitFor(t, "the 40 messages back", func() bool {
		n := 0
		for _, l := range a.log() {
			if strings.HasPrefix(l, "deliver 1/1 <") {
				n++
			}
		}
		return n == 40
	})
	a.mu.Lock()
	flows := slices.Clone(a.flows)
	a.mu.Unlock()
	if !slices.Contains(flows, 2) {
		t.Errorf("40 multicasts of 64 KiB through a window of 256 KiB never held the client: levels %v", flows)
	}
	waitFor(t, "the flow control to drop", func() bool { return a.flowLevel() == 0 })
}

// A node alone in its ring delivers its members' multicasts at once,
// without the totem; when another node comes, the multicasts go through
// the totem again, and every member's stream keeps CPG's guarantees
// across the change: the messages sent alone are delivered in the view
// of one, before the view of two, and the other node never gets them.
func TestAlone(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{})
	a1, a2, b := c.member(1, 10), c.member(1, 11), c.member(2, 20)
	for _, m := range []*member{a1, a2, b} {
		m.join("alone")
	}
	for _, m := range []*member{a1, a2, b} {
		m.waitLog("m=[1/10 1/11 2/20]")
	}
	if n := c.svc(1).Counters()["alone"]; n != 0 {
		t.Fatalf("%d multicasts delivered without the totem in a ring of two", n)
	}
	c.h.Partition([]int{1}, []int{2})
	a1.waitLog("confchg alone m=[1/10 1/11] l=[2/20:3] j=[]")
	b.waitLog("confchg alone m=[2/20] l=[1/10:3 1/11:3] j=[]")
	// A member that joins the node alone multicasts at once: its first
	// messages go through the totem behind its join, the next ones not —
	// only once those are delivered, or they would overtake them.
	a3 := c.member(1, 12)
	a3.join("alone")
	for i := range 300 {
		a3.mcast(fmt.Sprintf("1/12 #%d", i))
	}
	a3.waitLog("deliver 1/12 1/12 #299")
	var own []string
	for _, l := range a3.log() {
		if strings.HasPrefix(l, "deliver 1/12 ") {
			own = append(own, l)
		}
	}
	for i, l := range own {
		if want := fmt.Sprintf("deliver 1/12 1/12 #%d", i); l != want || len(own) != 300 {
			t.Fatalf("a member that multicast right after its join got %d of its 300 messages, the %dth %q:\n%s", len(own), i, l, strings.Join(own, "\n"))
		}
	}
	a3.conn.Close()
	a1.waitLog("confchg alone m=[1/10 1/11] l=[1/12:5] j=[]")

	// Every member multicasts while the partition heals — the ring of one
	// becomes a ring of two under the multicasts — and goes on until it
	// has seen the other node come back.
	var sent [3]int
	var wg sync.WaitGroup
	ms := []*member{a1, a2, b}
	for k, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			back, i := -1, 0
			for ; i < 20000 && (back < 0 || i < back+50); i++ {
				m.mcast(fmt.Sprintf("%d/%d #%d", m.node, m.pid, i))
				if back < 0 && slices.ContainsFunc(m.log(), func(l string) bool { return strings.Contains(l, ":4]") }) {
					back = i
				}
				if i%8 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			sent[k] = i
		}()
	}
	waitFor(t, "multicasts delivered without the totem", func() bool { return c.svc(1).Counters()["alone"] > 0 })
	c.h.Heal()
	wg.Wait()
	// The last ones, through the totem to both nodes.
	for k, m := range ms {
		m.mcast(fmt.Sprintf("%d/%d #%d", m.node, m.pid, sent[k]))
	}
	for _, m := range ms {
		for k, from := range ms {
			m.waitLog(fmt.Sprintf("deliver %d/%d %d/%d #%d", from.node, from.pid, from.node, from.pid, sent[k]))
		}
	}
	logs := []*vscheck.Log{a1.vslog(), a2.vslog(), b.vslog()}
	if err := vscheck.Check(logs); err != nil {
		t.Fatalf("the members' streams break CPG's guarantees:\n%v", err)
	}
	// From a2's join on (its first callback), the same stream. a2 and b
	// join concurrently, so a1 may have seen either first: cut a1's
	// stream at a2's join, wherever it is.
	x, y := cpgOnly(a1.log()), cpgOnly(a2.log())
	if len(y) == 0 {
		t.Fatal("a2 saw nothing")
	}
	if i := slices.Index(x, y[0]); i >= 0 {
		x = x[i:]
	}
	if !slices.Equal(x, y) {
		t.Fatalf("the two members of node 1 saw different streams:\n%s", diff(x, y))
	}
	// Each member of node 1 got every message of node 1, once (vscheck
	// checks their order): nothing sent alone is lost.
	for _, m := range ms[:2] {
		for k, from := range ms[:2] {
			n := 0
			for _, l := range m.log() {
				if strings.HasPrefix(l, fmt.Sprintf("deliver %d/%d ", from.node, from.pid)) {
					n++
				}
			}
			if n != sent[k]+1 {
				t.Errorf("%d/%d got %d messages of %d/%d, want %d", m.node, m.pid, n, from.node, from.pid, sent[k]+1)
			}
		}
	}
	t.Logf("sent %v; node 1 delivered %d without the totem", sent, c.svc(1).Counters()["alone"])
}

// A CPG instance killed without closing (its connection cut, no leave
// request) and replaced by a new one on its node: the new instance's
// large multicasts come back to it kept (without their payload) once the
// bus has seen the old connection close — the dead instance does not
// count as a second listener of CPG's stream.
func TestReplacedInstanceKeepsItsOwnAgain(t *testing.T) {
	// Two nodes: a node alone in its ring delivers CPG's multicasts
	// without the totem.
	c := newCluster(t, 2, cpg.Options{})
	// Node 1's CPG deliver frames, kept or whole, as its bus publishes
	// them (this connection does not name the service to the bus).
	var kept atomic.Int32
	watch := c.h.Client(1)
	if _, err := watch.Subscribe(c.h.Subjects.TotemDeliver(1, cpg.TotemService), func(m *nats.Msg) {
		if m.Header.Get(totem.KeptHeader) != "" {
			kept.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	c.crash(1)
	c.start(1)
	c.waitReady(1)
	a := c.member(1, 1)
	a.join("kept")
	a.waitLog("m=[1/1]")
	// Until the bus has taken the old instance's end: at most 20 s.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; kept.Load() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no large multicast came back kept after the old instance died")
		}
		m := bytes.Repeat([]byte{byte('a' + i%26)}, 20<<10)
		a.conn.Request(context.Background(), cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, m))
		waitFor(t, "the large message back", func() bool {
			n := 0
			for _, e := range a.snapshot() {
				if e.ID == cpgwire.ResDeliverCallback && len(e.Data) == len(m) {
					n++
				}
			}
			return n == i+1
		})
	}
}

// Large multicasts (the totem client keeps its own, KeepOwn, and they come
// back to the sender's node without their payload) reach the members of
// both nodes whole and in order.
func TestLargeOwnMessagesWhole(t *testing.T) {
	c := newCluster(t, 2, cpg.Options{})
	a, b := c.member(1, 1), c.member(2, 2)
	a.join("kept")
	b.join("kept")
	a.waitLog("m=[1/1 2/2]")
	b.waitLog("m=[1/1 2/2]")
	var want [][]byte
	for i := range 10 {
		m := bytes.Repeat([]byte{byte('a' + i)}, 20<<10+i)
		want = append(want, m)
		a.conn.Request(context.Background(), cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, m))
	}
	a.mcast("last")
	for _, m := range []*member{a, b} {
		m.waitLog("deliver 1/1 last")
		var got [][]byte
		for _, e := range m.snapshot() {
			if e.ID == cpgwire.ResDeliverCallback && len(e.Data) > 4 {
				got = append(got, e.Data)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d large deliveries, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("delivery %d: %d bytes, not the %d sent", i, len(got[i]), len(want[i]))
			}
		}
	}
}

// A node's instance receives other nodes' multicasts only of the groups
// its connections are in (the bus filters them by the group's key), and a
// connection that joins a group there misses none of the group's messages
// ordered after its join: a member on node 3 joins while node 1's member
// multicasts, and both deliver the same messages from the join on
// (vscheck).
func TestMulticastsOnlyWhereMembers(t *testing.T) {
	c := newCluster(t, 3, cpg.Options{})
	m1, m2 := c.member(1, 100), c.member(2, 200)
	m1.join("a")
	m2.join("b")
	m1.waitLog("confchg a m=[1/100]")
	m2.waitLog("confchg b m=[2/200]")
	rx := func(id int) uint64 { return c.svc(id).Counters()["3.rx"] }
	rx2, rx3 := rx(2), rx(3)
	for i := range 20 {
		m1.mcast(fmt.Sprintf("1/100 #%d", i))
		m2.mcast(fmt.Sprintf("2/200 #%d", i))
	}
	m1.waitLog("deliver 1/100 1/100 #19")
	m2.waitLog("deliver 2/200 2/200 #19")
	// Node 1's last message to b (node 2's last to a) is delivered on
	// every node by the time the next own message is: a marker.
	m1.mcast("1/100 #20")
	m2.mcast("2/200 #20")
	m1.waitLog("deliver 1/100 1/100 #20")
	m2.waitLog("deliver 2/200 2/200 #20")
	if got := rx(2) - rx2; got != 21 {
		t.Errorf("node 2 received %d multicasts, want its own 21 (none of group a's)", got)
	}
	if got := rx(3) - rx3; got != 0 {
		t.Errorf("node 3, with no member, received %d multicasts, want none", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 21; i < 400 && ctx.Err() == nil; i++ {
			m1.mcast(fmt.Sprintf("1/100 #%d", i))
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	m3 := c.member(3, 300)
	m3.join("a")
	<-sent
	m1.waitLog("deliver 1/100 1/100 #399")
	m3.waitLog("deliver 1/100 1/100 #399")
	m3.waitLog("confchg a m=[1/100 3/300]")
	if err := vscheck.Check([]*vscheck.Log{m1.vslog(), m3.vslog()}); err != nil {
		t.Fatalf("the members' streams break CPG's guarantees:\n%v", err)
	}
	// The join's point in node 1's stream, and what follows it there, is
	// what node 3's member delivered.
	a, b := cpgOnly(m1.log()), cpgOnly(m3.log())
	i := slices.Index(a, "confchg a m=[1/100 3/300] l=[] j=[3/300:1]")
	if i < 0 || len(b) < len(a)-i || !slices.Equal(a[i:], b[len(b)-(len(a)-i):]) {
		t.Fatalf("node 3's member did not deliver what node 1's did from its join on:\n%s", diff(a, b))
	}
	t.Logf("node 3's member joined after %d of node 1's messages", strings.Count(strings.Join(a[:max(i, 0)], "\n"), "deliver 1/100"))
}
