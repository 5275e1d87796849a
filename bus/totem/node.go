package totem

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/beat"
)

// ErrTryAgain is Mcast's answer when this node already has Config.Window
// of its own messages in flight: corosync's CS_ERR_TRY_AGAIN.
var ErrTryAgain = errors.New("totem: too many messages in flight; try again")

// ErrTooLarge rejects a payload that would not fit a NATS message.
var ErrTooLarge = errors.New("totem: payload too large")

// MaxPayload is the largest Mcast payload: the NATS default max_payload
// (1 MiB) less room for the frame and the fetch reply's framing.
const MaxPayload = 1<<20 - 4096

// Callbacks receive what the node delivers, in one order: messages and
// configuration changes interleaved exactly as every member of a ring sees
// them. They run with the node's lock held, one at a time: they must not
// call the Node's methods (hand off to another goroutine for that) and
// should return quickly.
type Callbacks struct {
	Deliver func(m *Message)
	ConfChg func(c ConfChg)
	// Member reports membership events for runtime.members.<id>.*.
	Member func(ev MemberEvent)
	// OlderConfig, called at most once, reports that this node's
	// totem.config_version is older than a member's in the node's first
	// regular configuration with another member (Node.checkConfigVersion):
	// corosync stops there. It runs under the node's lock: hand off.
	OlderConfig func(OlderConfig)
}

// OlderConfig is this node's totem.config_version against the highest of
// the other members' when the node first met them.
type OlderConfig struct {
	Mine    uint64 `json:"mine"`
	Highest uint64 `json:"highest"`
	// From is the lowest member id whose version is Highest.
	From uint32 `json:"from"`
	Ring RingID `json:"ring"`
}

// MemberEvent is a node joining or leaving this node's view: what
// runtime.members.<id>.{ip,join_count,status} records.
type MemberEvent struct {
	Node      uint32 `json:"node"`
	Addr      string `json:"ip,omitempty"`
	Status    string `json:"status"` // "joined" or "left"
	JoinCount uint64 `json:"join_count"`
	// ConfigVersion is the node's totem.config_version, from its
	// heartbeats.
	ConfigVersion uint64 `json:"config_version"`
	Ring          RingID `json:"ring"`
	// VersionOnly marks a member's new ConfigVersion, nothing else
	// changed (it reloaded a file with another totem.config_version, or
	// a client set the key): only runtime.members.<id>.config_version
	// is to be written, as corosync's cmap does on its
	// NEW_CONFIG_VERSION message.
	VersionOnly bool `json:"version_only,omitempty"`
}

// Status is a node's totem state, served on Subjects.TotemStatus.
type Status struct {
	Node      uint32   `json:"node"`
	State     string   `json:"state"`
	Ring      RingID   `json:"ring"`
	Members   []uint32 `json:"members"`
	Reachable []uint32 `json:"reachable"`
	Sequencer uint32   `json:"sequencer"`
	Delivered uint64   `json:"delivered"`
	Ordered   uint64   `json:"ordered"`
	MaxSeq    uint64   `json:"max_seq"`
	Pending   int      `json:"pending"`
	Views     uint64   `json:"views"`
	SRP       SRPStats `json:"srp"`
	// Protocol is the totem protocol version this node speaks
	// (ProtocolVersion).
	Protocol uint32 `json:"protocol"`
	// Refused are the nodes heard within totem.token whose heartbeats say
	// another protocol version (ProtocolVersion): never reachable, never
	// in a ring with this node.
	Refused []RefusedPeer `json:"refused,omitempty"`
}

// RefusedPeer is a node refused for its protocol version, and that version
// (0: a build before the version was carried).
type RefusedPeer struct {
	Node     uint32 `json:"node"`
	Protocol uint32 `json:"protocol"`
}

// SRPStats are the counters of this node's totem that mean what
// corosync's stats.srp.* of the same names mean (cmap's stats map,
// docs/objdb.md); corosync's others have no counterpart here (no token).
type SRPStats struct {
	// McastTx: own messages multicast, each once per ring it is sent in;
	// McastRetx: own messages sent again in the same ring because the
	// sequencer had not ordered them (the frame was lost).
	McastTx   uint64 `json:"mcast_tx"`
	McastRetx uint64 `json:"mcast_retx"`
	// McastRx: messages received, this node's own included (taken in
	// when sent, as corosync receives its own multicast).
	McastRx uint64 `json:"mcast_rx"`
	// OperationalEntered: rings installed (Views); GatherEntered: view
	// changes begun (the ring frozen); RecoveryEntered: commits taken
	// (recovery of the old rings begun).
	OperationalEntered uint64 `json:"operational_entered"`
	GatherEntered      uint64 `json:"gather_entered"`
	RecoveryEntered    uint64 `json:"recovery_entered"`
}

const (
	stOperational = "operational"
	stGather      = "gather"
	stRecovery    = "recovery"
)

// peer is what the failure detector knows of another node.
type peer struct {
	at time.Time
	hb Heartbeat // never changed once stored: alive hands out pointers to it
	// raw is the heartbeat as it came, its key in Node.hbRaw.
	raw string
}

// refusedPeer is a node whose heartbeat says another protocol version
// than this node's (Heartbeat.Proto), as Node.refused keeps it: when it
// was last heard and the bytes of its latest heartbeat (its key in
// Node.hbRaw). As a key of Node.refusedLogged only node and proto are set.
type refusedPeer struct {
	node  uint32
	proto uint32
	at    time.Time
	raw   string
}

// own is one of this node's messages, kept until this node delivers it
// (retransmitted if unordered, resubmitted in the next ring if the old one
// ended without it).
type own struct {
	id      MsgID
	service string
	payload []byte
	ring    RingID // the ring it was last sent in
	prev    uint64 // the origin's previous message sent in that ring
	sentAt  time.Time
	ordered bool
	done    bool
	// kept: the origin keeps the payload (a Client's submit with
	// submitKept), so its delivery here may go without it (KeptHeader).
	kept bool
	// droppable: other nodes may deliver it without its payload, or not
	// at all where nobody wants its key (submitDroppable).
	droppable bool
	key       uint32
}

type proposal struct {
	id      PropID
	members []uint32
	at      time.Time
	acks    map[uint32]*MembMsg
}

// Node is one node's totem. Create it with New and run it with Run.
type Node struct {
	cfg Config
	nc  *nats.Conn
	log *slog.Logger
	cb  Callbacks
	inc uint64
	// origin is the in-process sender's origin id: random per
	// incarnation, so that a restarted node never reuses a message id.
	origin uint32

	subjData, subjOrder, subjHB, subjMemb, subjConf string
	// subjAck receives the acks of this node's proposals (the
	// proposal's reply subject).
	subjAck     string
	deliverSubj map[string]string
	// listeners are the services whose TotemDeliver subject also carries
	// the configuration changes (TotemListen), by service, with their
	// subjects.
	listeners map[string]string
	// listenOrigins are, by service, the origins of the clients that named
	// it (0 for a request that gave none), each with whether it skips
	// droppable payloads and the connection it named it on. A service
	// named by exactly one origin is delivered to that origin's kept
	// messages without their payload; a service whose every origin skips
	// gets other nodes' droppable messages without theirs. A client that
	// closes takes its origin out (a leave request); one that dies without
	// it is taken out when its server says its connection closed
	// (bus.DisconnectEvents): until then its service goes whole (the safe
	// side), unless it had said it skips.
	listenOrigins map[string]map[uint32]listener
	// keptHdr and skippedHdr mark a deliver frame sent without its
	// payload (KeptHeader, SkippedHeader): made once, read only.
	keptHdr, skippedHdr nats.Header

	inflight atomic.Int64 // own messages submitted and not delivered

	hbMu  sync.Mutex
	peers map[uint32]*peer
	// hbRaw finds the peer whose latest heartbeat is byte for byte the
	// one just received: most heartbeats repeat the sender's previous one
	// (a ring at rest, a node gathering whose reachable set holds), and
	// such a heartbeat only says the sender is alive, so it is not
	// decoded again (at 32 nodes, the decoding of 31 peers' heartbeats
	// was 6-7 % of a formation's CPU).
	hbRaw map[string]uint32
	// refused are the nodes whose latest heartbeat says another
	// ProtocolVersion, by id: they are not peers (never reachable, so
	// never in a ring with this node). Their heartbeat's bytes are in
	// hbRaw too (no peer under that id), so that a refused node's
	// repeated heartbeat is not decoded again either. A node is in peers
	// or here, never both.
	refused map[uint32]*refusedPeer
	// refusedLogged: each node and version this node has logged refusing,
	// so that the error is logged once, not at every heartbeat.
	refusedLogged map[refusedPeer]struct{}
	// proto is the version this node's heartbeats carry: ProtocolVersion
	// (Config.announce in tests).
	proto uint32

	// timing is what the node runs of totem.token, join and consensus and
	// the heartbeat periods derived from them: read everywhere, replaced
	// whole by SetTimings. fixedHB and fixedRest are Config's explicit
	// heartbeat periods (zero: derived from the token, as by default).
	timing             atomic.Pointer[liveTimings]
	fixedHB, fixedRest time.Duration

	// gathering tells Run that the node left the operational state, so
	// that it ticks at the join's resolution again.
	gathering chan struct{}
	// news tells Run that a heartbeat says something the membership acts
	// on (a node heard again or new, another incarnation, ring, state,
	// members or reachable set): a ring at rest sleeps until its next
	// heartbeat or the first peer's expiry, so news must wake it.
	news chan struct{}

	mu        sync.Mutex
	state     string
	ring      RingID
	members   []uint32
	incs      map[uint32]uint64
	installed time.Time
	views     uint64
	srp       SRPStats
	maxSeq    uint64
	cur       *ringLog // current ring; frozen old ring while gathering
	prev      *ringLog // the ring before, for members still recovering

	// The sequencer: the ring's representative when the ring is
	// installed, then whichever node it hands the ordering to (seqr,
	// from position seqFrom, the ring's seqEpoch-th handoff; "Sequencer
	// handoff" in docs/totem.md). seqReady: this node is seqr and knows
	// every position below seqFrom, so it orders.
	seqr     uint32
	seqEpoch uint32
	seqFrom  uint64
	seqReady bool
	// runNode and runLen: the node whose messages the sequencer has been
	// ordering in a row, and how many (Config.HandoffRun).
	runNode uint32
	runLen  int
	// seqIDs are the ordered ids of the current log (every node keeps
	// them, for whichever becomes the sequencer, and to drop a late
	// retransmission of an ordered message).
	seqIDs map[MsgID]uint64
	// seqOld keeps trimmed ids for another Consensus period: a late
	// retransmission of a message every member delivered must not be
	// ordered twice.
	seqOld, seqOlder map[MsgID]struct{}
	seqOldAt         time.Time
	// seqLast and seqHeld keep each origin's messages in the order it sent
	// them (a retransmitted frame must not overtake a later one): on the
	// sequencer, by the order it gave; delivLast, on every node, by its
	// deliveries, from which a node taking over computes seqLast.
	seqLast   map[originKey]uint64
	seqHeld   map[originKey]map[uint64]*dataFrame
	delivLast map[originKey]uint64
	// lastSent is, per origin of this node, the last message sent in the
	// current ring (the next one's prev).
	lastSent map[uint32]uint64
	// prevOrphans are the orphans delivered at the last view change,
	// kept to serve the transitional members still fetching them.
	prevOrphans map[MsgID]*entry
	batch       []MsgID
	batchFirst  uint64

	unordered   map[MsgID]*entry  // payloads whose order has not arrived
	waitingData map[MsgID]uint64  // orders whose payload has not arrived
	future      []*nats.Msg       // frames of a ring not installed yet
	knownOrder  uint64            // highest position the sequencer says it ordered
	joinCount   map[uint32]uint64 // per node, for runtime.members.<id>.join_count
	addrs       map[uint32]string
	versions    map[uint32]uint64 // each node's totem.config_version, from its heartbeats
	// metOthers: the node has installed a regular configuration with
	// another member, and compared configuration versions there
	// (corosync's cmap_first_sync, cleared).
	metOthers bool
	version   uint64 // this node's totem.config_version, as it runs now (SetConfigVersion)

	localSeq   uint64
	pending    []*own
	pendingIdx map[MsgID]*own

	aliveSet   []uint32
	aliveSince time.Time
	started    time.Time // Run began: bounds the wait for a first view
	propN      uint64
	myProp     *proposal
	acked      PropID
	ackedAt    time.Time
	commit     *MembMsg
	recToken   int
	repairing  bool
	lastDeliv  uint64
	lastHB     time.Time
	hearsNews  bool // the reachable set changed since the last heartbeat
	lastOrdSub *nats.Subscription
	dataSub    *nats.Subscription
	scratch    []byte
	idScratch  []MsgID
	// Scratch of alive and viewable, reused at every tick.
	aliveBuf []uint32
	hbsBuf   map[uint32]*Heartbeat
	hearBuf  []bool
	takenBuf []int
}

