// Package cpg is corosync's closed process group service (corosync_cpg) as
// a corobus component: unmodified libcpg programs reach it through the IPC
// gateway, Go programs through package cpg's client, and both are members
// of the same groups with the same guarantees.
//
// Everything that changes a group — a join, a leave, a message, a process
// that dies — goes through the ordered multicast (bus/totem), so that every
// node applies it at the same point of one total order — but for the
// messages of a node alone in its ring, which are delivered at once, where
// the totem would have put them (alone). On every view
// change the nodes exchange their local processes (joinlists) over the same
// multicast and apply the result at the same point of every stream: the
// processes of nodes that left leave their groups with NODEDOWN, those of
// nodes that came join with NODEUP. docs/cpg.md has the whole story.
package cpg

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
)

// TotemService is the service name of CPG's traffic on the ordered
// multicast.
const TotemService = "cpg"

// ServiceID is corosync's CPG_SERVICE: the sync engine runs services in
// this order.
const ServiceID = cswire.ServiceCPG

// Options configure a Service.
type Options struct {
	Node     uint32
	Subjects bus.Subjects
	Logger   *slog.Logger
	// Window bounds this instance's multicasts in flight; default 1024.
	// Clients are flow-controlled from three quarters of it.
	Window int
	// WindowBytes bounds the bytes of those multicasts; default 2 MiB.
	// Clients are flow-controlled from three quarters of it too: 1024
	// messages of 64 KiB in flight (64 MiB) grew the gateway's and the
	// bus's heaps and cost more per message than they gained.
	WindowBytes int
	// Chunk is the most data one totem message carries; larger messages
	// go in chunks. Default 512 KiB.
	Chunk int
	// MaxEvent is the largest callback message a client takes (libcpg's
	// dispatch buffer, 1 MiB): a delivery that does not fit goes in
	// partial deliveries.
	MaxEvent int
}

// Service is one cpg component instance: the node's picture of every
// group, its local connections, and its part of the ordered multicast.
type Service struct {
	opts   Options
	node   uint32
	log    *slog.Logger
	nc     *nats.Conn // set by Start
	tc     *totem.Client
	prefix uint64 // of this instance's connection sources

	// sendMu orders every multicast of this instance, so that a joinlist
	// counts exactly the joins and leaves sent before it.
	sendMu  sync.Mutex
	sendBuf []byte
	// filtering and keysAsked (under sendMu): once filtering, this
	// instance's bus delivers it other nodes' multicasts only of groups
	// whose key (groupKey) is in keysAsked or in a set it asked for
	// before — keysAsked is never more than the bus has. A join asks for
	// its group's key before its procjoin is submitted (wantGroup);
	// trimKeys drops the keys of groups with no connection here.
	filtering bool
	keysAsked map[uint32]struct{}
	// The bytes of this instance's multicasts sent and delivered back
	// (totem messages' payloads): their difference is in flight.
	bytesSent, bytesBack atomic.Int64
	// inTotem counts this instance's totem messages submitted and not
	// yet through onDelivery: raised before the submit, lowered under mu
	// once its delivery is applied. Zero under sendMu and mu means every
	// multicast of this instance is applied (alone).
	inTotem atomic.Int64

	mu          sync.Mutex
	procs       procTable
	conns       map[uint64]*Conn
	byGroup     map[cpgwire.Name]map[*Conn]struct{}
	nextConn    uint64
	ring        totem.RingID // the ring of this node's stream
	members     []uint32
	trans       []uint32
	oldMembers  []uint32     // the members at the last activation
	syncRing    totem.RingID // the ring of the last activation
	syncing     bool         // from a view change (or resync) to its activation
	downPending bool         // the view change's downlist is still to apply
	ready       bool         // activated once: new connections are taken
	epoch       *epoch
	pending     []pendingOp // own joins and leaves multicast, not delivered
	asm         map[asmKey]*assembly
	engineSync  bool  // the node's sync engine runs a round
	fcLevel     int32 // the flow-control level shown to the clients
	activated   chan struct{}
	sends       chan func()
	evBuf       []byte // deliveries are built here, under mu

	stats stats
	// moved wakes Record: a counter may have changed.
	moved loader.Moved
}

