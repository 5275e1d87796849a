package totem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// RingID names a ring (a view): its representative (the coordinator that
// installed it, the lowest node id of the view) and a sequence that grows
// strictly from ring to ring, as corosync's memb_ring_id does.
type RingID struct {
	Rep uint32 `json:"rep"`
	Seq uint64 `json:"seq"`
}

func (r RingID) String() string {
	return strconv.FormatUint(uint64(r.Rep), 10) + "." + strconv.FormatUint(r.Seq, 10)
}

// IsZero reports the ring id of a node that has not installed a ring yet.
func (r RingID) IsZero() bool { return r == RingID{} }

// MsgID names a multicast message cluster-wide: the sending node, the
// origin on that node (0 for the bus process itself, a random id per Client)
// and the origin's own counter.
type MsgID struct {
	Node   uint32 `json:"node"`
	Origin uint32 `json:"origin"`
	Seq    uint64 `json:"seq"`
}

func (id MsgID) String() string {
	return fmt.Sprintf("%d/%d/%d", id.Node, id.Origin, id.Seq)
}

// Message is one delivered multicast message.
type Message struct {
	// Ring is the ring the message was delivered in; Pos its position in
	// that ring's total order (1, 2, …).
	Ring RingID
	Pos  uint64
	// ID says who sent it: ID.Node is the sender's node id.
	ID      MsgID
	Service string
	// Payload belongs to the receiver (it is not reused).
	Payload []byte
	// Skipped: the message came without its payload (nil), because its
	// sender made it droppable and this client skips droppable payloads
	// (Client.SkipPayloads).
	Skipped bool
}

// ConfChgType tells a transitional configuration from a regular one.
type ConfChgType uint8

const (
	// Transitional is delivered after the last message of the old ring:
	// the members that move together from the old ring to the new one.
	Transitional ConfChgType = 1
	// Regular is the new ring's membership; every message delivered after
	// it belongs to the new ring.
	Regular ConfChgType = 2
)

func (t ConfChgType) String() string {
	switch t {
	case Transitional:
		return "transitional"
	case Regular:
		return "regular"
	}
	return "unknown"
}