// New creates a node on nc, a connection to this node's bus. Give it its
// own connection (bus.Server.Connect with nats.NoEcho() is best: the node
// handles its own messages without the echo).
func New(nc *nats.Conn, cfg Config, cb Callbacks) (*Node, error) {
	fixedHB, fixedRest := cfg.Heartbeat, cfg.RestHeartbeat
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("totem: incarnation: %w", err)
	}
	s := cfg.Subjects
	n := &Node{
		cfg:           cfg,
		fixedHB:       fixedHB,
		fixedRest:     fixedRest,
		nc:            nc,
		log:           cfg.Logger,
		cb:            cb,
		inc:           binary.BigEndian.Uint64(b[:]) | 1,
		subjData:      s.TotemData(),
		subjOrder:     s.TotemOrder(),
		subjHB:        s.TotemHeartbeat(),
		subjMemb:      s.TotemMemb(),
		subjAck:       s.TotemAck(cfg.NodeID),
		subjConf:      s.TotemDeliverConfChg(cfg.NodeID),
		deliverSubj:   map[string]string{},
		listeners:     map[string]string{},
		listenOrigins: map[string]map[uint32]listener{},
		keptHdr:       nats.Header{KeptHeader: []string{"1"}},
		skippedHdr:    nats.Header{SkippedHeader: []string{"1"}},
		peers:         map[uint32]*peer{},
		hbRaw:         map[string]uint32{},
		refused:       map[uint32]*refusedPeer{},
		refusedLogged: map[refusedPeer]struct{}{},
		proto:         ProtocolVersion,
		state:         stGather,
		// A node starts by gathering, as corosync's does (and counts).
		srp:         SRPStats{GatherEntered: 1},
		gathering:   make(chan struct{}, 1),
		news:        make(chan struct{}, 1),
		incs:        map[uint32]uint64{},
		unordered:   map[MsgID]*entry{},
		waitingData: map[MsgID]uint64{},
		joinCount:   map[uint32]uint64{},
		addrs:       map[uint32]string{cfg.NodeID: cfg.Addr},
		versions:    map[uint32]uint64{cfg.NodeID: cfg.ConfigVersion},
		version:     cfg.ConfigVersion,
		pendingIdx:  map[MsgID]*own{},
		seqIDs:      map[MsgID]uint64{},
		seqOld:      map[MsgID]struct{}{},
		seqOlder:    map[MsgID]struct{}{},
		seqLast:     map[originKey]uint64{},
		seqHeld:     map[originKey]map[uint64]*dataFrame{},
		delivLast:   map[originKey]uint64{},
		lastSent:    map[uint32]uint64{},
		prevOrphans: map[MsgID]*entry{},
		origin:      binary.BigEndian.Uint32(b[:4]) | 1,
	}
	if cfg.announce != nil {
		n.proto = *cfg.announce
	}
	n.timing.Store(&liveTimings{
		Timings:   Timings{Token: cfg.Token, Join: cfg.Join, Consensus: cfg.Consensus},
		Heartbeat: cfg.Heartbeat, RestHeartbeat: cfg.RestHeartbeat,
	})
	n.cur = newRingLog(RingID{}, nil)
	seq, err := n.loadSeq()
	if err != nil {
		return nil, err
	}
	n.maxSeq = seq
	return n, nil
}

// liveTimings are the timings a node runs, with the heartbeat periods
// derived from them.
type liveTimings struct {
	Timings
	Heartbeat, RestHeartbeat time.Duration
}

// tm is what the node runs now.
func (n *Node) tm() *liveTimings { return n.timing.Load() }

// Timings is what the node runs of totem.token, join and consensus.
func (n *Node) Timings() Timings { return n.tm().Timings }

// expiry is how long peer p may stay silent before it is gone: this
// node's totem.token, or p's own if longer (a peer whose token was raised
// beats more slowly; Heartbeat.Token).
func (n *Node) expiry(p *peer) time.Duration {
	return max(n.tm().Token, time.Duration(p.hb.Token)*time.Millisecond)
}

// SetTimings changes totem.token, join and consensus while the node runs,
// as corosync applies a changed totem.token (a cmap write, a reload) at
// once. The heartbeat periods follow the token unless Config gave them.
// A heartbeat goes out at once, carrying the new token, so that peers
// wait for this node's slower beats before the first of them is due. A
// combination New would refuse is refused, and the node keeps what it
// runs.
func (n *Node) SetTimings(t Timings) error {
	c := n.cfg
	c.Token, c.Join, c.Consensus = t.Token, t.Join, t.Consensus
	c.Heartbeat, c.RestHeartbeat = n.fixedHB, n.fixedRest
	if err := c.Validate(); err != nil {
		return err
	}
	next := &liveTimings{
		Timings:   Timings{Token: c.Token, Join: c.Join, Consensus: c.Consensus},
		Heartbeat: c.Heartbeat, RestHeartbeat: c.RestHeartbeat,
	}
	n.mu.Lock()
	prev := n.tm()
	if *prev == *next {
		n.mu.Unlock()
		return nil
	}
	n.timing.Store(next)
	n.sendHeartbeat(time.Now())
	n.mu.Unlock()
	n.log.Info("totem timings changed", "token", next.Token, "join", next.Join, "consensus", next.Consensus,
		"was_token", prev.Token, "was_join", prev.Join, "was_consensus", prev.Consensus)
	select { // Run's periods follow
	case n.news <- struct{}{}:
	default:
	}
	return nil
}

// SetConfigVersion changes this node's totem.config_version while it runs
// (a reload, a client's write of the key): its heartbeats carry the new
// one at once, and every member records it as
// runtime.members.<id>.config_version (a MemberEvent with VersionOnly), as
// corosync's cmap tells every node of a new version. Nobody stops: corosync
// compares versions only at a node's first view with others.
func (n *Node) SetConfigVersion(v uint64) {
	n.mu.Lock()
	prev := n.version
	if v == prev {
		n.mu.Unlock()
		return
	}
	n.version = v
	n.versions[n.cfg.NodeID] = v
	if slices.Contains(n.members, n.cfg.NodeID) {
		n.versionEvent(n.cfg.NodeID)
	}
	n.sendHeartbeat(time.Now())
	n.mu.Unlock()
	n.log.Info("totem.config_version changed", "config_version", v, "was", prev)
}

// ID is this node's id.
func (n *Node) ID() uint32 { return n.cfg.NodeID }

func (n *Node) seqFile() string {
	if n.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(n.cfg.StateDir, "ringid_"+strconv.FormatUint(uint64(n.cfg.NodeID), 10))
}

// loadSeq reads the highest ring sequence a previous run of this node saw,
// so that ring ids keep growing across restarts. The file is corosync's:
// state_dir/ringid_<nodeid> holding the sequence as 8 bytes in the host's
// (little-endian) order, so corobus and corosync can take turns on one
// state directory. Like corosync, a file that does not hold 8 bytes
// starts the sequence at 0; corobus's first releases wrote decimal text,
// which is still read.
func (n *Node) loadSeq() (uint64, error) {
	p := n.seqFile()
	if p == "" {
		return 0, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("totem: reading %s: %w", p, err)
	}
	if len(b) == 8 {
		return binary.LittleEndian.Uint64(b), nil
	}
	if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
		return v, nil
	}
	n.log.Warn("unreadable ring sequence file; starting from 0", "file", p, "bytes", len(b))
	return 0, nil
}

func (n *Node) saveSeq(seq uint64) {
	p := n.seqFile()
	if p == "" {
		return
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, binary.LittleEndian.AppendUint64(nil, seq), 0o600); err != nil {
		n.log.Warn("cannot persist the ring sequence", "file", p, "err", err)
		return
	}
	if err := os.Rename(tmp, p); err != nil {
		n.log.Warn("cannot persist the ring sequence", "file", p, "err", err)
	}
}

