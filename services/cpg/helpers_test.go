package cpg_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/totem/harness"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cpg/vscheck"
	"github.com/corobus/corobus/services/cswire"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// cluster is N totem nodes in this process, each with its sync engine and
// a cpg service.
type cluster struct {
	t    testing.TB
	h    *harness.Cluster
	opts cpg.Options
	mu   sync.Mutex
	svcs map[int]*node
}

type node struct {
	svc    *cpg.Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
	// crashed: its connection was closed under it (crash), so its
	// service's error is expected.
	crashed atomic.Bool
}

func newCluster(t testing.TB, n int, opts cpg.Options) *cluster {
	t.Helper()
	// corosync's default token: on a loaded machine a short one splits
	// the cluster now and then, which the tests would see.
	h := harness.New(t, harness.Options{N: n, Token: time.Second, Join: 30 * time.Millisecond, Consensus: 1200 * time.Millisecond})
	all := make([]int, n)
	for i := range all {
		all[i] = i + 1
	}
	h.WaitView(all, 15*time.Second)
	c := &cluster{t: t, h: h, opts: opts, svcs: map[int]*node{}}
	for id := 1; id <= n; id++ {
		c.startEngine(id)
		c.start(id)
	}
	for id := 1; id <= n; id++ {
		c.waitReady(id)
	}
	return c
}

// startEngine runs node id's sync engine until the test ends (or the
// node's server goes).
func (c *cluster) startEngine(id int) {
	nc := c.h.Client(id)
	e := syncsvc.New(nc, syncsvc.Options{Node: uint32(id), Subjects: c.h.Subjects})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-done })
}

// start runs a cpg service on node id.
func (c *cluster) start(id int) *cpg.Service {
	opts := c.opts
	opts.Node = uint32(id)
	opts.Subjects = c.h.Subjects
	svc := cpg.New(opts)
	nc := c.h.Client(id)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{svc: svc, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		if err := cpg.ServeWith(ctx, nc, c.h.Subjects, uint32(id), svc, nil); err != nil && ctx.Err() == nil && !n.crashed.Load() {
			c.t.Errorf("cpg on node %d: %v", id, err)
		}
	}()
	c.mu.Lock()
	c.svcs[id] = n
	c.mu.Unlock()
	c.t.Cleanup(func() { c.stop(id, n) })
	return svc
}

func (c *cluster) stop(id int, n *node) {
	n.cancel()
	<-n.done
	c.mu.Lock()
	if c.svcs[id] == n {
		delete(c.svcs, id)
	}
	c.mu.Unlock()
}

// crash ends node id's cpg service as a SIGKILL would: its connection
// closes under it, and nothing it would send on its way out (its totem
// client's leave request) reaches the bus.
func (c *cluster) crash(id int) {
	c.mu.Lock()
	n := c.svcs[id]
	c.mu.Unlock()
	n.crashed.Store(true)
	n.nc.Close()
	c.stop(id, n)
}

// kill kills node id: its cpg service first (with its server gone under
// it, a component's unsubscribing waits out nats.go's flush timeouts),
// then its totem and server. Nothing of the service reaches the others:
// to them the node just dies.
func (c *cluster) kill(id int) {
	c.mu.Lock()
	n := c.svcs[id]
	c.mu.Unlock()
	if n != nil {
		c.stop(id, n)
	}
	c.h.Kill(id)
}

func (c *cluster) svc(id int) *cpg.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svcs[id].svc
}

func (c *cluster) waitReady(id int) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("cpg on node %d to synchronize", id), func() bool { return c.svc(id).Ready() })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// member is a test client of one node's service: a connection and what
// it received.
type member struct {
	t    testing.TB
	node uint32
	pid  uint32
	conn *cpg.Conn

	mu      sync.Mutex
	events  []cpgwire.Event
	flow    int32
	flows   []int32
	partial map[[2]uint32][]byte
}

func (c *cluster) member(id int, pid uint32) *member {
	c.t.Helper()
	m := &member{t: c.t, node: uint32(id), pid: pid, partial: map[[2]uint32][]byte{}}
	conn, err := c.svc(id).Open(cpg.Client{Events: m.onEvent, Flow: m.onFlow, PID: pid, Label: fmt.Sprintf("test %d/%d", id, pid)})
	if err != nil {
		c.t.Fatalf("open on node %d: %v", id, err)
	}
	m.conn = conn
	c.t.Cleanup(conn.Close)
	return m
}

func (m *member) onFlow(level int32) {
	m.mu.Lock()
	m.flow = level
	m.flows = append(m.flows, level)
	m.mu.Unlock()
}

func (m *member) flowLevel() int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flow
}