// pendingOp is an own procjoin or procleave on its way through the order.
type pendingOp struct {
	join  bool
	pid   uint32
	group cpgwire.Name
}

type procKey struct {
	pid   uint32
	group cpgwire.Name
}

// epoch is one exchange of joinlists: the members of a view each send
// theirs; when the last one is delivered, every node applies them at that
// same point of its stream.
type epoch struct {
	ring   totem.RingID
	id     totem.MsgID // zero for a view change's, the resync's id otherwise
	expect []uint32
	lists  map[uint32][]procKey // by sender, kept up to date by its later joins and leaves
	order  []uint32             // senders in delivery order
}

func (e *epoch) complete() bool {
	for _, n := range e.expect {
		if _, ok := e.lists[n]; !ok {
			return false
		}
	}
	return true
}

type asmKey struct {
	node   uint32
	source uint64
}

// assembly is a message arriving in chunks.
type assembly struct {
	head cpgwire.Exec
	data []byte
}

// maxAssembly bounds the chunked messages held from one sender.
const maxAssembly = 64 << 20

// New makes a service; Start attaches it to the node's totem.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Window <= 0 {
		opts.Window = 1024
	}
	if opts.WindowBytes <= 0 {
		opts.WindowBytes = 2 << 20
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 512 << 10
	}
	opts.Chunk = min(opts.Chunk, totem.MaxPayload-cpgwire.ExecHeaderSize)
	if opts.MaxEvent <= 0 {
		opts.MaxEvent = cpgwire.IPCRequestSize
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Service{
		opts:      opts,
		node:      opts.Node,
		log:       opts.Logger,
		prefix:    binary.BigEndian.Uint64(b[:]) &^ (1<<32 - 1),
		procs:     newProcTable(),
		conns:     map[uint64]*Conn{},
		byGroup:   map[cpgwire.Name]map[*Conn]struct{}{},
		asm:       map[asmKey]*assembly{},
		activated: make(chan struct{}),
		sends:     make(chan func(), 64),
		moved:     loader.NewMoved(),
	}
}

// Start attaches the service to its node's totem over nc: it receives
// CPG's stream from now on and, when the node is already in a view, asks
// every member for its joinlist (a resync) — a new or restarted instance
// knows nothing of the groups until then, and takes no connection.
func (s *Service) Start(nc *nats.Conn) error {
	s.nc = nc
	tc, err := totem.NewClient(nc, s.opts.Subjects, s.node, totem.ClientOptions{
		Window: s.opts.Window, Service: TotemService, OnDeliver: s.onDelivery, OnListen: s.onListen,
		// One CPG instance per node receives CPG's stream: its own large
		// multicasts come back without their payload (docs/totem.md,
		// "What a large message costs"). Nothing of an instance that went
		// is needed by the next one before it has synchronized.
		KeepOwn: true,
	})
	if err != nil {
		return err
	}
	// Under mu: the first deliveries may come before NewClient returns.
	s.mu.Lock()
	s.tc = tc
	s.mu.Unlock()
	s.onListen()
	s.queueSend(s.trimKeys)
	return nil
}

// groupKey is a group's key on the ordered multicast: every whole
// multicast of the group is sent droppable with it
// (totem.Client.McastPartsDroppable), and a node's bus delivers another
// node's only while its instance wants the key. Two groups may share a
// key: a node then gets the other group's messages too, and deliver
// hands them to nobody. FNV-1a.
func groupKey(g cpgwire.Name) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(g); i++ {
		h ^= uint32(g[i])
		h *= 16777619
	}
	return h
}

// trimKeys tells the bus which groups' multicasts from other nodes this
// instance has a use for: those of the groups its connections are in
// (totem.Client.WantKeys). deliver hands a message to the group's
// connections of byGroup and nobody else, and a connection enters byGroup
// only through join, which asks for its group's key first (wantGroup): a
// message of another group would cross the bus and this process only to
// be dropped. Run by the sender goroutine at the start and after a
// group's last connection here went.
func (s *Service) trimKeys() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.tc == nil {
		return
	}
	s.mu.Lock()
	want := make(map[uint32]struct{}, len(s.byGroup))
	for g := range s.byGroup {
		want[groupKey(g)] = struct{}{}
	}
	s.mu.Unlock()
	if s.filtering && len(want) == len(s.keysAsked) {
		// The same set: under sendMu byGroup's keys grow only through
		// wantGroup, which adds to keysAsked first.
		return
	}
	// Set before the request: the bus may filter by it from the moment it
	// has it, whether or not its answer comes back, and either set it
	// ends with holds want.
	s.filtering, s.keysAsked = true, want
	if err := s.tc.WantKeys(sortedKeys(want), 2*time.Second); err != nil {
		s.log.Debug("cpg: telling the bus which groups' multicasts to deliver", "err", err)
	}
}