// Run subscribes, then runs the failure detector and the protocol until
// ctx ends.
func (n *Node) Run(ctx context.Context) error {
	s := n.cfg.Subjects
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	add := func(subj string, h nats.MsgHandler) (*nats.Subscription, error) {
		sub, err := n.nc.Subscribe(subj, h)
		if err != nil {
			return nil, fmt.Errorf("totem: subscribing to %s: %w", subj, err)
		}
		// Ordering must not lose messages to the slow-consumer limit:
		// back-pressure comes from the senders' windows instead.
		_ = sub.SetPendingLimits(-1, -1)
		subs = append(subs, sub)
		return sub, nil
	}
	var err error
	if n.dataSub, err = add(n.subjData, n.onData); err != nil {
		return err
	}
	if n.lastOrdSub, err = add(n.subjOrder, n.onOrder); err != nil {
		return err
	}
	for subj, h := range map[string]nats.MsgHandler{
		n.subjHB:                        n.onHeartbeat,
		n.subjMemb:                      n.onMemb,
		n.subjAck:                       n.onMemb,
		s.TotemFetch(n.cfg.NodeID):      n.onFetch,
		s.TotemMcast(n.cfg.NodeID):      n.onSubmit,
		s.TotemStatus(n.cfg.NodeID):     n.onStatus,
		s.TotemStatsClear(n.cfg.NodeID): n.onStatsClear,
		s.TotemTimings(n.cfg.NodeID):    n.onTimings,
	} {
		if _, err := add(subj, h); err != nil {
			return err
		}
	}
	// Listen requests and disconnect events share one channel, taken by
	// one goroutine: they come in the order the server sent them on the
	// node's connection, so a client's last listen request is taken
	// before the event of its connection's end (its server reads what the
	// client sent before it notices the close). Two handlers would race:
	// the event first would leave the dead client registered for good.
	listen := make(chan *nats.Msg, listenQueue)
	for _, subj := range []string{s.TotemListen(n.cfg.NodeID), bus.DisconnectEvents} {
		sub, err := n.nc.ChanSubscribe(subj, listen)
		if err != nil {
			return fmt.Errorf("totem: subscribing to %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := n.nc.Flush(); err != nil {
		return fmt.Errorf("totem: flushing subscriptions: %w", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go n.takeListens(listen, stop)
	n.log.Info("totem started", "node", n.cfg.NodeID, "token", n.tm().Token, "join", n.tm().Join, "consensus", n.tm().Consensus, "max_seq", n.maxSeq)
	// A restarted bus has forgotten which services listen: ask, now and a
	// few times more for clients that reconnect later.
	ask := s.TotemListenAsk(n.cfg.NodeID)
	_ = n.nc.Publish(ask, nil)
	go func() {
		for _, d := range []time.Duration{time.Second, 2 * time.Second, 7 * time.Second} {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
				_ = n.nc.Publish(ask, nil)
			}
		}
	}()
	n.mu.Lock()
	n.aliveSince = time.Now()
	n.started = n.aliveSince
	n.aliveSet = []uint32{n.cfg.NodeID} // heard nobody yet (not "everyone")
	n.sendHeartbeat(time.Now())
	n.mu.Unlock()

	// Ticks: every join/2 while a view is being agreed (the join timer's
	// resolution); in an operational ring with traffic what the failure
	// detector and the heartbeats need — a check every heartbeat/2 (the
	// detection bound of docs/totem.md counts heartbeat/2) and each
	// heartbeat on time; and in a ring at rest (atRest) only the next
	// heartbeat (every RestHeartbeat) and the first peer's expiry, news
	// in a heartbeat waking it at once. An idle node ticked 40 times a
	// second at first, then 10, now 3 (defaults).
	// The periods are read at every tick: SetTimings changes them while
	// the node runs.
	periods := func() (fast, slow time.Duration) {
		tm := n.tm()
		fast = max(min(tm.Heartbeat/2, tm.Join/2), 2*time.Millisecond)
		return fast, max(tm.Heartbeat/2, fast)
	}
	fast, _ := periods()
	t := time.NewTimer(fast)
	defer t.Stop()
	for {
		fast, slow := periods()
		var now time.Time
		select {
		case <-ctx.Done():
			return nil
		case <-n.gathering:
			t.Reset(fast)
			continue
		case <-n.news:
			now = time.Now()
		case now = <-t.C:
		}
		n.mu.Lock()
		n.tick(now)
		n.flush()
		next := fast
		if n.state == stOperational {
			next = slow
			if n.atRest() {
				next = n.restWake(now)
			}
			if due := n.hbDue().Sub(now); due > 0 && due < next {
				next = due
			}
		}
		n.mu.Unlock()
		t.Reset(next)
	}
}

// atRest reports a ring with nothing to carry: operational, no message
// of this node in flight, every position delivered and dropped as stable,
// nothing waiting for its payload or order, and the reachable set is the
// ring. Its heartbeats then only say it is alive: every RestHeartbeat.
// Called with mu held.
func (n *Node) atRest() bool {
	return n.state == stOperational && len(n.pending) == 0 && len(n.cur.ents) == 0 &&
		len(n.unordered) == 0 && len(n.waitingData) == 0 && len(n.future) == 0 &&
		len(n.batch) == 0 && !n.repairing && !n.hearsNews && slices.Equal(n.aliveSet, n.members)
}

// hbDue is when the next heartbeat is due. Called with mu held.
func (n *Node) hbDue() time.Time {
	if n.atRest() {
		// On the wall clock's multiples of the period (bus/beat):
		// every node of an idle cluster then beats at the same
		// instants, and the others' heartbeats reach a node while it
		// is awake for its own, its failure check and its runtime's
		// timer: one wake-up a period instead of one per node.
		return beat.Next(n.lastHB, n.tm().RestHeartbeat)
	}
	if n.state == stGather && n.missingExpected() {
		// Gathering while a node of the nodelist is not heard (a
		// cluster forming, a node lost): every totem.join. The first
		// heartbeat across a route that has just come up is what
		// starts two nodes hearing each other, and it came up to a
		// period (token/5) later; the reachable set's early
		// heartbeat only answers it. Bounded to the gather, which a
		// view ends.
		return n.lastHB.Add(min(n.tm().Heartbeat, n.tm().Join))
	}
	return n.lastHB.Add(n.tm().Heartbeat)
}

// missingExpected reports whether a node of the nodelist is not in the
// reachable set. Called with mu held.
func (n *Node) missingExpected() bool {
	for _, id := range n.cfg.Expected {
		if !slices.Contains(n.aliveSet, id) {
			return true
		}
	}
	return false
}

// restWake is how long a ring at rest may sleep: until its next
// heartbeat is due or the first heard node would expire (a node not
// heard for totem.token is gone: checked at that moment, not up to
// heartbeat/2 later), and at most RestHeartbeat. Called with mu held.
func (n *Node) restWake(now time.Time) time.Duration {
	next := n.tm().RestHeartbeat
	n.hbMu.Lock()
	for _, p := range n.peers {
		if d := p.at.Add(n.expiry(p)).Sub(now); d > 0 && d < next {
			next = d
		}
	}
	n.hbMu.Unlock()
	return next + time.Millisecond // past the expiry, not at it
}

// Mcast multicasts payload for service in total order. It returns once the
// message is queued; the node delivers it to itself and every other member
// of its ring (or, if the ring changes first, in the next ring). The payload
// is not retained by the caller's side: Mcast copies it.
func (n *Node) Mcast(service string, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrTooLarge
	}
	if len(service) > maxService {
		return fmt.Errorf("totem: service name %q longer than %d bytes", service, maxService)
	}
	if n.inflight.Load() >= int64(n.cfg.Window) {
		return ErrTryAgain
	}
	n.mu.Lock()
	n.localSeq++
	n.submit(MsgID{Node: n.cfg.NodeID, Origin: n.origin, Seq: n.localSeq}, &submitFrame{service: service, payload: slices.Clone(payload)})
	n.flush()
	n.mu.Unlock()
	return nil
}

// Status is this node's current state.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.statusLocked()
}

func (n *Node) statusLocked() Status {
	st := Status{
		Node:      n.cfg.NodeID,
		State:     n.state,
		Ring:      n.ring,
		Members:   slices.Clone(n.members),
		Reachable: slices.Clone(n.aliveSet),
		Delivered: n.cur.delivered,
		Ordered:   max(n.cur.highest(), n.knownOrder),
		MaxSeq:    n.maxSeq,
		Pending:   len(n.pendingIdx),
		Views:     n.views,
		SRP:       n.srp,
		Protocol:  ProtocolVersion,
		Refused:   n.refusedNow(time.Now()),
	}
	if len(n.members) > 0 {
		st.Sequencer = n.seqr
	}
	return st
}

// submit queues one of this node's messages and sends it if the ring is
// operational. Called with mu held.
func (n *Node) submit(id MsgID, f *submitFrame) {
	if _, dup := n.pendingIdx[id]; dup {
		return
	}
	o := &own{id: id, service: f.service, payload: f.payload, kept: f.flags&submitKept != 0, droppable: f.flags&submitDroppable != 0, key: f.key}
	n.pending = append(n.pending, o)
	n.pendingIdx[id] = o
	n.inflight.Add(1)
	if n.state == stOperational {
		n.send(o, time.Now(), false)
	}
}

// send multicasts an own message's payload in the current ring, and takes
// it in locally (the connection may not echo); retx: again in the same
// ring.
func (n *Node) send(o *own, now time.Time, retx bool) {
	if retx {
		n.srp.McastRetx++
	} else {
		n.srp.McastTx++
	}
	n.srp.McastRx++
	if o.ring != n.ring {
		o.ring = n.ring
		o.prev = n.lastSent[o.id.Origin]
		n.lastSent[o.id.Origin] = o.id.Seq
	}
	o.sentAt = now
	o.ordered = false
	f := dataFrame{ring: n.ring, id: o.id, prev: o.prev, service: o.service, payload: o.payload, droppable: o.droppable, key: o.key}
	if !n.alone() {
		n.scratch = appendData(n.scratch[:0], &f)
		if err := n.nc.Publish(n.subjData, n.scratch); err != nil {
			n.log.Debug("publishing data", "err", err)
		}
	}
	n.takeData(&f)
}

// alone tells whether this node is the only member of its ring. Its data
// frames and order records then have no reader: a node outside the ring
// ignores them, and a node that joins later gets nothing of this ring (a
// commit's plan fetches from the log, never from frames). So they are not
// published: a message costs one bus crossing in (the submit) and one out
// (the deliver frame). Called with mu held.
func (n *Node) alone() bool {
	return len(n.members) == 1 && n.members[0] == n.cfg.NodeID
}

// listenQueue bounds the listen requests and disconnect events waiting
// for the node (nats.go drops beyond it, as a slow consumer): a few per
// client start, SkipPayloads and connection end, taken in microseconds.
const listenQueue = 4096

// listenRequest is what a Client sends to Subjects.TotemListen.
type listenRequest struct {
	Service string `json:"service"`
	// Origin is the client's origin id: its kept messages of Service may
	// come back without their payload while it is the service's only
	// listener on the node.
	Origin uint32 `json:"origin,omitempty"`
	// Server and CID name the connection the client sends on: its
	// server's id and the connection's id there (nats.go's
	// ConnectedServerId and GetClientID). When that server says the
	// connection closed (bus.DisconnectEvents), the origin no longer
	// counts. Empty: the origin counts until it leaves.
	Server string `json:"server,omitempty"`
	CID    uint64 `json:"cid,omitempty"`
	// Leave: the client with Origin closes; it no longer counts as one of
	// Service's listeners.
	Leave bool `json:"leave,omitempty"`
	// Skip: the client has no use for droppable payloads (SkipPayloads);
	// other nodes' droppable messages of Service come without theirs
	// while every listener of Service on the node says so.
	Skip bool `json:"skip,omitempty"`
	// Filter: of other nodes' droppable messages of Service, the client
	// wants only those whose key is in Keys (WantKeys); a message no
	// listener of Service on the node wants is not delivered there.
	Filter bool     `json:"filter,omitempty"`
	Keys   []uint32 `json:"keys,omitempty"`
}

// listener is a client that named a service to the node (TotemListen).
type listener struct {
	skip   bool
	filter bool
	keys   map[uint32]struct{} // when filter

	conn connID // zero: unknown, it counts until it leaves
}

// connID is a client connection as the bus knows it: its server's id and
// the connection's id (CID) there, unique for that server's life.
type connID struct {
	server string
	cid    uint64
}

// takeListens takes the listen requests and the disconnect events, in
// the order they came, until stop.
func (n *Node) takeListens(ch <-chan *nats.Msg, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case m := <-ch:
			if m.Subject == bus.DisconnectEvents {
				n.onDisconnect(m)
			} else {
				n.onListen(m)
			}
		}
	}
}

// onListen adds a service whose deliver subject also carries the
// configuration changes.
func (n *Node) onListen(m *nats.Msg) {
	var r listenRequest
	if err := json.Unmarshal(m.Data, &r); err != nil || !validService(r.Service) {
		_ = bus.RespondBadRequest(m, `malformed listen request: expected {"service": a subject token}`,
			[]byte(`{"error":"expected {\"service\": a subject token}"}`))
		return
	}
	n.mu.Lock()
	if r.Leave {
		delete(n.listenOrigins[r.Service], r.Origin)
		n.forgetIfUnnamed(r.Service)
		n.mu.Unlock()
		if m.Reply != "" {
			_ = m.Respond([]byte(`{"ok":true}`))
		}
		return
	}
	if _, ok := n.listeners[r.Service]; !ok {
		n.listeners[r.Service] = n.cfg.Subjects.TotemDeliver(n.cfg.NodeID, r.Service)
		n.log.Debug("a service listens", "service", r.Service)
	}
	if n.listenOrigins[r.Service] == nil {
		n.listenOrigins[r.Service] = map[uint32]listener{}
	}
	// A client that reconnected names its new connection: the old one's
	// event, before or after, no longer matches it.
	l := listener{skip: r.Skip, filter: r.Filter, conn: connID{server: r.Server, cid: r.CID}}
	if r.Filter {
		l.keys = make(map[uint32]struct{}, len(r.Keys))
		for _, k := range r.Keys {
			l.keys[k] = struct{}{}
		}
	}
	n.listenOrigins[r.Service][r.Origin] = l
	n.mu.Unlock()
	_ = m.Respond([]byte(`{"ok":true}`))
}

