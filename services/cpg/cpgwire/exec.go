package cpgwire

import (
	"encoding/binary"
	"fmt"

	"github.com/corobus/corobus/bus/totem"
)

// Frames of CPG traffic on the ordered multicast (totem service "cpg",
// published on <prefix>.totem.<node>.deliver.cpg). They play the part of
// corosync's req_exec_cpg_* messages; the layout is corobus's own,
// big-endian like totem's frames. The sending node is the totem message's
// id.node. Every frame starts with its kind:
//
//	procjoin, procleave: kind, pid u32, reason u32, len(group) u8, group
//	mcast:               kind, flags u8, pid u32, source u64, len(group) u8, group, data
//	partial:             kind, flags u8, pid u32, source u64, type u8, msglen u32, len(group) u8, group, data
//	chunk:               kind, flags u8, source u64, data
//	joinlist:            kind, ring.rep u32, ring.seq u64, epoch (node u32, origin u32, seq u64), count u32, count × (pid u32, len(group) u8, group)
//	resync:              kind, ring.rep u32, ring.seq u64
//
// A message too large for one totem message is sent as its mcast or
// partial frame with FlagMore and the first part of its data, then chunk
// frames of the same source, the last without FlagMore; a receiver joins
// them before acting on the message. source names the sending connection
// (unique on its node).
const (
	ExecProcJoin  uint8 = 1
	ExecProcLeave uint8 = 2
	ExecMcast     uint8 = 3
	ExecPartial   uint8 = 4
	ExecChunk     uint8 = 5
	ExecJoinList  uint8 = 6
	ExecResync    uint8 = 7
	execKinds           = 8
)

// FlagMore says that chunk frames of the same source carry the rest of
// the data.
const FlagMore uint8 = 1

// JoinEntry is one local process of a node in its joinlist.
type JoinEntry struct {
	PID   uint32
	Group Name
}

// Exec is a decoded CPG frame. Which fields are set depends on Kind.
type Exec struct {
	Kind     uint8
	Flags    uint8
	PID      uint32
	Reason   uint32 // procjoin, procleave
	Group    Name
	Source   uint64 // mcast, partial, chunk
	FragType uint32 // partial
	MsgLen   uint32 // partial: the whole message's length
	// Data aliases the frame.
	Data    []byte
	Ring    totem.RingID // joinlist, resync
	Epoch   totem.MsgID  // joinlist
	Entries []JoinEntry  // joinlist
}

func appendName(dst []byte, n Name) []byte {
	if len(n) > MaxNameLength {
		n = n[:MaxNameLength]
	}
	dst = append(dst, byte(len(n)))
	return append(dst, n...)
}

func appendRing(dst []byte, r totem.RingID) []byte {
	dst = binary.BigEndian.AppendUint32(dst, r.Rep)
	return binary.BigEndian.AppendUint64(dst, r.Seq)
}

// AppendExec appends frame e (its Data included).
func AppendExec(dst []byte, e *Exec) []byte {
	return append(AppendExecHeader(dst, e), e.Data...)
}

// AppendExecHeader appends frame e without its Data: the data of an
// mcast, partial or chunk frame follows the header as it is.
func AppendExecHeader(dst []byte, e *Exec) []byte {
	dst = append(dst, e.Kind)
	be := binary.BigEndian
	switch e.Kind {
	case ExecProcJoin, ExecProcLeave:
		dst = be.AppendUint32(dst, e.PID)
		dst = be.AppendUint32(dst, e.Reason)
		dst = appendName(dst, e.Group)
	case ExecMcast:
		dst = append(dst, e.Flags)
		dst = be.AppendUint32(dst, e.PID)
		dst = be.AppendUint64(dst, e.Source)
		dst = appendName(dst, e.Group)
	case ExecPartial:
		dst = append(dst, e.Flags)
		dst = be.AppendUint32(dst, e.PID)
		dst = be.AppendUint64(dst, e.Source)
		dst = append(dst, byte(e.FragType))
		dst = be.AppendUint32(dst, e.MsgLen)
		dst = appendName(dst, e.Group)
	case ExecChunk:
		dst = append(dst, e.Flags)
		dst = be.AppendUint64(dst, e.Source)
	case ExecJoinList:
		dst = appendRing(dst, e.Ring)
		dst = be.AppendUint32(dst, e.Epoch.Node)
		dst = be.AppendUint32(dst, e.Epoch.Origin)
		dst = be.AppendUint64(dst, e.Epoch.Seq)
		dst = be.AppendUint32(dst, uint32(len(e.Entries)))
		for _, je := range e.Entries {
			dst = be.AppendUint32(dst, je.PID)
			dst = appendName(dst, je.Group)
		}
	case ExecResync:
		dst = appendRing(dst, e.Ring)
	}
	return dst
}

// ExecHeaderSize is the largest frame header before an mcast's or a
// partial's data: what a totem message must hold besides the data.
const ExecHeaderSize = 1 + 1 + 4 + 8 + 1 + 4 + 1 + MaxNameLength

// execReader reads a frame's fields without ever reading past it.
type execReader struct {
	b   []byte
	err error
}

func (r *execReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = ErrShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *execReader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *execReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *execReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *execReader) name() Name {
	n := int(r.u8())
	if n > MaxNameLength && r.err == nil {
		r.err = ErrNameTooLong
	}
	return Name(r.take(n))
}

// end checks that nothing follows a fixed-size frame.
func (r *execReader) end() {
	if r.err == nil && len(r.b) != 0 {
		r.err = ErrSize
	}
}

func (r *execReader) ring() totem.RingID {
	return totem.RingID{Rep: r.u32(), Seq: r.u64()}
}

// DecodeExec decodes a CPG frame.
func DecodeExec(b []byte) (Exec, error) {
	r := &execReader{b: b}
	e := Exec{Kind: r.u8()}
	switch e.Kind {
	case ExecProcJoin, ExecProcLeave:
		e.PID, e.Reason, e.Group = r.u32(), r.u32(), r.name()
		r.end()
	case ExecMcast:
		e.Flags, e.PID, e.Source, e.Group = r.u8(), r.u32(), r.u64(), r.name()
		e.Data = r.b
	case ExecPartial:
		e.Flags, e.PID, e.Source = r.u8(), r.u32(), r.u64()
		e.FragType, e.MsgLen, e.Group = uint32(r.u8()), r.u32(), r.name()
		e.Data = r.b
		if r.err == nil && (e.FragType < PartialFirst || e.FragType > PartialLast) {
			r.err = fmt.Errorf("cpg partial frame of type %d: %w", e.FragType, ErrSize)
		}
	case ExecChunk:
		e.Flags, e.Source = r.u8(), r.u64()
		e.Data = r.b
	case ExecJoinList:
		e.Ring = r.ring()
		e.Epoch = totem.MsgID{Node: r.u32(), Origin: r.u32(), Seq: r.u64()}
		n := r.u32()
		// Each entry takes at least 5 bytes: a count beyond that is a lie.
		if r.err == nil && uint64(n)*5 > uint64(len(r.b)) {
			r.err = ErrSize
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			e.Entries = append(e.Entries, JoinEntry{PID: r.u32(), Group: r.name()})
		}
		r.end()
	case ExecResync:
		e.Ring = r.ring()
		r.end()
	default:
		return e, fmt.Errorf("cpg frame of kind %d: %w", e.Kind, ErrUnknown)
	}
	if r.err != nil {
		return e, r.err
	}
	return e, nil
}