// wantGroup makes sure the bus delivers other nodes' multicasts of group
// g from now on: every message ordered after a procjoin submitted after
// it returns is delivered by the bus after it, so it comes. Called with
// sendMu held.
func (s *Service) wantGroup(g cpgwire.Name) error {
	if !s.filtering || s.tc == nil {
		return nil
	}
	k := groupKey(g)
	if _, ok := s.keysAsked[k]; ok {
		return nil
	}
	want := make(map[uint32]struct{}, len(s.keysAsked)+1)
	for x := range s.keysAsked {
		want[x] = struct{}{}
	}
	want[k] = struct{}{}
	if err := s.tc.WantKeys(sortedKeys(want), 2*time.Second); err != nil {
		return fmt.Errorf("cpg: asking the bus for group %s's multicasts: %w", g.Escaped(), err)
	}
	s.keysAsked = want
	return nil
}

func sortedKeys(m map[uint32]struct{}) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// onListen runs when the node's bus learns (again) that this instance
// listens: if the bus is in a view this stream has not seen begin, the
// groups are resynchronized in it.
func (s *Service) onListen() {
	st, err := totem.FetchStatus(s.nc, s.opts.Subjects, s.node, 2*time.Second)
	if err != nil || st.State != "operational" {
		return // the view's configuration change will come in the stream
	}
	s.mu.Lock()
	if s.ring.Seq >= st.Ring.Seq {
		s.mu.Unlock()
		return
	}
	s.log.Info("resynchronizing the groups in the current view", "ring", st.Ring, "members", st.Members)
	s.ring, s.members = st.Ring, slices.Clone(st.Members)
	if !s.ready {
		// Nothing is known: nothing can be down.
		s.oldMembers, s.trans = slices.Clone(st.Members), slices.Clone(st.Members)
	}
	s.mu.Unlock()
	s.queueSend(func() {
		s.sendMu.Lock()
		defer s.sendMu.Unlock()
		s.send(context.Background(), &cpgwire.Exec{Kind: cpgwire.ExecResync, Ring: st.Ring})
	})
}

// queueSend hands a multicast that must not wait in the delivery path to
// the sender goroutine (Run).
func (s *Service) queueSend(f func()) {
	select {
	case s.sends <- f:
	default:
		go func() { s.sends <- f }()
	}
}

// Stop detaches from the totem.
func (s *Service) Stop() {
	if s.tc != nil {
		_ = s.tc.Close()
	}
}