// disconnectEvent is what onDisconnect reads of nats-server's
// DisconnectEventMsg.
type disconnectEvent struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Client struct {
		ID uint64 `json:"id"`
	} `json:"client"`
}

// onDisconnect takes out every origin registered on a connection that
// closed: a client that died without its leave request (killed, crashed,
// replaced) would otherwise count for the bus's life, and its service's
// kept frames would go whole to the next client.
func (n *Node) onDisconnect(m *nats.Msg) {
	var ev disconnectEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Server.ID == "" || ev.Client.ID == 0 {
		return
	}
	gone := connID{server: ev.Server.ID, cid: ev.Client.ID}
	n.mu.Lock()
	defer n.mu.Unlock()
	for service, origins := range n.listenOrigins {
		for origin, l := range origins {
			if l.conn == gone {
				delete(origins, origin)
				n.log.Debug("a listening client's connection closed", "service", service, "origin", origin, "cid", gone.cid)
			}
		}
		n.forgetIfUnnamed(service)
	}
}

// forgetIfUnnamed drops service from the listeners once no client names
// it any more: its configuration changes then go to no deliver subject,
// and a client that comes later names it again. Without it every service
// ever named stayed for the bus's life. Called with mu held.
func (n *Node) forgetIfUnnamed(service string) {
	if len(n.listenOrigins[service]) > 0 {
		return
	}
	delete(n.listenOrigins, service)
	if _, ok := n.listeners[service]; ok {
		delete(n.listeners, service)
		n.log.Debug("no client listens to a service any more", "service", service)
	}
}

// onSubmit takes a Client's message.
func (n *Node) onSubmit(m *nats.Msg) {
	f, err := parseSubmit(m.Data)
	if err != nil || f.origin == 0 {
		return
	}
	n.mu.Lock()
	n.submit(MsgID{Node: n.cfg.NodeID, Origin: f.origin, Seq: f.seq}, &f)
	if queueDrained(m.Sub) {
		n.flush()
	}
	n.mu.Unlock()
}

// queueDrained reports, from inside sub's message handler, whether the
// message being handled is the last one queued: nothing else waits, so a
// batch gathered so far (the sequencer's order record) goes out now.
//
// nats.go counts the message being handled as pending until its handler
// returns (waitForMsgs settles the count at the top of its next turn), so
// in a handler an empty queue reads as 1. Testing for 0 never held there:
// the sequencer published the order records of other nodes' messages only
// at its next tick (heartbeat/2, 100 ms by default) or beside a message of
// its own node — every multicast from any other node took about 100 ms to
// come back (corosync's cpg_lat from node 2 of three: p50 100 ms against
// 0.3 ms from node 1, the sequencer), and every node but the sequencer's
// received the sequencer's own messages that late.
func queueDrained(sub *nats.Subscription) bool {
	if sub == nil {
		return true
	}
	p, _, err := sub.Pending()
	return err != nil || p <= 1
}

// onData takes a payload off the data subject.
func (n *Node) onData(m *nats.Msg) {
	f, err := parseData(m.Data)
	if err != nil {
		return
	}
	if f.id.Node == n.cfg.NodeID {
		return // our own, taken in when sent
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.srp.McastRx++
	if f.ring != n.ring || n.state != stOperational {
		n.keepFuture(f.ring, m)
		if f.ring == n.ring && n.state != stOperational {
			// A frozen ring's payload: a possible orphan of its sender.
			n.unordered[f.id] = &entry{id: f.id, service: f.service, payload: f.payload, have: true, droppable: f.droppable, key: f.key}
		}
		return
	}
	n.takeData(&f)
	if queueDrained(m.Sub) {
		n.flush()
	}
}

// keepFuture holds a frame of a ring newer than ours: its commit may still
// be on its way. Bounded; what is dropped is fetched later.
func (n *Node) keepFuture(ring RingID, m *nats.Msg) {
	if ring.Seq > n.ring.Seq && len(n.future) < 1<<14 {
		n.future = append(n.future, m)
	}
}

// takeData records a payload of the current ring: the sequencer orders it,
// the others match it with its order.
type originKey struct{ node, origin uint32 }

func (n *Node) takeData(f *dataFrame) {
	if n.state != stOperational {
		return
	}
	id := f.id
	if pos, ok := n.waitingData[id]; ok {
		// Ordered already (by this ring's sequencer before the last
		// handoff, when this node is the sequencer now): the payload
		// its position waited for.
		delete(n.waitingData, id)
		if e := n.cur.at(pos); e != nil && e.id == id && !e.have {
			e.service, e.payload, e.have, e.droppable, e.key = f.service, f.payload, true, f.droppable, f.key
			n.deliverReady()
		}
		return
	}
	if n.isOrdered(id) {
		return // a retransmission of a message ordered and received
	}
	if !n.seqReady {
		n.unordered[id] = &entry{id: id, service: f.service, payload: f.payload, have: true, droppable: f.droppable, key: f.key, prev: f.prev}
		return
	}
	k := originKey{id.Node, id.Origin}
	if f.prev != n.seqLast[k] {
		// An earlier message of this origin is missing: hold this
		// one until its retransmission arrives.
		h := n.seqHeld[k]
		if h == nil {
			h = map[uint64]*dataFrame{}
			n.seqHeld[k] = h
		}
		if _, ok := h[f.prev]; !ok {
			c := *f
			h[f.prev] = &c
		}
		return
	}
	n.order(f)
	for h := n.seqHeld[k]; len(h) > 0; {
		next, ok := h[n.seqLast[k]]
		if !ok {
			break
		}
		delete(h, n.seqLast[k])
		n.order(next)
	}
}

// isOrdered reports whether id has a position in the current ring (or had
// one, dropped as stable within the last Consensus period or two).
func (n *Node) isOrdered(id MsgID) bool {
	if _, ok := n.seqIDs[id]; ok {
		return true
	}
	if _, ok := n.seqOld[id]; ok {
		return true
	}
	_, ok := n.seqOlder[id]
	return ok
}

// order is the sequencer giving a message the ring's next position.
func (n *Node) order(f *dataFrame) {
	id := f.id
	if _, dup := n.seqIDs[id]; dup {
		return
	}
	n.seqLast[originKey{id.Node, id.Origin}] = id.Seq
	pos := n.cur.highest() + 1
	n.seqIDs[id] = pos
	*n.cur.slot(pos) = entry{id: id, service: f.service, payload: f.payload, have: true, droppable: f.droppable, key: f.key}
	if len(n.batch) == 0 {
		n.batchFirst = pos
	}
	n.batch = append(n.batch, id)
	if o := n.pendingIdx[id]; o != nil {
		o.ordered = true
	}
	if id.Node == n.runNode {
		n.runLen++
	} else {
		n.runNode, n.runLen = id.Node, 1
	}
	if len(n.batch) >= 512 {
		n.flushOrder(handoff{})
	}
	n.deliverReady()
}

// onOrder takes the sequencer's order records.
func (n *Node) onOrder(m *nats.Msg) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ring, first, ids, h, err := parseOrder(m.Data, n.idScratch)
	if err != nil {
		return
	}
	n.idScratch = ids[:0]
	if ring == n.ring && n.seqReady {
		// We order: every record of the ring's earlier sequencers was
		// taken before we took over, and nobody else orders now.
		return
	}
	if ring != n.ring || n.state != stOperational {
		n.keepFuture(ring, m)
		return
	}
	n.takeRecord(first, ids, h)
	if queueDrained(m.Sub) {
		n.flush()
	}
}

// takeRecord takes an order record of the current ring: its ids, then
// its handoff if it has one.
func (n *Node) takeRecord(first uint64, ids []MsgID, h handoff) {
	n.takeOrder(first, ids)
	if h.to != 0 {
		n.adoptSeq(h.epoch, h.to, first+uint64(len(ids)))
	}
}

func (n *Node) takeOrder(first uint64, ids []MsgID) {
	for i, id := range ids {
		pos := first + uint64(i)
		e := n.cur.slot(pos)
		if e == nil || e.ordered() {
			continue
		}
		e.id = id
		n.seqIDs[id] = pos
		if u := n.unordered[id]; u != nil {
			delete(n.unordered, id)
			e.service, e.payload, e.have, e.droppable, e.key = u.service, u.payload, true, u.droppable, u.key
		} else {
			n.waitingData[id] = pos
		}
		if id.Node == n.cfg.NodeID {
			if o := n.pendingIdx[id]; o != nil {
				o.ordered = true
			}
		}
	}
	n.knownOrder = max(n.knownOrder, first+uint64(len(ids))-1)
	n.deliverReady()
	n.takeOver()
}

// adoptSeq takes a handoff (from an order record or a heartbeat): from
// position from on, node to orders the ring's messages. Called with mu
// held.
func (n *Node) adoptSeq(epoch, to uint32, from uint64) {
	if epoch <= n.seqEpoch || to == 0 || n.state != stOperational {
		return
	}
	n.resign()
	n.seqEpoch, n.seqr, n.seqFrom = epoch, to, from
	n.knownOrder = max(n.knownOrder, from-1)
	n.takeOver()
}

// resign stops this node's ordering, if it ordered: the frames it held
// for an earlier message of their origin go back to the unordered
// payloads, for the next sequencer's order. Called with mu held.
func (n *Node) resign() {
	n.seqReady = false
	n.runNode, n.runLen = 0, 0
	for _, held := range n.seqHeld {
		for _, f := range held {
			n.unordered[f.id] = &entry{id: f.id, service: f.service, payload: f.payload, have: true, droppable: f.droppable, key: f.key, prev: f.prev}
		}
	}
	clear(n.seqHeld)
}

// takeOver makes this node the ordering sequencer once it has been handed
// the ordering and knows every position below the one it starts at (a
// record it missed is repaired first: ordering without it could give a
// message ordered there a second position). It then orders the payloads
// it holds unordered, each origin's after the last one ordered. Called
// with mu held.
func (n *Node) takeOver() {
	if n.seqr != n.cfg.NodeID || n.seqReady || n.state != stOperational || n.cur.highest() >= n.seqFrom {
		return
	}
	for pos := n.cur.delivered + 1; pos < n.seqFrom; pos++ {
		if !n.cur.at(pos).ordered() {
			return
		}
	}
	clear(n.seqLast)
	maps.Copy(n.seqLast, n.delivLast)
	for pos := n.cur.delivered + 1; pos < n.seqFrom; pos++ {
		id := n.cur.at(pos).id
		n.seqLast[originKey{id.Node, id.Origin}] = id.Seq
	}
	n.seqReady = true
	n.runNode, n.runLen = 0, 0
	n.log.Debug("ordering from here", "ring", n.ring, "from", n.seqFrom, "epoch", n.seqEpoch)
	for id, u := range n.unordered {
		delete(n.unordered, id)
		n.takeData(&dataFrame{ring: n.ring, id: id, prev: u.prev, service: u.service, payload: u.payload, droppable: u.droppable, key: u.key})
	}
}

// deliverReady delivers the current ring's log in order as far as it can.
func (n *Node) deliverReady() {
	if n.state != stOperational {
		return
	}
	for {
		e := n.cur.ready()
		if e == nil {
			return
		}
		n.cur.delivered++
		n.delivLast[originKey{e.id.Node, e.id.Origin}] = e.id.Seq
		n.deliver(n.cur.ring, n.cur.delivered, e)
	}
}