// MarshalText spells the type in JSON.
func (t ConfChgType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads the JSON spelling.
func (t *ConfChgType) UnmarshalText(b []byte) error {
	switch string(b) {
	case "transitional":
		*t = Transitional
	case "regular":
		*t = Regular
	default:
		return fmt.Errorf("unknown configuration change type %q", b)
	}
	return nil
}

// ConfChg is a configuration change as corosync delivers it: transitional
// (members = the old ring's members that stay, left = the others, joined
// empty) then regular (members = the new ring, joined = those not in the
// transitional configuration, left empty).
type ConfChg struct {
	Type    ConfChgType `json:"type"`
	Ring    RingID      `json:"ring"`
	Members []uint32    `json:"members"`
	Joined  []uint32    `json:"joined"`
	Left    []uint32    `json:"left"`
}

// ProtocolVersion is the version of totem's wire protocol: the layout of
// every frame and message on the totem subjects (wire.go) and of the
// heartbeat. Bump it with any change to one of them that a node of the
// previous build would misread: every heartbeat carries it (Heartbeat.Proto)
// and a node refuses a peer whose heartbeat says another version (it is
// never reachable, so never in a ring with it), since such a peer would
// take this build's frames for something else (an older build read a
// droppable message's key as its payload's first bytes). A build whose
// heartbeat has no version at all speaks version 0: every build before
// the version was carried. Whatever else changes, a heartbeat keeps "node"
// and "proto" as they are, so that every build can tell whom it refuses.
//
// 1: the version carried in heartbeats; droppable messages' data and
// submit frames carry a key after the service name.
// 2: the heartbeat's fields but node and proto in a binary body, inside a
// JSON envelope that keeps node and proto (hbwire.go).
const ProtocolVersion = 2

// Heartbeat is what every node publishes on TotemHeartbeat every
// Config.Heartbeat (and at once on a state change). On the wire since
// protocol version 2: a JSON envelope of Node and Proto around a binary
// body of the rest (hbwire.go); the JSON names below are what builds
// before it sent, and what this one reads of them.
type Heartbeat struct {
	Node uint32 `json:"node"`
	// Proto is the sender's ProtocolVersion; absent (0) from a build
	// before it was carried.
	Proto uint32 `json:"proto,omitempty"`
	// Inc is a random incarnation: a restarted node has a new one.
	Inc   uint64 `json:"inc"`
	Ring  RingID `json:"ring"`
	State string `json:"state"` // "operational", "gather", "recovery"
	// Delivered is the last position delivered in Ring (stability, and
	// so the log's garbage collection); Ordered the highest position
	// known ordered in Ring (a member behind it asks for a
	// retransmission).
	Delivered uint64 `json:"delivered"`
	Ordered   uint64 `json:"ordered"`
	// MaxSeq is the highest ring sequence the node has seen.
	MaxSeq  uint64   `json:"max_seq"`
	Members []uint32 `json:"members,omitempty"`
	Addr    string   `json:"addr,omitempty"`
	// Hears is the sender's reachable set (itself and every node it heard
	// within totem.token): views are formed only of nodes that all hear
	// each other, so that a mesh still forming (or one broken link) does
	// not make nodes install the same members again and again. Absent
	// from an older node: taken as hearing everyone.
	Hears []uint32 `json:"hears,omitempty"`
	// ConfigVersion is the sender's totem.config_version
	// (runtime.members.<id>.config_version); absent when 0.
	ConfigVersion uint64 `json:"config_version,omitempty"`
	// SeqEpoch, Seqr and SeqFrom: the ring's last sequencer handoff the
	// sender knows (its number in the ring, the node it named and the
	// first position that node orders), for a node that missed the order
	// record that carried it. Absent before the ring's first handoff.
	SeqEpoch uint32 `json:"seq_epoch,omitempty"`
	Seqr     uint32 `json:"seqr,omitempty"`
	SeqFrom  uint64 `json:"seq_from,omitempty"`
	// Token is the sender's totem.token in ms, which sets its heartbeat
	// period: its peers wait for it at least that long (Node.expiry), so
	// that a node whose token was raised at run time (Node.SetTimings)
	// and now beats more slowly is not taken for gone by peers still on
	// the shorter one. Absent from an older node: the peer's own token.
	Token uint32 `json:"token,omitempty"`
}

// PropID names one proposal: the proposer and its counter.
type PropID struct {
	Node uint32 `json:"node"`
	N    uint64 `json:"n"`
}

// MembMsg is a view-agreement message on TotemMemb.
type MembMsg struct {
	Type string `json:"type"` // "propose", "ack", "commit"
	From uint32 `json:"from"`
	PID  PropID `json:"pid"`
	// Members of the proposed (propose, commit) view.
	Members []uint32 `json:"members,omitempty"`
	// ack: the member's old ring, what it delivered there and what it
	// holds beyond that (positions it has ordered with their payloads).
	OldRing    RingID   `json:"old_ring,omitzero"`
	OldMembers []uint32 `json:"old_members,omitempty"`
	Delivered  uint64   `json:"delivered,omitempty"`
	Held       []uint64 `json:"held,omitempty"`
	MaxSeq     uint64   `json:"max_seq,omitempty"`
	Inc        uint64   `json:"inc,omitempty"`
	// Orphans are the member's own messages multicast in the old ring and
	// not delivered by it: their order may be lost with the sequencer.
	Orphans []MsgID `json:"orphans,omitempty"`
	// commit: the new ring and, per old ring, the recovery plan.
	Ring   RingID  `json:"ring,omitzero"`
	Groups []Group `json:"groups,omitempty"`
	// Incs are the members' incarnations, in Members' order: a member
	// whose heartbeat shows another one has restarted.
	Incs []uint64 `json:"incs,omitempty"`
}

// Group is the recovery plan of the members that come from one old ring:
// each delivers that ring's messages up to UpTo, fetching the positions it
// lacks from the holders named by Segments; then the transitional
// configuration.
type Group struct {
	OldRing    RingID    `json:"old_ring"`
	OldMembers []uint32  `json:"old_members"`
	Members    []uint32  `json:"members"`
	UpTo       uint64    `json:"up_to"`
	Segments   []Segment `json:"segments,omitempty"`
	// Orphans are the members' own messages of the old ring that they
	// sent but may not find at a position up to UpTo: those not found
	// there are delivered, in this order, after the transitional
	// configuration (corosync delivers what follows a gap there too), so
	// that a sender that stays delivers its own message, once.
	Orphans []MsgID `json:"orphans,omitempty"`
}

// Segment says that Holder has positions From..To (inclusive).
type Segment struct {
	Holder uint32 `json:"holder"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
}

// FetchRequest asks a node for ordered messages of Ring, positions From..To.
type FetchRequest struct {
	Ring RingID `json:"ring"`
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// IDs asks a sender for its own messages by id instead (orphans);
	// they come back with position 0.
	IDs []MsgID `json:"ids,omitempty"`
}

var errShort = errors.New("totem: truncated frame")

const (
	ringLen = 12
	idLen   = 16
)

func putRing(b []byte, r RingID) {
	binary.BigEndian.PutUint32(b, r.Rep)
	binary.BigEndian.PutUint64(b[4:], r.Seq)
}

func getRing(b []byte) RingID {
	return RingID{Rep: binary.BigEndian.Uint32(b), Seq: binary.BigEndian.Uint64(b[4:])}
}

func putID(b []byte, id MsgID) {
	binary.BigEndian.PutUint32(b, id.Node)
	binary.BigEndian.PutUint32(b[4:], id.Origin)
	binary.BigEndian.PutUint64(b[8:], id.Seq)
}

func getID(b []byte) MsgID {
	return MsgID{Node: binary.BigEndian.Uint32(b), Origin: binary.BigEndian.Uint32(b[4:]), Seq: binary.BigEndian.Uint64(b[8:])}
}

// Data frame (TotemData): ring(12) id(16) prev(8) svclen(1) svc payload.
// prev is the origin's previous message sent in this ring (0: none): the
// sequencer orders each origin's messages in the order they were sent.
// The high bit of svclen (dataDroppable) says the sender let receivers
// skip the payload (a droppable message); service names are at most
// maxService bytes, so the bit is never part of a length. A droppable
// message's key(4) follows svc, before the payload.
const dataHdr = ringLen + idLen + 8 + 1

// dataDroppable is svclen's flag bit: the message is droppable.
const dataDroppable = 0x80

// maxService is the longest service name: svclen keeps its high bit for
// dataDroppable.
const maxService = 127

type dataFrame struct {
	ring      RingID
	id        MsgID
	prev      uint64
	service   string
	payload   []byte
	droppable bool
	key       uint32 // a droppable message's (Client.McastPartsDroppable)
}

func appendData(dst []byte, f *dataFrame) []byte {
	var h [dataHdr]byte
	putRing(h[:], f.ring)
	putID(h[ringLen:], f.id)
	binary.BigEndian.PutUint64(h[ringLen+idLen:], f.prev)
	h[dataHdr-1] = byte(len(f.service))
	if f.droppable {
		h[dataHdr-1] |= dataDroppable
	}
	dst = append(dst, h[:]...)
	dst = append(dst, f.service...)
	if f.droppable {
		dst = binary.BigEndian.AppendUint32(dst, f.key)
	}
	return append(dst, f.payload...)
}

func parseData(b []byte) (dataFrame, error) {
	var f dataFrame
	if len(b) < dataHdr {
		return f, errShort
	}
	f.ring = getRing(b)
	f.id = getID(b[ringLen:])
	f.prev = binary.BigEndian.Uint64(b[ringLen+idLen:])
	f.droppable = b[dataHdr-1]&dataDroppable != 0
	n := int(b[dataHdr-1] &^ dataDroppable)
	b = b[dataHdr:]
	if len(b) < n {
		return f, errShort
	}
	f.service, b = string(b[:n]), b[n:]
	if f.droppable {
		if len(b) < 4 {
			return f, errShort
		}
		f.key, b = binary.BigEndian.Uint32(b), b[4:]
	}
	f.payload = b
	return f, nil
}

// Submit frame (TotemMcast): origin(4) seq(8) flags(1) svclen(1) svc
// payload; with submitDroppable, the message's key(4) between svc and
// payload.
const submitHdr = 14

// submitKept (flags): the origin keeps the payload until its own message
// is delivered back, so the node's bus may deliver it to the origin without
// its payload (a kept deliver frame) when the origin is the only client
// receiving the service on the node.
const submitKept = 1

// submitDroppable (flags): the message is droppable, with a key —
// another node's bus does not deliver it at all to a service none of
// whose listeners on that node wants its key (Client.WantKeys), and
// delivers it without its payload (a skipped deliver frame, droppableMin
// bytes and more) to a service whose every listener there said it has no
// use for droppable payloads (Client.SkipPayloads).
const submitDroppable = 2

func appendSubmit(dst []byte, origin uint32, seq uint64, flags byte, service string, key uint32, payload []byte) []byte {
	var h [submitHdr]byte
	binary.BigEndian.PutUint32(h[:], origin)
	binary.BigEndian.PutUint64(h[4:], seq)
	h[12] = flags
	h[13] = byte(len(service))
	dst = append(dst, h[:]...)
	dst = append(dst, service...)
	if flags&submitDroppable != 0 {
		dst = binary.BigEndian.AppendUint32(dst, key)
	}
	return append(dst, payload...)
}

// submitFrame is a parsed submit frame.
type submitFrame struct {
	origin  uint32
	seq     uint64
	flags   byte
	service string
	key     uint32
	payload []byte
}

func parseSubmit(b []byte) (submitFrame, error) {
	var f submitFrame
	if len(b) < submitHdr {
		return f, errShort
	}
	f.origin = binary.BigEndian.Uint32(b)
	f.seq = binary.BigEndian.Uint64(b[4:])
	f.flags = b[12]
	n := int(b[13])
	b = b[submitHdr:]
	if len(b) < n {
		return f, errShort
	}
	f.service, b = string(b[:n]), b[n:]
	if f.flags&submitDroppable != 0 {
		if len(b) < 4 {
			return f, errShort
		}
		f.key, b = binary.BigEndian.Uint32(b), b[4:]
	}
	f.payload = b
	return f, nil
}

// Order record (TotemOrder): ring(12) first(8) count(4) then count ids,
// and, when the sequencer hands the ordering on with this record, the
// handoff: epoch(4) to(4) (docs/totem.md, "Sequencer handoff").
func appendOrder(dst []byte, ring RingID, first uint64, ids []MsgID, h handoff) []byte {
	var hd [ringLen + 12]byte
	putRing(hd[:], ring)
	binary.BigEndian.PutUint64(hd[ringLen:], first)
	binary.BigEndian.PutUint32(hd[ringLen+8:], uint32(len(ids)))
	dst = append(dst, hd[:]...)
	var e [idLen]byte
	for _, id := range ids {
		putID(e[:], id)
		dst = append(dst, e[:]...)
	}
	if h.to != 0 {
		dst = binary.BigEndian.AppendUint32(dst, h.epoch)
		dst = binary.BigEndian.AppendUint32(dst, h.to)
	}
	return dst
}

// handoff names the node that orders the ring's messages after an order
// record's last position, and the handoff's number in the ring (epoch).
// Zero to: no handoff.
type handoff struct {
	epoch, to uint32
}

func parseOrder(b []byte, ids []MsgID) (ring RingID, first uint64, out []MsgID, h handoff, err error) {
	if len(b) < ringLen+12 {
		return ring, 0, nil, h, errShort
	}
	ring = getRing(b)
	first = binary.BigEndian.Uint64(b[ringLen:])
	n := int(binary.BigEndian.Uint32(b[ringLen+8:]))
	b = b[ringLen+12:]
	switch len(b) {
	case n * idLen:
	case n*idLen + 8:
		h.epoch = binary.BigEndian.Uint32(b[n*idLen:])
		h.to = binary.BigEndian.Uint32(b[n*idLen+4:])
	default:
		return ring, 0, nil, h, errShort
	}
	out = ids[:0]
	for i := range n {
		out = append(out, getID(b[i*idLen:]))
	}
	return ring, first, out, h, nil
}

// Deliver frame (TotemDeliver): ring(12) pos(8) id(16) payload.
const deliverHdr = ringLen + 8 + idLen

func appendDeliver(dst []byte, m *Message) []byte {
	var h [deliverHdr]byte
	putRing(h[:], m.Ring)
	binary.BigEndian.PutUint64(h[ringLen:], m.Pos)
	putID(h[ringLen+8:], m.ID)
	dst = append(dst, h[:]...)
	return append(dst, m.Payload...)
}

// KeptHeader marks a deliver frame published without its payload: the
// message is its origin's own, submitted with the payload kept
// (ClientOptions.KeepOwn), and the origin is the only client that named
// the service to its node's bus. Its value is "1".
const KeptHeader = "Corobus-Kept"

// SkippedHeader marks a deliver frame published without its payload
// because the message is droppable (Client.McastPartsDroppable), from
// another node, and every client that named the service to this node's
// bus skips droppable payloads (Client.SkipPayloads). Its value is "1".
const SkippedHeader = "Corobus-Skipped"

// ParseDeliver decodes a TotemDeliver frame; service is the subject's last
// token. The payload aliases b.
func ParseDeliver(service string, b []byte) (Message, error) {
	if len(b) < deliverHdr {
		return Message{}, errShort
	}
	return Message{
		Ring:    getRing(b),
		Pos:     binary.BigEndian.Uint64(b[ringLen:]),
		ID:      getID(b[ringLen+8:]),
		Service: service,
		Payload: b[deliverHdr:],
	}, nil
}

// entry is one ordered message in a ring's log.
type entry struct {
	id      MsgID
	service string
	payload []byte
	have    bool // the payload arrived
	// prev is the origin's previous message in the ring (the data
	// frame's): kept with an unordered payload so that a node taking
	// over the ordering orders each origin's messages in send order.
	prev uint64
	// droppable: the sender lets this node skip the payload for listeners
	// that do not want it, and the message for listeners that do not want
	// its key (submitDroppable). Not carried by fetch replies: a fetched
	// message is delivered whole, the safe side.
	droppable bool
	key       uint32
}

// Fetch reply: count(4) then per entry pos(8) id(16) svclen(1) svc
// paylen(4) payload.
func appendFetchEntry(dst []byte, pos uint64, e *entry) []byte {
	var h [8 + idLen + 1]byte
	binary.BigEndian.PutUint64(h[:], pos)
	putID(h[8:], e.id)
	h[8+idLen] = byte(len(e.service))
	dst = append(dst, h[:]...)
	dst = append(dst, e.service...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.payload)))
	return append(dst, e.payload...)
}

type fetched struct {
	pos uint64
	e   entry
}

func parseFetch(b []byte) ([]fetched, error) {
	var out []fetched
	for len(b) > 0 {
		if len(b) < 8+idLen+1 {
			return nil, errShort
		}
		f := fetched{pos: binary.BigEndian.Uint64(b)}
		f.e.id = getID(b[8:])
		n := int(b[8+idLen])
		b = b[8+idLen+1:]
		if len(b) < n+4 {
			return nil, errShort
		}
		f.e.service = string(b[:n])
		pl := int(binary.BigEndian.Uint32(b[n:]))
		b = b[n+4:]
		if len(b) < pl {
			return nil, errShort
		}
		f.e.payload = slices.Clone(b[:pl])
		f.e.have = true
		b = b[pl:]
		out = append(out, f)
	}
	return out, nil
}