// onEvent keeps every callback, joining partial deliveries as libcpg
// does into one delivery.
func (m *member) onEvent(b []byte) error {
	e, err := cpgwire.DecodeEvent(b)
	if err != nil {
		m.t.Errorf("undecodable callback: %v", err)
		return nil
	}
	e.Data = slices.Clone(e.Data)
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.ID == cpgwire.ResPartialDeliver {
		k := [2]uint32{e.NodeID, e.PID}
		if e.FragType == cpgwire.PartialFirst {
			m.partial[k] = nil
		}
		m.partial[k] = append(m.partial[k], e.Data...)
		if e.FragType != cpgwire.PartialLast {
			return nil
		}
		e = cpgwire.Event{ID: cpgwire.ResDeliverCallback, Group: e.Group, NodeID: e.NodeID, PID: e.PID,
			MsgLen: e.MsgLen, Data: m.partial[k]}
		delete(m.partial, k)
		if int(e.MsgLen) != len(e.Data) {
			m.t.Errorf("joined partial delivery of %d bytes, msglen %d", len(e.Data), e.MsgLen)
		}
	}
	m.events = append(m.events, e)
	return nil
}

func (m *member) request(msg []byte) cpgwire.Response {
	m.t.Helper()
	id := int32(msg[0])
	resp := m.conn.Request(context.Background(), msg)
	r, err := cpgwire.DecodeResponse(id, resp)
	if err != nil {
		m.t.Fatalf("response to %d: %v", id, err)
	}
	return r
}

func (m *member) status(msg []byte) cswire.Error { return m.request(msg).Error }

func (m *member) join(g string) {
	m.t.Helper()
	if err := m.status(cpgwire.EncodeJoin(cpgwire.Name(g), m.pid, 0)); err != cswire.OK {
		m.t.Fatalf("%d/%d join %q: %v", m.node, m.pid, g, err)
	}
}

func (m *member) mcast(data string) {
	m.conn.Request(context.Background(), cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, []byte(data)))
}

func (m *member) snapshot() []cpgwire.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// log spells the callbacks one per line: "deliver <node>/<pid> <data>",
// "confchg <group> m=<members> l=<left> j=<joined>", "totem <seq> <members>".
func (m *member) log() []string {
	var out []string
	for _, e := range m.snapshot() {
		out = append(out, spell(e))
	}
	return out
}

func spell(e cpgwire.Event) string {
	addrs := func(l []cpgwire.Address) string {
		var s []string
		for _, a := range l {
			if a.Reason != 0 {
				s = append(s, fmt.Sprintf("%d/%d:%d", a.NodeID, a.PID, a.Reason))
			} else {
				s = append(s, fmt.Sprintf("%d/%d", a.NodeID, a.PID))
			}
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	switch e.ID {
	case cpgwire.ResDeliverCallback:
		d := string(e.Data)
		if len(d) > 32 {
			d = fmt.Sprintf("<%d bytes>", len(d))
		}
		return fmt.Sprintf("deliver %d/%d %s", e.NodeID, e.PID, d)
	case cpgwire.ResConfChgCallback:
		return fmt.Sprintf("confchg %s m=%s l=%s j=%s", e.Group, addrs(e.Members), addrs(e.Left), addrs(e.Joined))
	case cpgwire.ResTotemConfChgCallback:
		return fmt.Sprintf("totem %d %v", e.RingSeq, e.TotemMembers)
	}
	return fmt.Sprintf("event %d", e.ID)
}

// waitLog waits until m's log has a line containing want.
func (m *member) waitLog(want string) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.ContainsFunc(m.log(), func(l string) bool { return strings.Contains(l, want) }) {
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out waiting for %d/%d to see %q; it saw:\n%s", m.node, m.pid, want, strings.Join(m.log(), "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// vslog is what m received, for vscheck: its deliveries of "node/pid #seq"
// messages and its configuration changes.
func (m *member) vslog() *vscheck.Log {
	l := &vscheck.Log{Name: fmt.Sprintf("%d/%d", m.node, m.pid), Proc: vscheck.Proc{Node: m.node, PID: m.pid}}
	for i, e := range m.snapshot() {
		switch e.ID {
		case cpgwire.ResDeliverCallback:
			var n, p uint32
			var seq uint64
			if _, err := fmt.Sscanf(string(e.Data), "%d/%d #%d", &n, &p, &seq); err != nil || n != e.NodeID || p != e.PID {
				continue // not a numbered message
			}
			l.Events = append(l.Events, vscheck.Event{Msg: &vscheck.Msg{From: vscheck.Proc{Node: n, PID: p}, Seq: seq}, Line: i + 1})
		case cpgwire.ResConfChgCallback:
			ev := vscheck.Event{ConfChg: spell(e), Line: i + 1}
			for _, a := range e.Members {
				ev.Members = append(ev.Members, vscheck.Proc{Node: a.NodeID, PID: a.PID})
			}
			l.Events = append(l.Events, ev)
		}
	}
	return l
}

// cpgOnly drops the totem callbacks (only members that asked get them).
func cpgOnly(l []string) []string {
	return slices.DeleteFunc(slices.Clone(l), func(s string) bool { return strings.HasPrefix(s, "totem ") })
}