func (n *Node) deliver(ring RingID, pos uint64, e *entry) {
	m := Message{Ring: ring, Pos: pos, ID: e.id, Service: e.service, Payload: e.payload}
	kept := false
	if e.id.Node == n.cfg.NodeID {
		if o := n.pendingIdx[e.id]; o != nil {
			kept = o.kept && n.onlyListener(e.service, e.id.Origin)
			o.done = true
			delete(n.pendingIdx, e.id)
			n.inflight.Add(-1)
			n.compactPending()
		}
	}
	if n.cb.Deliver != nil {
		n.cb.Deliver(&m)
	}
	if e.droppable && e.id.Node != n.cfg.NodeID && n.noneWants(e.service, e.key) {
		// Another node's message that no client of the service here has
		// a use for (WantKeys: a CPG group with no member on this node):
		// it has no place in their streams, so no frame.
		return
	}
	subj, ok := n.deliverSubj[e.service]
	if !ok {
		subj = n.cfg.Subjects.TotemDeliver(n.cfg.NodeID, e.service)
		n.deliverSubj[e.service] = subj
	}
	// What goes without its payload, marked by a header:
	//   - kept: the origin has the payload and nobody else on this node
	//     receives the service, so its payload crosses neither this
	//     process again nor the socket to the origin's (docs/totem.md,
	//     "What a large message costs");
	//   - skipped: another node's droppable message, to a service whose
	//     every listener here skips droppable payloads (a CPG instance
	//     with no local member in any group): nobody here reads it.
	var hdr nats.Header
	switch {
	case kept:
		hdr = n.keptHdr
	case e.droppable && e.id.Node != n.cfg.NodeID && len(e.payload) >= droppableMin && n.allSkip(e.service):
		hdr = n.skippedHdr
	}
	if hdr != nil {
		m.Payload = nil
	}
	n.scratch = appendDeliver(n.scratch[:0], &m)
	if hdr == nil {
		_ = n.nc.Publish(subj, n.scratch)
		return
	}
	_ = n.nc.PublishMsg(&nats.Msg{Subject: subj, Data: n.scratch, Header: hdr})
}

// onlyListener tells whether origin is the one client that named service
// to this node (TotemListen). Called with mu held.
func (n *Node) onlyListener(service string, origin uint32) bool {
	o := n.listenOrigins[service]
	if len(o) != 1 {
		return false
	}
	_, ok := o[origin]
	return ok
}

// noneWants tells whether service has listeners on this node and none of
// them wants key: each named its keys (WantKeys) and key is not among
// them. Called with mu held.
func (n *Node) noneWants(service string, key uint32) bool {
	o := n.listenOrigins[service]
	if len(o) == 0 {
		return false
	}
	for _, l := range o {
		if !l.filter {
			return false
		}
		if _, ok := l.keys[key]; ok {
			return false
		}
	}
	return true
}

// allSkip tells whether service has listeners on this node and every one
// of them skips droppable payloads (TotemListen's skip). Called with mu
// held.
func (n *Node) allSkip(service string) bool {
	o := n.listenOrigins[service]
	if len(o) == 0 {
		return false
	}
	for _, l := range o {
		if !l.skip {
			return false
		}
	}
	return true
}

func (n *Node) compactPending() {
	i := 0
	for i < len(n.pending) && n.pending[i].done {
		n.pending[i] = nil
		i++
	}
	if i > 0 {
		n.pending = n.pending[i:]
	}
}

// flush sends the sequencer's pending order record. Called when the
// subscription's queue is empty, so that a burst of messages shares one
// record while a lone message is ordered at once.
//
// The record hands the ordering on when the sequencer's last
// Config.HandoffRun messages all came from one other member: that node's
// messages then need no round trip to be ordered (docs/totem.md,
// "Sequencer handoff"). Only here, between batches: never in the middle
// of ordering a frame and the ones it releases.
func (n *Node) flush() {
	if len(n.batch) == 0 {
		return
	}
	var h handoff
	if n.seqReady && n.cfg.HandoffRun > 0 && n.runLen >= n.cfg.HandoffRun && n.runNode != n.cfg.NodeID && slices.Contains(n.members, n.runNode) {
		h = handoff{epoch: n.seqEpoch + 1, to: n.runNode}
	}
	n.flushOrder(h)
}

func (n *Node) flushOrder(h handoff) {
	if !n.alone() {
		n.scratch = appendOrder(n.scratch[:0], n.ring, n.batchFirst, n.batch, h)
		if err := n.nc.Publish(n.subjOrder, n.scratch); err != nil {
			n.log.Debug("publishing an order record", "err", err)
		}
	}
	next := n.batchFirst + uint64(len(n.batch))
	n.knownOrder = max(n.knownOrder, next-1)
	n.batch = n.batch[:0]
	if h.to != 0 {
		n.resign()
		n.seqEpoch, n.seqr, n.seqFrom = h.epoch, h.to, next
		n.log.Debug("ordering handed on", "ring", n.ring, "to", h.to, "from", next, "epoch", h.epoch)
	}
}

// onHeartbeat feeds the failure detector.
func (n *Node) onHeartbeat(m *nats.Msg) {
	now := time.Now()
	n.hbMu.Lock()
	if id, ok := n.hbRaw[string(m.Data)]; ok {
		// The sender's previous heartbeat again: it is alive, and news
		// only if it had been silent for its expiry.
		p := n.peers[id]
		if p == nil { // a refused node's (refuse): it stays refused
			n.refused[id].at = now
			n.hbMu.Unlock()
			return
		}
		expired := now.Sub(p.at) >= n.expiry(p)
		p.at = now
		n.hbMu.Unlock()
		if expired {
			select {
			case n.news <- struct{}{}:
			default:
			}
		}
		return
	}
	n.hbMu.Unlock()
	var hb Heartbeat
	if err := parseHeartbeat(m.Data, &hb); err != nil || hb.Node == n.cfg.NodeID || hb.Node == 0 {
		return
	}
	raw := string(m.Data)
	if hb.Proto != ProtocolVersion {
		n.refuse(now, &hb, raw)
		return
	}
	n.hbMu.Lock()
	prev := n.peers[hb.Node]
	if prev != nil {
		delete(n.hbRaw, prev.raw)
	}
	if r := n.refused[hb.Node]; r != nil { // upgraded (or downgraded) to this version
		delete(n.hbRaw, r.raw)
		delete(n.refused, hb.Node)
	}
	n.peers[hb.Node] = &peer{at: now, hb: hb, raw: raw}
	n.hbRaw[raw] = hb.Node
	n.hbMu.Unlock()
	if prev == nil || now.Sub(prev.at) >= n.expiry(prev) || prev.hb.Inc != hb.Inc || prev.hb.Ring != hb.Ring ||
		prev.hb.State != hb.State || !slices.Equal(prev.hb.Members, hb.Members) || !slices.Equal(prev.hb.Hears, hb.Hears) ||
		prev.hb.Token != hb.Token {
		select {
		case n.news <- struct{}{}:
		default:
		}
	}
}

// refuse takes in the heartbeat of a node that speaks another protocol
// version: the node is no peer (a peer it was, under this version, is
// gone at once), and the error says so once per node and version.
// corosync drops the packets of another totem version the same way; a
// ring cannot hold nodes that misread each other's frames.
func (n *Node) refuse(now time.Time, hb *Heartbeat, raw string) {
	n.hbMu.Lock()
	wasPeer := false
	if p := n.peers[hb.Node]; p != nil {
		delete(n.hbRaw, p.raw)
		delete(n.peers, hb.Node)
		wasPeer = true
	}
	if r := n.refused[hb.Node]; r != nil {
		delete(n.hbRaw, r.raw)
	}
	n.refused[hb.Node] = &refusedPeer{node: hb.Node, proto: hb.Proto, at: now, raw: raw}
	n.hbRaw[raw] = hb.Node
	key := refusedPeer{node: hb.Node, proto: hb.Proto}
	_, logged := n.refusedLogged[key]
	n.refusedLogged[key] = struct{}{}
	n.hbMu.Unlock()
	if !logged {
		n.log.Error("refusing a node of another totem protocol version: it cannot be in a ring with this node; "+
			"upgrade every node to the same build (a rolling upgrade across a protocol change is not possible: stop every node, upgrade, start them)",
			"peer", hb.Node, "peer_protocol", hb.Proto, "protocol", ProtocolVersion)
	}
	if wasPeer {
		select {
		case n.news <- struct{}{}:
		default:
		}
	}
}

// isRefused reports whether node's latest heartbeat said another protocol
// version: its membership messages are dropped, as its heartbeats are (a
// build that hears this one may propose it a view; the proposal's lowest
// node would otherwise be taken for the coordinator).
func (n *Node) isRefused(node uint32) bool {
	n.hbMu.Lock()
	defer n.hbMu.Unlock()
	return n.refused[node] != nil
}