// send multicasts one frame, in chunks when its data does not fit one
// totem message. Called with sendMu held.
func (s *Service) send(ctx context.Context, e *cpgwire.Exec) error {
	data := e.Data
	if len(data) <= s.opts.Chunk {
		s.sendBuf = cpgwire.AppendExecHeader(s.sendBuf[:0], e)
		// A whole multicast is droppable, with its group's key: a node
		// none of whose connections is in the group hands it to nobody
		// (trimKeys). Joins, leaves, joinlists, libcpg's fragments and
		// chunked messages (whose assembly spans frames) go to every
		// node.
		return s.mcast(ctx, e.Kind, s.sendBuf, data, e.Kind == cpgwire.ExecMcast, e.Group)
	}
	first := *e
	first.Flags |= cpgwire.FlagMore
	s.sendBuf = cpgwire.AppendExecHeader(s.sendBuf[:0], &first)
	if err := s.mcast(ctx, e.Kind, s.sendBuf, data[:s.opts.Chunk], false, e.Group); err != nil {
		return err
	}
	for rest := data[s.opts.Chunk:]; len(rest) > 0; {
		n := min(s.opts.Chunk, len(rest))
		c := cpgwire.Exec{Kind: cpgwire.ExecChunk, Source: e.Source}
		if n < len(rest) {
			c.Flags = cpgwire.FlagMore
		}
		s.sendBuf = cpgwire.AppendExecHeader(s.sendBuf[:0], &c)
		// The rest of a message must follow its start even when the
		// caller gives up waiting: a receiver holds the start.
		if err := s.mcast(context.WithoutCancel(ctx), cpgwire.ExecChunk, s.sendBuf, rest[:n], false, e.Group); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// mcast submits a frame's header and data (copied once, into the submit
// frame); droppable: a node whose instance does not want group g's key
// does not get it (trimKeys).
func (s *Service) mcast(ctx context.Context, kind uint8, head, data []byte, droppable bool, g cpgwire.Name) error {
	if s.windowFull() {
		s.mu.Lock()
		s.updateFlowControl()
		s.mu.Unlock()
	}
	s.inTotem.Add(1)
	var err error
	if droppable {
		_, err = s.tc.McastPartsDroppable(ctx, TotemService, groupKey(g), head, data)
	} else {
		_, err = s.tc.McastParts(ctx, TotemService, head, data)
	}
	if err != nil {
		s.inTotem.Add(-1)
		return fmt.Errorf("cpg: multicasting: %w", err)
	}
	s.bytesSent.Add(int64(len(head) + len(data)))
	s.stats.tx[kind].Add(1)
	s.moved.Poke()
	return nil
}

// onDelivery takes CPG's stream, in the total order, from one goroutine.
func (s *Service) onDelivery(d totem.Delivery) {
	// Every delivery may move a counter (rx, deliveries, groups and
	// members with a view change).
	defer s.moved.Poke()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc := d.ConfChg; cc != nil {
		s.confChg(cc)
		return
	}
	m := d.Message
	if m.Skipped {
		// Another node's multicast (the one droppable kind) without its
		// payload: this instance had no connection in any group when its
		// bus delivered it, so deliver would have handed it to nobody.
		s.stats.rx[cpgwire.ExecMcast].Add(1)
		s.stats.skipped.Add(1)
		return
	}
	e, err := cpgwire.DecodeExec(m.Payload)
	if err != nil {
		s.log.Warn("undecodable cpg frame", "from", m.ID, "err", err)
		return
	}
	if e.Kind < uint8(len(s.stats.rx)) {
		s.stats.rx[e.Kind].Add(1)
	}
	sender := m.ID.Node
	if s.tc == nil {
		// Before Start has its client: nothing of this instance's yet.
	} else if sender == s.node && m.ID.Origin == s.tc.Origin() {
		s.bytesBack.Add(int64(len(m.Payload)))
		s.inTotem.Add(-1)
		defer s.afterOwn()
	}
	switch e.Kind {
	case cpgwire.ExecProcJoin, cpgwire.ExecProcLeave:
		s.ownDone(m.ID)
		if e.Kind == cpgwire.ExecProcJoin {
			s.procJoin(e.Group, sender, e.PID, e.Reason)
		} else {
			s.procLeave(e.Group, sender, e.PID, e.Reason)
		}
		if ep := s.epoch; ep != nil {
			if l, ok := ep.lists[sender]; ok {
				k := procKey{e.PID, e.Group}
				l = slices.DeleteFunc(l, func(x procKey) bool { return x == k })
				if e.Kind == cpgwire.ExecProcJoin {
					l = append(l, k)
				}
				ep.lists[sender] = l
			}
		}
	case cpgwire.ExecMcast, cpgwire.ExecPartial:
		if e.Flags&cpgwire.FlagMore != 0 {
			e.Data = slices.Clone(e.Data)
			s.asm[asmKey{sender, e.Source}] = &assembly{head: e, data: e.Data}
			return
		}
		s.deliver(sender, &e)
	case cpgwire.ExecChunk:
		k := asmKey{sender, e.Source}
		a := s.asm[k]
		if a == nil {
			return // its start was before this stream began
		}
		if len(a.data)+len(e.Data) > maxAssembly {
			s.log.Warn("dropping a chunked message larger than the limit", "from", sender, "limit", maxAssembly)
			delete(s.asm, k)
			return
		}
		a.data = append(a.data, e.Data...)
		if e.Flags&cpgwire.FlagMore != 0 {
			return
		}
		delete(s.asm, k)
		a.head.Data = a.data
		s.deliver(sender, &a.head)
	case cpgwire.ExecJoinList:
		ep := s.epoch
		if ep == nil || e.Ring != ep.ring || e.Epoch != ep.id || !slices.Contains(ep.expect, sender) {
			return // of an exchange that is over
		}
		if _, dup := ep.lists[sender]; dup {
			return
		}
		l := make([]procKey, len(e.Entries))
		for i, je := range e.Entries {
			l[i] = procKey{je.PID, je.Group}
		}
		ep.lists[sender] = l
		ep.order = append(ep.order, sender)
		s.log.Debug("joinlist", "from", sender, "ring", e.Ring, "epoch", e.Epoch, "entries", len(l))
		if ep.complete() {
			s.activate()
		}
	case cpgwire.ExecResync:
		if e.Ring != s.ring {
			return // a view change since: its own exchange runs
		}
		s.log.Info("groups resynchronize", "ring", e.Ring, "asked_by", sender)
		s.startEpoch(m.ID)
	}
}

// alone tells whether a multicast of a joined connection may be delivered
// here and now, without the totem: this node is the only member of its
// ring, the groups are synchronized in it, and every multicast this
// instance sent through the totem is delivered and applied. In a ring of
// one node this instance's stream is its own multicasts: delivering the
// next one at once puts it exactly where the totem would have, after all
// of them, and before any configuration change the totem delivers later
// (a node that joins meanwhile gets it in no view: it was sent in the
// view of one). Called with sendMu and mu held: no multicast of this
// instance is on its way into the totem, and no delivery is half
// applied.
func (s *Service) alone() bool {
	return s.tc != nil && s.ready && !s.syncing && !s.engineSync && s.epoch == nil &&
		len(s.members) == 1 && s.members[0] == s.node && s.inTotem.Load() == 0
}

// deliverAlone is a multicast delivered without the totem (alone): counted
// as sent and received, as the totem's would be. Called with sendMu and mu
// held.
func (s *Service) deliverAlone(e *cpgwire.Exec) {
	s.stats.tx[e.Kind].Add(1)
	s.stats.rx[e.Kind].Add(1)
	s.stats.alone.Add(1)
	s.deliver(s.node, e)
	s.moved.Poke()
}

// ownDone takes an own join or leave off the pending list once it is
// delivered.
func (s *Service) ownDone(id totem.MsgID) {
	if s.tc != nil && id.Node == s.node && id.Origin == s.tc.Origin() && len(s.pending) > 0 {
		s.pending = s.pending[1:]
	}
}

func (s *Service) confChg(cc *totem.ConfChg) {
	s.stats.viewChanges.Add(1)
	s.moved.Poke()
	if cc.Type == totem.Transitional {
		s.trans = slices.Clone(cc.Members)
		return
	}
	s.ring, s.members = cc.Ring, slices.Clone(cc.Members)
	s.downPending = true
	s.startEpoch(totem.MsgID{})
}

// startEpoch begins an exchange of joinlists in the current view.
func (s *Service) startEpoch(id totem.MsgID) {
	s.epoch = &epoch{ring: s.ring, id: id, expect: slices.Clone(s.members), lists: map[uint32][]procKey{}}
	if !s.syncing {
		s.syncing = true
		s.stats.syncs.Add(1)
		s.moved.Poke()
	}
	s.updateFlowControl()
	ring := s.ring
	s.queueSend(func() { s.sendJoinList(ring, id) })
}

// sendJoinList multicasts this node's processes for the exchange (ring,
// id), unless a newer one replaced it: its connections' processes in the
// picture, with the joins and leaves multicast before it — which every
// node delivers before the joinlist — applied.
func (s *Service) sendJoinList(ring totem.RingID, id totem.MsgID) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.epoch == nil || s.epoch.ring != ring || s.epoch.id != id {
		s.mu.Unlock()
		return
	}
	// This instance's own processes: a process of this node in the
	// picture but of no connection here belonged to an instance that is
	// gone (its join was still on its way when this one started).
	var mine []procKey
	for _, p := range s.procs.all() {
		if p.node != s.node {
			continue
		}
		for c := range s.byGroup[p.group] {
			if c.pid == p.pid {
				mine = append(mine, procKey{p.pid, p.group})
				break
			}
		}
	}
	for _, op := range s.pending {
		k := procKey{op.pid, op.group}
		mine = slices.DeleteFunc(mine, func(x procKey) bool { return x == k })
		if op.join {
			mine = append(mine, k)
		}
	}
	e := &cpgwire.Exec{Kind: cpgwire.ExecJoinList, Ring: ring, Epoch: id}
	for _, k := range mine {
		e.Entries = append(e.Entries, cpgwire.JoinEntry{PID: k.pid, Group: k.group})
	}
	s.mu.Unlock()
	if err := s.send(context.Background(), e); err != nil {
		s.log.Error("joinlist not sent", "ring", ring, "err", err)
	}
}

// activate applies an exchange, at the delivery of its last joinlist:
// corosync's cpg_sync_activate. The view's downlist first (NODEDOWN),
// then the processes of the joinlists this node does not know (NODEUP),
// then those it knows that their nodes no longer list (PROCDOWN).
func (s *Service) activate() {
	ep := s.epoch
	s.epoch = nil
	if s.downPending {
		s.downPending = false
		var down []uint32
		for _, n := range s.oldMembers {
			if !slices.Contains(s.trans, n) {
				down = append(down, n)
			}
		}
		if len(down) > 0 {
			s.log.Info("processes of nodes that left leave their groups", "nodes", down)
			left := map[cpgwire.Name][]cpgwire.Address{}
			for _, p := range s.procs.all() {
				if slices.Contains(down, p.node) {
					left[p.group] = append(left[p.group], p.addr(cpgwire.ReasonNodeDown))
				}
			}
			for _, g := range sortedGroups(left) {
				for _, a := range left[g] {
					s.procs.remove(g, a.NodeID, a.PID)
				}
				s.notify(g, nil, left[g])
			}
			for k := range s.asm {
				if slices.Contains(down, k.node) {
					delete(s.asm, k)
				}
			}
		}
	}
	// corosync walks the joinlists newest first. It skips its own, which
	// it knows first-hand; corobus applies every one, its own included,
	// so that a process of this node that no instance here has any more
	// leaves the same way on every node.
	joined := map[cpgwire.Name][]cpgwire.Address{}
	for i := len(ep.order) - 1; i >= 0; i-- {
		node := ep.order[i]
		l := ep.lists[node]
		for j := len(l) - 1; j >= 0; j-- {
			if s.procs.add(l[j].group, node, l[j].pid) {
				joined[l[j].group] = append(joined[l[j].group], cpgwire.Address{NodeID: node, PID: l[j].pid, Reason: cpgwire.ReasonNodeUp})
			}
		}
	}
	for _, g := range sortedGroups(joined) {
		s.notify(g, joined[g], nil)
	}
	for _, p := range s.procs.all() {
		if !slices.Contains(ep.lists[p.node], procKey{p.pid, p.group}) {
			s.procs.remove(p.group, p.node, p.pid)
			s.notify(p.group, nil, []cpgwire.Address{p.addr(cpgwire.ReasonProcDown)})
		}
	}
	s.oldMembers = slices.Clone(s.members)
	s.syncRing = ep.ring
	s.syncing = false
	s.ready = true
	s.updateFlowControl()
	ev := cpgwire.EncodeTotemConfChg(s.syncRing.Rep, s.syncRing.Seq, s.members)
	for _, c := range s.conns {
		if !c.finalized {
			s.event(c, ev)
		}
	}
	s.publishRing()
	close(s.activated)
	s.activated = make(chan struct{})
	s.log.Debug("groups synchronized", "ring", ep.ring, "epoch", ep.id, "groups", len(s.procs.groups))
}

// procJoin is corosync's do_proc_join for a delivered procjoin.
func (s *Service) procJoin(g cpgwire.Name, node, pid, reason uint32) {
	if !s.procs.add(g, node, pid) {
		return
	}
	s.notify(g, []cpgwire.Address{{NodeID: node, PID: pid, Reason: reason}}, nil)
}

// procLeave is corosync's do_proc_leave for a delivered procleave. A
// leave of a process the picture does not have (it left already, as a
// zombie of a sync) changes nothing and tells no one.
func (s *Service) procLeave(g cpgwire.Name, node, pid, reason uint32) {
	if !s.procs.has(g, node, pid) {
		return
	}
	left := []cpgwire.Address{{NodeID: node, PID: pid, Reason: reason}}
	s.procs.remove(g, node, pid)
	s.notify(g, nil, left)
}

// notify is corosync's notify_lib_joinlist: one configuration change of
// group g, to its local members, after the picture changed.
func (s *Service) notify(g cpgwire.Name, joined, left []cpgwire.Address) {
	members := s.procs.members(g)
	s.stats.confchgs.Add(1)
	s.moved.Poke()
	for _, j := range joined {
		if j.NodeID != s.node {
			continue
		}
		for c := range s.byGroup[g] {
			if c.pid == j.PID && c.state == stateJoinStarted {
				c.state = stateJoinCompleted
			}
		}
	}
	ev := cpgwire.EncodeConfChg(g, members, left, joined)
	for c := range s.byGroup[g] {
		if (c.state == stateJoinCompleted || c.state == stateLeaveStarted) && !c.finalized {
			s.event(c, ev)
			c.transitions++
		}
	}
	for _, l := range left {
		if l.NodeID != s.node || l.Reason != cpgwire.ReasonLeave {
			continue
		}
		// The leave is through. As in corosync 3.1.7 the connection
		// stays "leaving": it keeps the group's callbacks and cannot join
		// again (its reset, meant in exec/cpg.c, never runs).
		for c := range s.byGroup[g] {
			if c.pid == l.PID && c.state == stateLeaveStarted {
				c.leaveDone = true
			}
		}
	}
	for _, c := range s.conns {
		if c.flags&cpgwire.ModelV1DeliverInitialTotemConf != 0 && !c.initialTotemConfSent && !c.finalized {
			c.initialTotemConfSent = true
			s.event(c, cpgwire.EncodeTotemConfChg(s.syncRing.Rep, s.syncRing.Seq, s.oldMembers))
		}
	}
	s.publishConfChg(g, members, left, joined)
}

// deliver hands a message to the group's local members, from a node the
// picture knows in the group (corosync's rule: a node it does not know
// has not joined in this node's view).
func (s *Service) deliver(sender uint32, e *cpgwire.Exec) {
	conns := s.byGroup[e.Group]
	if len(conns) == 0 {
		return
	}
	if !s.procs.nodeIn(e.Group, sender) {
		s.stats.unknownSender.Add(1)
		s.moved.Poke()
		s.log.Warn("message from a node not in the group; not delivered", "group", e.Group.Escaped(), "node", sender, "pid", e.PID)
		return
	}
	var evs [][]byte
	if e.Kind == cpgwire.ExecPartial {
		evs = s.partialEvents(e.Group, e.MsgLen, sender, e.PID, e.FragType, e.Data)
	} else if cpgwire.DeliverHeaderSize+len(e.Data) <= s.opts.MaxEvent {
		// One buffer for every delivery: a client's Events copies what it
		// keeps (the gateway's queue, the bus's write buffer).
		s.evBuf = cpgwire.AppendDeliver(s.evBuf[:0], e.Group, sender, e.PID, e.Data)
		evs = [][]byte{s.evBuf}
	} else {
		// Too large for one callback: libcpg joins partial deliveries.
		evs = s.partialEvents(e.Group, uint32(len(e.Data)), sender, e.PID, 0, e.Data)
	}
	for c := range conns {
		if (c.state == stateJoinCompleted || c.state == stateLeaveStarted) && !c.finalized {
			for _, ev := range evs {
				s.event(c, ev)
			}
			s.stats.delivered.Add(1)
		}
	}
}

// partialEvents cuts data into partial deliveries that fit a callback:
// a libcpg fragment of type typ (usually one callback, as corosync sends
// it), or, with typ 0, a whole message too large for a deliver callback
// (libcpg joins the pieces).
func (s *Service) partialEvents(g cpgwire.Name, msgLen, node, pid, typ uint32, data []byte) [][]byte {
	room := s.opts.MaxEvent - cpgwire.PartialDeliverHeaderSize
	if typ != 0 && len(data) <= room {
		return [][]byte{cpgwire.AppendPartialDeliver(nil, g, msgLen, node, pid, typ, data)}
	}
	first, last := typ == 0 || typ == cpgwire.PartialFirst, typ == 0 || typ == cpgwire.PartialLast
	var out [][]byte
	for off := 0; off < len(data); {
		n := min(room, len(data)-off)
		t := cpgwire.PartialContinued
		if off == 0 && first {
			t = cpgwire.PartialFirst
		} else if off+n == len(data) && last {
			t = cpgwire.PartialLast
		}
		out = append(out, cpgwire.AppendPartialDeliver(nil, g, msgLen, node, pid, t, data[off:off+n]))
		off += n
	}
	return out
}

// event sends a callback to a connection.
func (s *Service) event(c *Conn, ev []byte) {
	if err := c.client.Events(ev); err != nil {
		s.stats.eventErrors.Add(1)
		s.moved.Poke()
		s.log.Debug("cpg callback not sent", "conn", c.client.Label, "err", err)
	}
}

// updateFlowControl shows the clients whether to hold their multicasts:
// while the groups synchronize (or the node's sync engine runs) and while
// this instance's window is three quarters full, as corosync holds CPG's
// clients while its totem queue is full or a sync runs. Called with mu
// held.
func (s *Service) updateFlowControl() {
	level := int32(0)
	if s.syncing || s.engineSync || s.windowFull() {
		level = flowAsync
	}
	if level == s.fcLevel {
		return
	}
	if level != 0 {
		s.stats.flowControl.Add(1)
		s.moved.Poke()
	}
	s.fcLevel = level
	for _, c := range s.conns {
		c.client.Flow(level)
	}
}

// afterOwn lowers the flow control once the window drained to a quarter.
// Called with mu held, after a delivery.
func (s *Service) afterOwn() {
	if s.fcLevel != 0 && !s.syncing && !s.engineSync && s.tc.InFlight() <= s.opts.Window/4 &&
		s.bytesSent.Load()-s.bytesBack.Load() <= int64(s.opts.WindowBytes/4) {
		s.updateFlowControl()
	}
}

// windowFull tells whether this instance's multicasts in flight reached
// three quarters of its window, in messages or in bytes.
func (s *Service) windowFull() bool {
	return s.tc != nil && (s.tc.InFlight() >= s.opts.Window*3/4 ||
		s.bytesSent.Load()-s.bytesBack.Load() >= int64(s.opts.WindowBytes*3/4))
}

// flowAsync is libqb's QB_IPCS_RATE_OFF_2: only multicasts wait.
const flowAsync = 2

// setEngineSync follows the node's sync engine.
func (s *Service) setEngineSync(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.engineSync != on {
		s.engineSync = on
		s.updateFlowControl()
	}
}

// waitSynced waits up to d until this instance has activated ring (or a
// newer one): the sync engine's "process" for CPG.
func (s *Service) waitSynced(ring totem.RingID, d time.Duration) bool {
	deadline := time.After(d)
	for {
		s.mu.Lock()
		done := !s.syncing && s.ready && s.syncRing.Seq >= ring.Seq
		ch := s.activated
		s.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// Ready reports whether the instance has synchronized the groups once.
func (s *Service) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// ErrNotReady refuses connections until the instance knows the groups.
var ErrNotReady = fmt.Errorf("cpg has not synchronized the groups yet: %w", cswire.ErrTryAgain)

// stats are the counters of runtime.services.cpg.*.
type stats struct {
	tx, rx        [8]atomic.Uint64 // by frame kind
	delivered     atomic.Uint64
	confchgs      atomic.Uint64
	syncs         atomic.Uint64
	viewChanges   atomic.Uint64
	flowControl   atomic.Uint64
	unknownSender atomic.Uint64
	eventErrors   atomic.Uint64
	alone         atomic.Uint64 // multicasts delivered without the totem (alone)
	skipped       atomic.Uint64 // other nodes' multicasts received without payload (skipIfUnused)
}