// refusedNow lists the nodes refused for their protocol version that were
// heard within totem.token (a node upgraded, or stopped, leaves the list),
// in id order.
func (n *Node) refusedNow(now time.Time) []RefusedPeer {
	n.hbMu.Lock()
	defer n.hbMu.Unlock()
	var out []RefusedPeer
	for id, r := range n.refused {
		if now.Sub(r.at) < n.tm().Token {
			out = append(out, RefusedPeer{Node: id, Protocol: r.proto})
		}
	}
	slices.SortFunc(out, func(a, b RefusedPeer) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

func (n *Node) sendHeartbeat(now time.Time) {
	hb := Heartbeat{
		Node:      n.cfg.NodeID,
		Proto:     n.proto,
		Inc:       n.inc,
		Ring:      n.ring,
		State:     n.state,
		Delivered: n.cur.delivered,
		Ordered:   max(n.cur.highest(), n.knownOrder),
		MaxSeq:    n.maxSeq,
		Members:   n.members,
		Addr:      n.cfg.Addr,
		Hears:     n.aliveSet,
		Token:     uint32(n.tm().Token / time.Millisecond),

		ConfigVersion: n.version,
	}
	if n.state != stOperational {
		hb.Delivered, hb.Ordered = 0, 0
	} else if n.seqEpoch > 0 {
		hb.SeqEpoch, hb.Seqr, hb.SeqFrom = n.seqEpoch, n.seqr, n.seqFrom
	}
	b, err := appendHeartbeat(nil, &hb)
	if err != nil {
		n.log.Error("encoding a heartbeat", "err", err)
		return
	}
	_ = n.nc.Publish(n.subjHB, b)
	n.lastHB = now
	n.hearsNews = false
}

// alive is this node and every node heard from within totem.token, sorted.
// The heartbeats are the peers' own, shared: read only. Both results are
// this node's buffers, refilled at each call (a tick at 32 nodes while
// gathering allocated a map and a slice, dozens of times a second per
// node): valid until the next call, not to be kept. Called with mu held.
func (n *Node) alive(now time.Time) ([]uint32, map[uint32]*Heartbeat) {
	n.hbMu.Lock()
	defer n.hbMu.Unlock()
	out := append(n.aliveBuf[:0], n.cfg.NodeID)
	if n.hbsBuf == nil {
		n.hbsBuf = make(map[uint32]*Heartbeat, len(n.peers))
	}
	hbs := n.hbsBuf
	clear(hbs)
	for id, p := range n.peers {
		if now.Sub(p.at) < n.expiry(p) {
			out = append(out, id)
			hbs[id] = &p.hb
		}
	}
	slices.Sort(out)
	n.aliveBuf = out
	return out, hbs
}

// tick runs the failure detector, the view agreement's timeouts,
// retransmissions and garbage collection. Called with mu held.
func (n *Node) tick(now time.Time) {
	alive, hbs := n.alive(now)
	for id, hb := range hbs {
		if hb.Addr != "" {
			n.addrs[id] = hb.Addr
		}
		if old, ok := n.versions[id]; ok && old != hb.ConfigVersion && slices.Contains(n.members, id) {
			n.versions[id] = hb.ConfigVersion
			n.versionEvent(id)
		}
		n.versions[id] = hb.ConfigVersion
	}
	if !slices.Equal(alive, n.aliveSet) {
		n.aliveSet = slices.Clone(alive)
		n.aliveSince = now
		n.hearsNews = true
	}
	// A heartbeat on time, and one early (at most one per totem.join)
	// when the reachable set changed: a view forms only of nodes whose
	// heartbeats say they hear each other, so the nodes just heard learn
	// it now rather than up to a heartbeat period later (a view of N
	// nodes started together waited two periods, 400 ms by default,
	// after the last route). The period is unchanged.
	if !now.Before(n.hbDue()) || (n.hearsNews && now.Sub(n.lastHB) >= n.tm().Join) {
		n.sendHeartbeat(now)
	}
	switch n.state {
	case stOperational:
		if why := n.needViewChange(now, alive, hbs); why != "" {
			n.log.Info("membership change", "why", why, "ring", n.ring, "members", n.members, "reachable", alive)
			n.enterGather(now)
			return
		}
		n.retransmit(now, hbs)
		n.collect(hbs)
	case stGather, stRecovery:
		n.agree(now, n.viewable(alive, hbs))
	}
}

// hears reports whether a hears b, by a's latest heartbeat (this node:
// its own reachable set). A node that does not say is taken to hear all.
func (n *Node) hears(a, b uint32, alive []uint32, hbs map[uint32]*Heartbeat) bool {
	if a == n.cfg.NodeID {
		return slices.Contains(alive, b)
	}
	hb, ok := hbs[a]
	return ok && (hb.Hears == nil || slices.Contains(hb.Hears, b))
}

// viewable is the part of the reachable set a view can be formed of: this
// node, then each reachable node in id order that hears, and is heard by,
// every node already taken. While routes are still forming (node 1 hears
// 2, 2 hears 1 and 3, 3 and 1 not yet each other), the nodes in the middle
// would otherwise keep breaking every view that cannot include all they
// hear, and the coordinator keep proposing the same members again.
//
// Who hears whom is read once into a matrix over alive's positions: asked
// pair by pair (hears), a tick at 32 nodes searched the heartbeats' hears
// lists some 30 000 times, and ran after every heartbeat that brought
// news while gathering. Called with mu held.
func (n *Node) viewable(alive []uint32, hbs map[uint32]*Heartbeat) []uint32 {
	if at, found := slices.BinarySearch(alive, n.cfg.NodeID); !found {
		alive = slices.Insert(slices.Clone(alive), at, n.cfg.NodeID) // alive's result always has it
	}
	k := len(alive)
	if cap(n.hearBuf) < k*k {
		n.hearBuf = make([]bool, k*k)
	}
	m := n.hearBuf[:k*k] // m[i*k+j]: alive[i] hears alive[j]
	clear(m)
	self := -1
	for i, a := range alive {
		row := m[i*k : (i+1)*k]
		hb, ok := hbs[a]
		switch {
		case a == n.cfg.NodeID:
			self = i
			fallthrough
		case ok && hb.Hears == nil: // this node, or a node that does not say: hears all
			for j := range row {
				row[j] = true
			}
		case ok && slices.IsSorted(hb.Hears): // as every node sends it: one walk of both
			j := 0
			for _, b := range hb.Hears {
				for j < k && alive[j] < b {
					j++
				}
				if j < k && alive[j] == b {
					row[j] = true
				}
			}
		case ok:
			for _, b := range hb.Hears {
				if j, found := slices.BinarySearch(alive, b); found {
					row[j] = true
				}
			}
		}
	}
	out := make([]uint32, 1, k)
	out[0] = n.cfg.NodeID
	taken := append(n.takenBuf[:0], self)
	for i, id := range alive {
		if i == self {
			continue
		}
		ok := true
		for _, t := range taken {
			if !m[i*k+t] || !m[t*k+i] {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, id)
			taken = append(taken, i)
		}
	}
	n.takenBuf = taken
	slices.Sort(out)
	return out
}

func (n *Node) needViewChange(now time.Time, alive []uint32, hbs map[uint32]*Heartbeat) string {
	// A member not heard is gone: always a view change. A node heard
	// that is not a member joins only once it and every member hear each
	// other; before that, a view change would install the same members.
	if !slices.Equal(alive, n.members) {
		for _, id := range n.members {
			if !slices.Contains(alive, id) {
				return "reachable set differs from the ring"
			}
		}
		for _, id := range alive {
			if slices.Contains(n.members, id) {
				continue
			}
			joinable := true
			for _, m := range n.members {
				if !n.hears(id, m, alive, hbs) || !n.hears(m, id, alive, hbs) {
					joinable = false
					break
				}
			}
			if joinable {
				return "reachable set differs from the ring"
			}
		}
	}
	for _, id := range n.members {
		if id == n.cfg.NodeID {
			continue
		}
		hb := hbs[id]
		if hb == nil {
			return "reachable set differs from the ring" // cannot happen: every member is reachable here
		}
		switch {
		case hb.Inc != n.incs[id]:
			return fmt.Sprintf("node %d restarted", id)
		case hb.Ring == n.ring && hb.State == stGather:
			return fmt.Sprintf("node %d gathers", id)
		case hb.Ring.Seq > n.ring.Seq:
			return fmt.Sprintf("node %d is in a newer ring %s", id, hb.Ring)
		case hb.Ring != n.ring && now.Sub(n.installed) > n.tm().Consensus:
			return fmt.Sprintf("node %d did not install ring %s", id, n.ring)
		}
	}
	return ""
}

// enterGather freezes the current ring: nothing more is delivered in it
// except through the recovery the next commit plans.
func (n *Node) enterGather(now time.Time) {
	n.state = stGather
	n.srp.GatherEntered++
	select { // tick at the join's resolution from now on (Run)
	case n.gathering <- struct{}{}:
	default:
	}
	n.batch = n.batch[:0]
	n.myProp = nil
	n.commit = nil
	n.recToken++
	n.aliveSince = now
	n.sendHeartbeat(now)
}

// agree drives the view agreement while gathering: the lowest node of the
// viewable set proposes it once the reachable set has settled for
// totem.join (and, before a first ring, once every node of the nodelist is
// heard or totem.consensus has passed).
func (n *Node) agree(now time.Time, alive []uint32) {
	if n.state == stRecovery {
		if n.commit != nil && now.Sub(n.ackedAt) > 4*n.tm().Consensus {
			n.log.Warn("recovery did not finish; gathering again", "ring", n.commit.Ring)
			n.enterGather(now)
		}
		return
	}
	coord := alive[0]
	if coord != n.cfg.NodeID {
		n.myProp = nil
		return
	}
	if p := n.myProp; p != nil {
		if now.Sub(p.at) < n.tm().Consensus {
			if slices.Equal(p.members, alive) || now.Sub(n.aliveSince) < n.tm().Join {
				return
			}
		} else {
			// Consensus expired: propose again without the silent.
			var ok []uint32
			for _, id := range p.members {
				if p.acks[id] != nil && slices.Contains(alive, id) {
					ok = append(ok, id)
				}
			}
			if !slices.Contains(ok, n.cfg.NodeID) {
				ok = append(ok, n.cfg.NodeID)
				slices.Sort(ok)
			}
			n.log.Info("consensus timeout; proposing the responsive members", "proposal", p.members, "responsive", ok)
			n.propose(now, ok)
			return
		}
	}
	if n.acked.Node != 0 && n.acked.Node != n.cfg.NodeID && now.Sub(n.ackedAt) < n.tm().Consensus {
		return // waiting for another coordinator's commit
	}
	if now.Sub(n.aliveSince) < n.tm().Join {
		return
	}
	if n.ring.IsZero() && now.Sub(n.started) < n.tm().Consensus {
		for _, id := range n.cfg.Expected {
			if !slices.Contains(alive, id) {
				return // the others may be starting too: one first view, not a singleton then a merge
			}
		}
	}
	n.propose(now, alive)
}

func (n *Node) propose(now time.Time, members []uint32) {
	n.propN++
	p := &proposal{id: PropID{Node: n.cfg.NodeID, N: n.propN}, members: slices.Clone(members), at: now, acks: map[uint32]*MembMsg{}}
	n.myProp = p
	msg := MembMsg{Type: "propose", From: n.cfg.NodeID, PID: p.id, Members: p.members}
	n.log.Debug("proposing", "pid", p.id, "members", p.members)
	// The acks come back on this node's ack subject, to it alone: on
	// the shared subject each of N acks went to every node, N² frames
	// per round that only the proposer reads.
	n.publishMemb(&msg, n.subjAck)
	n.takePropose(now, &msg, "")
}

// publishMemb publishes a membership message on the shared subject, with
// reply as its reply subject (a proposal's ack subject; "" for none).
func (n *Node) publishMemb(m *MembMsg, reply string) {
	n.publishMembTo(n.subjMemb, m, reply)
}

func (n *Node) publishMembTo(subj string, m *MembMsg, reply string) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	_ = n.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Data: b})
}

func (n *Node) onMemb(m *nats.Msg) {
	var msg MembMsg
	if err := json.Unmarshal(m.Data, &msg); err != nil || msg.From == n.cfg.NodeID || n.isRefused(msg.From) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	switch msg.Type {
	case "propose":
		n.takePropose(now, &msg, m.Reply)
	case "ack":
		n.takeAck(now, &msg)
	case "commit":
		n.takeCommit(now, &msg)
	}
	n.flush()
}

// takePropose answers a proposal; its ack goes to ackTo, the proposal's
// reply subject, or on the shared subject when the proposer gave none (a
// node of before the ack subject, which reads acks there).
func (n *Node) takePropose(now time.Time, m *MembMsg, ackTo string) {
	if !slices.Contains(m.Members, n.cfg.NodeID) {
		return
	}
	if m.From != n.cfg.NodeID {
		if v := n.viewable(n.alive(now)); v[0] < m.From {
			return // a lower node is reachable: it coordinates
		}
		n.myProp = nil
	}
	if n.state == stOperational {
		n.log.Info("joining a view change", "proposer", m.From, "members", m.Members)
		n.enterGather(now)
	} else if n.state == stRecovery {
		n.state = stGather // abandon the recovery: the new plan supersedes it
		n.srp.GatherEntered++
		n.commit = nil
		n.recToken++
	}
	n.acked = m.PID
	n.ackedAt = now
	ack := MembMsg{
		Type:       "ack",
		From:       n.cfg.NodeID,
		PID:        m.PID,
		OldRing:    n.ring,
		OldMembers: n.members,
		Delivered:  n.cur.delivered,
		Held:       n.cur.held(),
		MaxSeq:     n.maxSeq,
		Inc:        n.inc,
	}
	if !n.ring.IsZero() {
		for _, o := range n.pending {
			if !o.done && o.ring == n.ring {
				ack.Orphans = append(ack.Orphans, o.id)
			}
		}
	}
	if m.From == n.cfg.NodeID {
		n.takeAck(now, &ack)
		return
	}
	if ackTo == "" {
		ackTo = n.subjMemb
	}
	n.publishMembTo(ackTo, &ack, "")
}

func (n *Node) takeAck(now time.Time, m *MembMsg) {
	p := n.myProp
	if p == nil || m.PID != p.id || !slices.Contains(p.members, m.From) {
		return
	}
	p.acks[m.From] = m
	if len(p.acks) < len(p.members) {
		return
	}
	n.myProp = nil
	c := n.plan(p)
	n.log.Debug("committing", "ring", c.Ring, "members", c.Members)
	n.publishMemb(c, "")
	n.takeCommit(now, c)
}

// plan builds the commit: the new ring id and, for each old ring the
// members come from, how far they deliver it and who has what they lack.
func (n *Node) plan(p *proposal) *MembMsg {
	seq := n.maxSeq
	for _, a := range p.acks {
		seq = max(seq, a.MaxSeq, a.OldRing.Seq)
	}
	// corosync's new ring sequence is the highest seen plus 4.
	c := &MembMsg{Type: "commit", From: n.cfg.NodeID, PID: p.id, Members: p.members, Ring: RingID{Rep: p.members[0], Seq: seq + 4}}
	// Persist before anyone can install it: a coordinator that crashes
	// right after its commit must not hand the same ring id out again.
	n.maxSeq = seq + 4
	n.saveSeq(n.maxSeq)
	type key struct {
		ring RingID
		node uint32 // set for nodes without a ring: each is alone
	}
	groups := map[key]*Group{}
	var order []key
	for _, id := range p.members {
		a := p.acks[id]
		k := key{ring: a.OldRing}
		if a.OldRing.IsZero() {
			k.node = id
		}
		g := groups[k]
		if g == nil {
			g = &Group{OldRing: a.OldRing, OldMembers: a.OldMembers}
			groups[k] = g
			order = append(order, k)
		}
		g.Members = append(g.Members, id)
	}
	for _, k := range order {
		g := groups[k]
		lo := uint64(1<<63 - 1)
		for _, id := range g.Members {
			lo = min(lo, p.acks[id].Delivered)
		}
		has := func(pos uint64) uint32 {
			var best uint32
			for _, id := range g.Members {
				a := p.acks[id]
				if a.Delivered >= pos {
					return id
				}
				if best == 0 && slices.Contains(a.Held, pos) {
					best = id
				}
			}
			return best
		}
		upTo := lo
		for {
			h := has(upTo + 1)
			if h == 0 {
				break
			}
			upTo++
			if k := len(g.Segments); k > 0 && g.Segments[k-1].Holder == h && g.Segments[k-1].To == upTo-1 {
				g.Segments[k-1].To = upTo
			} else {
				g.Segments = append(g.Segments, Segment{Holder: h, From: upTo, To: upTo})
			}
		}
		g.UpTo = upTo
		for _, id := range g.Members {
			g.Orphans = append(g.Orphans, p.acks[id].Orphans...)
		}
		c.Groups = append(c.Groups, *g)
	}
	for _, id := range p.members {
		c.Incs = append(c.Incs, p.acks[id].Inc)
	}
	return c
}

func (n *Node) takeCommit(now time.Time, c *MembMsg) {
	if c.PID != n.acked || !slices.Contains(c.Members, n.cfg.NodeID) || n.state != stGather {
		return
	}
	var g *Group
	for i := range c.Groups {
		if slices.Contains(c.Groups[i].Members, n.cfg.NodeID) {
			g = &c.Groups[i]
		}
	}
	if g == nil || g.OldRing != n.ring {
		return
	}
	n.maxSeq = max(n.maxSeq, c.Ring.Seq)
	n.saveSeq(n.maxSeq)
	n.state = stRecovery
	n.srp.RecoveryEntered++
	n.commit = c
	n.ackedAt = now
	n.recToken++
	// What this node lacks of the old ring, and from whom.
	var need []Segment
	for _, s := range g.Segments {
		for pos := max(s.From, n.cur.delivered+1); pos <= s.To; pos++ {
			if e := n.cur.at(pos); e.ordered() && e.have {
				continue
			}
			if s.Holder == n.cfg.NodeID {
				continue // cannot happen: the plan says we hold it
			}
			if k := len(need); k > 0 && need[k-1].Holder == s.Holder && need[k-1].To == pos-1 {
				need[k-1].To = pos
			} else {
				need = append(need, Segment{Holder: s.Holder, From: pos, To: pos})
			}
		}
	}
	// Orphans of the other members: fetched from their senders unless
	// this node already has the payload.
	byNode := map[uint32][]MsgID{}
	for _, id := range g.Orphans {
		if id.Node == n.cfg.NodeID || n.unordered[id] != nil {
			continue
		}
		byNode[id.Node] = append(byNode[id.Node], id)
	}
	if len(need) == 0 && len(byNode) == 0 {
		n.finishRecovery(now, nil)
		return
	}
	token := n.recToken
	ring := n.ring
	go n.fetchAll(token, ring, need, byNode)
}

// fetchAll pulls the old ring's positions this node lacks from their
// holders, then hands them to the protocol.
func (n *Node) fetchAll(token int, ring RingID, need []Segment, orphans map[uint32][]MsgID) {
	var got []fetched
	var ferr error
	for _, s := range need {
		f, err := n.fetch(s.Holder, ring, s.From, s.To)
		if err != nil {
			ferr = err
			break
		}
		got = append(got, f...)
	}
	for holder, ids := range orphans {
		if ferr != nil {
			break
		}
		f, err := n.fetchIDs(holder, ring, ids)
		if err != nil {
			ferr = err
			break
		}
		got = append(got, f...)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if token != n.recToken || n.state != stRecovery {
		return
	}
	now := time.Now()
	if ferr != nil {
		n.log.Warn("recovery fetch failed; gathering again", "err", ferr)
		n.enterGather(now)
		return
	}
	n.finishRecovery(now, got)
	n.flush()
}

// fetch asks holder for positions from..to of ring, in as many requests as
// the replies' size needs.
func (n *Node) fetch(holder uint32, ring RingID, from, to uint64) ([]fetched, error) {
	var out []fetched
	subj := n.cfg.Subjects.TotemFetch(holder)
	for from <= to {
		req, _ := json.Marshal(FetchRequest{Ring: ring, From: from, To: to})
		msg, err := n.nc.Request(subj, req, n.tm().Consensus)
		if err != nil {
			return nil, fmt.Errorf("fetching %s %d..%d from node %d: %w", ring, from, to, holder, err)
		}
		f, err := parseFetch(msg.Data)
		if err != nil {
			return nil, fmt.Errorf("fetch reply from node %d: %w", holder, err)
		}
		if len(f) == 0 || f[0].pos != from {
			return nil, fmt.Errorf("node %d does not have %s position %d", holder, ring, from)
		}
		for _, e := range f {
			if e.pos != from || e.pos > to {
				break
			}
			out = append(out, e)
			from++
		}
	}
	return out, nil
}

// fetchIDs asks a sender for its own messages by id.
func (n *Node) fetchIDs(holder uint32, ring RingID, ids []MsgID) ([]fetched, error) {
	req, _ := json.Marshal(FetchRequest{Ring: ring, IDs: ids})
	msg, err := n.nc.Request(n.cfg.Subjects.TotemFetch(holder), req, n.tm().Consensus)
	if err != nil {
		return nil, fmt.Errorf("fetching %d orphans of %s from node %d: %w", len(ids), ring, holder, err)
	}
	f, err := parseFetch(msg.Data)
	if err != nil {
		return nil, fmt.Errorf("fetch reply from node %d: %w", holder, err)
	}
	if len(f) != len(ids) {
		return nil, fmt.Errorf("node %d has %d of %d orphans of %s", holder, len(f), len(ids), ring)
	}
	return f, nil
}

// findOwn finds one of this node's messages by id: in flight, delivered
// at the last view change, or in the logs.
func (n *Node) findOwn(id MsgID) *entry {
	if o := n.pendingIdx[id]; o != nil {
		return &entry{id: o.id, service: o.service, payload: o.payload, have: true}
	}
	if e := n.prevOrphans[id]; e != nil {
		return e
	}
	for _, l := range []*ringLog{n.cur, n.prev} {
		if l == nil {
			continue
		}
		for i := range l.ents {
			if l.ents[i].id == id && l.ents[i].have {
				return &l.ents[i]
			}
		}
	}
	return nil
}

// onFetch serves positions of the current or the previous ring.
func (n *Node) onFetch(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req FetchRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		// Said at once, in the micro convention of every request/reply
		// subject, rather than left to the requester's timeout.
		_ = bus.RespondBadRequest(m, "malformed fetch request: "+err.Error(), nil)
		return
	}
	n.mu.Lock()
	if len(req.IDs) > 0 {
		var out []byte
		for _, id := range req.IDs {
			if e := n.findOwn(id); e != nil {
				out = appendFetchEntry(out, 0, e)
			}
		}
		n.mu.Unlock()
		_ = n.nc.Publish(m.Reply, out)
		return
	}
	var l *ringLog
	switch {
	case n.cur.ring == req.Ring:
		l = n.cur
	case n.prev != nil && n.prev.ring == req.Ring:
		l = n.prev
	}
	var out []byte
	if l != nil {
		for pos := req.From; pos <= req.To && len(out) < 512<<10; pos++ {
			e := l.at(pos)
			if !e.ordered() || !e.have {
				break
			}
			out = appendFetchEntry(out, pos, e)
		}
	}
	n.mu.Unlock()
	_ = n.nc.Publish(m.Reply, out)
}

// finishRecovery delivers the old ring's remaining messages up to the
// plan's limit, the transitional configuration, then installs the new ring
// with its regular configuration: totemsrp's order.
func (n *Node) finishRecovery(now time.Time, got []fetched) {
	c := n.commit
	var g *Group
	for i := range c.Groups {
		if slices.Contains(c.Groups[i].Members, n.cfg.NodeID) {
			g = &c.Groups[i]
		}
	}
	fetchedIDs := map[MsgID]*entry{}
	for _, f := range got {
		if f.pos == 0 {
			fetchedIDs[f.e.id] = &f.e
			continue
		}
		if e := n.cur.slot(f.pos); e != nil && !(e.ordered() && e.have) {
			*e = f.e
		}
	}
	// Orphans placed up to UpTo are delivered there, by this node now or
	// earlier; positions at or below base were delivered by every member,
	// their senders included, so no orphan is among them.
	inRing := map[MsgID]bool{}
	for pos := n.cur.base + 1; pos <= g.UpTo; pos++ {
		e := n.cur.at(pos)
		if !e.ordered() || !e.have {
			n.log.Warn("recovery incomplete; gathering again", "pos", pos)
			n.enterGather(now)
			return
		}
		inRing[e.id] = true
	}
	// The orphans this group cannot place in the old ring's order.
	var orphans []*entry
	for _, id := range g.Orphans {
		if inRing[id] {
			continue
		}
		var e *entry
		switch {
		case id.Node == n.cfg.NodeID:
			e = n.findOwn(id)
		case n.unordered[id] != nil:
			e = n.unordered[id]
		default:
			e = fetchedIDs[id]
		}
		if e == nil {
			n.log.Warn("orphan payload missing; gathering again", "id", id)
			n.enterGather(now)
			return
		}
		orphans = append(orphans, e)
	}
	old := n.cur
	for old.delivered < g.UpTo {
		old.delivered++
		n.deliver(old.ring, old.delivered, old.at(old.delivered))
	}
	trans := slices.Clone(g.Members)
	clear(n.prevOrphans)
	if !n.ring.IsZero() {
		cc := ConfChg{Type: Transitional, Ring: n.ring, Members: trans, Left: minus(n.members, trans), Joined: []uint32{}}
		n.confChg(cc)
		for _, e := range orphans {
			n.prevOrphans[e.id] = e
			n.deliver(old.ring, 0, e)
		}
	} else {
		trans = nil
	}
	// Install the new ring.
	prevMembers := n.members
	n.prev = old
	n.ring = c.Ring
	n.members = slices.Clone(c.Members)
	n.cur = newRingLog(c.Ring, n.members)
	n.state = stOperational
	n.installed = now
	n.views++
	n.srp.OperationalEntered++
	n.commit = nil
	n.acked = PropID{}
	n.myProp = nil
	n.knownOrder = 0
	n.batch = n.batch[:0]
	n.seqr, n.seqEpoch, n.seqFrom = c.Ring.Rep, 0, 1
	n.seqReady = c.Ring.Rep == n.cfg.NodeID
	n.runNode, n.runLen = 0, 0
	clear(n.delivLast)
	clear(n.seqIDs)
	clear(n.seqOld)
	clear(n.seqOlder)
	clear(n.seqLast)
	clear(n.seqHeld)
	clear(n.lastSent)
	clear(n.unordered)
	clear(n.waitingData)
	clear(n.incs)
	for i, id := range c.Members {
		if i < len(c.Incs) {
			n.incs[id] = c.Incs[i]
		}
	}
	joined := minus(n.members, trans)
	n.log.Info("ring installed", "ring", n.ring, "members", n.members, "joined", joined, "left", minus(prevMembers, n.members))
	n.confChg(ConfChg{Type: Regular, Ring: n.ring, Members: slices.Clone(n.members), Joined: joined, Left: []uint32{}})
	for _, id := range minus(prevMembers, n.members) {
		n.memberEvent(id, "left")
	}
	for _, id := range joined {
		n.joinCount[id]++
		n.memberEvent(id, "joined")
	}
	n.checkConfigVersion()
	n.sendHeartbeat(now)
	// Own messages the old ring did not deliver go out again, in their
	// original order, in the new ring.
	for _, o := range n.pending {
		if !o.done {
			n.send(o, now, false)
		}
	}
	fut := n.future
	n.future = nil
	for _, m := range fut {
		if m.Subject == n.subjData {
			f, err := parseData(m.Data)
			if err == nil && f.ring == n.ring {
				n.takeData(&f)
			}
		} else {
			ring, first, ids, h, err := parseOrder(m.Data, nil)
			if err == nil && ring == n.ring && !n.seqReady {
				n.takeRecord(first, ids, h)
			}
		}
	}
}

func (n *Node) confChg(cc ConfChg) {
	if n.cb.ConfChg != nil {
		n.cb.ConfChg(cc)
	}
	b, _ := json.Marshal(cc)
	_ = n.nc.Publish(n.subjConf, b)
	if len(n.listeners) > 0 {
		// The same change, in order with each listening service's
		// messages: a deliver frame with a zero message id.
		n.scratch = appendDeliver(n.scratch[:0], &Message{Ring: cc.Ring, Payload: b})
		for _, subj := range n.listeners {
			_ = n.nc.Publish(subj, n.scratch)
		}
	}
	kind := "view"
	if cc.Type == Transitional {
		kind = "trans"
	}
	ev := struct {
		Node uint32 `json:"node"`
		ConfChg
	}{n.cfg.NodeID, cc}
	b, _ = json.Marshal(ev)
	_ = n.nc.Publish(n.cfg.Subjects.TotemEvent(n.cfg.NodeID, kind), b)
}

// checkConfigVersion is corosync's totem.config_version rule (its cmap
// service's sync): the first time a node goes from a view of its own to one
// with other members, a node whose version is set and lower than the highest
// of theirs is out of date and must stop; it never compares again, so a node
// that has been in a view with others keeps running when a newer node joins
// or a member reloads a newer file. corosync decides at the first
// synchronization whose transitional membership is not empty: its nodes
// always start in a ring of their own (knet's links come up after totem's
// first ring forms), so that is their first view with others. A corobus
// node's first view may hold the others at once (docs/totem.md,
// "Membership"), so the rule is said here in those terms. Version 0 (unset)
// is never out of date, and raises nobody's highest. Called with mu held,
// once the regular configuration is installed.
func (n *Node) checkConfigVersion() {
	if n.metOthers || len(n.members) < 2 {
		return
	}
	n.metOthers = true
	mine := n.version
	if mine == 0 {
		return
	}
	old := OlderConfig{Mine: mine, Highest: mine, Ring: n.ring}
	for _, id := range n.members {
		if v := n.versions[id]; id != n.cfg.NodeID && v > old.Highest {
			old.Highest, old.From = v, id
		}
	}
	if old.Highest == mine {
		return
	}
	n.log.Warn("this node's totem.config_version is older than a member's", "mine", mine, "highest", old.Highest, "node", old.From, "ring", n.ring)
	if n.cb.OlderConfig != nil {
		n.cb.OlderConfig(old)
	}
	b, _ := json.Marshal(struct {
		Node uint32 `json:"node"`
		OlderConfig
	}{n.cfg.NodeID, old})
	_ = n.nc.Publish(n.cfg.Subjects.TotemEvent(n.cfg.NodeID, "older_config"), b)
}

// versionEvent reports member id's new configuration version. Called with
// mu held.
func (n *Node) versionEvent(id uint32) {
	ev := MemberEvent{Node: id, Addr: n.addrs[id], Status: "joined", JoinCount: n.joinCount[id], ConfigVersion: n.versions[id], Ring: n.ring, VersionOnly: true}
	if n.cb.Member != nil {
		n.cb.Member(ev)
	}
	b, _ := json.Marshal(ev)
	_ = n.nc.Publish(n.cfg.Subjects.TotemEvent(n.cfg.NodeID, "config_version"), b)
}

func (n *Node) memberEvent(id uint32, status string) {
	ev := MemberEvent{Node: id, Addr: n.addrs[id], Status: status, JoinCount: n.joinCount[id], ConfigVersion: n.versions[id], Ring: n.ring}
	if n.cb.Member != nil {
		n.cb.Member(ev)
	}
	b, _ := json.Marshal(ev)
	_ = n.nc.Publish(n.cfg.Subjects.TotemEvent(n.cfg.NodeID, status), b)
}

// retransmit resends own messages the sequencer has not ordered (the data
// frame was lost), and repairs holes in the order (an order record or a
// payload was lost) from the sequencer.
func (n *Node) retransmit(now time.Time, hbs map[uint32]*Heartbeat) {
	wait := 2 * n.tm().Heartbeat
	for _, o := range n.pending {
		if !o.done && !o.ordered && now.Sub(o.sentAt) > wait {
			n.send(o, now, true)
		}
	}
	// A handoff whose record this node missed: the heartbeats say it.
	for _, id := range n.members {
		if hb, ok := hbs[id]; ok && hb.Ring == n.ring && hb.SeqEpoch > n.seqEpoch {
			n.adoptSeq(hb.SeqEpoch, hb.Seqr, hb.SeqFrom)
		}
	}
	if n.seqReady {
		return
	}
	// The source of a repair: the member that delivered the most (it
	// has every payload up to there: nothing it delivered beyond what
	// this node delivered is dropped yet); the sequencer when nobody
	// delivered beyond this node (it has every payload it ordered).
	src, best := n.seqr, uint64(0)
	for _, id := range n.members {
		if hb, ok := hbs[id]; ok && id != n.cfg.NodeID && hb.Ring == n.ring {
			n.knownOrder = max(n.knownOrder, hb.Ordered)
			if hb.Delivered > best {
				src, best = id, hb.Delivered
			}
		}
	}
	if best <= n.cur.delivered && n.seqr != n.cfg.NodeID {
		src = n.seqr
	}
	stuck := n.cur.delivered == n.lastDeliv
	n.lastDeliv = n.cur.delivered
	if !stuck || n.repairing || n.cur.delivered >= max(n.knownOrder, n.cur.highest()) || src == n.cfg.NodeID {
		return
	}
	n.repairing = true
	from, to, ring := n.cur.delivered+1, max(n.knownOrder, n.cur.highest()), n.ring
	go func() {
		got, err := n.fetch(src, ring, from, to)
		n.mu.Lock()
		defer n.mu.Unlock()
		n.repairing = false
		if err != nil {
			n.log.Debug("repair fetch", "err", err)
		}
		if n.ring != ring || n.state != stOperational {
			return
		}
		for _, f := range got {
			e := n.cur.slot(f.pos)
			if e == nil || (e.ordered() && e.have) {
				continue
			}
			if e.ordered() {
				delete(n.waitingData, e.id)
			}
			delete(n.unordered, f.e.id)
			*e = f.e
			n.seqIDs[f.e.id] = f.pos
			if f.e.id.Node == n.cfg.NodeID {
				if o := n.pendingIdx[f.e.id]; o != nil {
					o.ordered = true
				}
			}
		}
		n.deliverReady()
		n.takeOver()
		n.flush()
	}()
}

// collect drops the positions every member has delivered.
func (n *Node) collect(hbs map[uint32]*Heartbeat) {
	stable := n.cur.delivered
	for _, id := range n.members {
		if id == n.cfg.NodeID {
			continue
		}
		hb, ok := hbs[id]
		if !ok || hb.Ring != n.ring {
			return
		}
		stable = min(stable, hb.Delivered)
	}
	if time.Since(n.seqOldAt) > n.tm().Consensus {
		clear(n.seqOlder)
		n.seqOld, n.seqOlder = n.seqOlder, n.seqOld
		n.seqOldAt = time.Now()
	}
	n.cur.trim(stable, func(e *entry) {
		delete(n.seqIDs, e.id)
		n.seqOld[e.id] = struct{}{}
	})
}

// minus is a − b for sorted id lists (never nil, so JSON shows []).
func minus(a, b []uint32) []uint32 {
	out := []uint32{}
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// onStatsClear resets the srp counters (cmap's stats.clear.totem): the
// empty reply says it is done.
func (n *Node) onStatsClear(m *nats.Msg) {
	n.mu.Lock()
	n.srp = SRPStats{}
	n.mu.Unlock()
	if m.Reply != "" {
		_ = n.nc.Publish(m.Reply, nil)
	}
}

// TimingsRequest is the request of Subjects.TotemTimings: what the node
// is to run, in ms (the objdb layer sends it when totem.token, join,
// consensus or config_version change); TimingsReply its answer.
type TimingsRequest struct {
	Token     uint64 `json:"token"`
	Join      uint64 `json:"join"`
	Consensus uint64 `json:"consensus"`
	// ConfigVersion, when present, is the node's totem.config_version
	// from now on (SetConfigVersion); it applies even when the timings
	// are refused.
	ConfigVersion *uint64 `json:"config_version,omitempty"`
}

// TimingsReply answers a TimingsRequest: Error says why the node kept
// what it runs.
type TimingsReply struct {
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
}

func (n *Node) onTimings(m *nats.Msg) {
	var req TimingsRequest
	var rep TimingsReply
	err := json.Unmarshal(m.Data, &req)
	if err == nil && req.ConfigVersion != nil {
		n.SetConfigVersion(*req.ConfigVersion)
	}
	if err != nil {
		rep.Error = fmt.Sprintf("malformed timings request: %v", err)
	} else if err := n.SetTimings(Timings{
		Token:     time.Duration(req.Token) * time.Millisecond,
		Join:      time.Duration(req.Join) * time.Millisecond,
		Consensus: time.Duration(req.Consensus) * time.Millisecond,
	}); err != nil {
		rep.Error = err.Error()
	} else {
		rep.OK = true
	}
	if rep.Error != "" {
		n.log.Debug("totem timings not changed", "err", rep.Error)
	}
	if m.Reply != "" {
		b, _ := json.Marshal(rep)
		if rep.Error != "" {
			// The error headers too, as every request/reply subject's.
			_ = bus.RespondBadRequest(m, rep.Error, b)
			return
		}
		_ = n.nc.Publish(m.Reply, b)
	}
}

func (n *Node) onStatus(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	n.mu.Lock()
	st := n.statusLocked()
	n.mu.Unlock()
	b, _ := json.Marshal(st)
	_ = n.nc.Publish(m.Reply, b)
}
