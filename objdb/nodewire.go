package objdb

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// The node-key frames: what a Store sends its node's keeper (writes), what
// the keeper publishes (the node feed) and how a Store catches up (sync).
// They are fixed-layout binary, big-endian, parsed without reflection: a
// node-key set is the hot path of cmap_set.

const nodeWireVersion = 1

// Write operations.
const (
	opSet    = 1
	opDelete = 2
	opAdjust = 3
	// opRestore hands a new keeper that has not loaded the node's stored
	// keys one key a copy held under the previous keeper: taken only if
	// the keeper has nothing of the key yet (Keeper.applyLocked).
	opRestore = 4
)

// nodeWrite is one write of a node key by one Store (its writer id), in
// the writer's order (wseq).
type nodeWrite struct {
	WSeq  uint64
	Op    uint8
	Key   string
	Value Value // opSet, opRestore
	Step  int64 // opAdjust
}

// appendWriteBatch encodes writes of writer: version u8, writer u64, base
// u64 (the writer's oldest unconfirmed wseq: everything below it the
// writer has seen applied), count u32, then per write: wseq u64, op u8, len(key) u16, key, type u8,
// len(data) u32, data, step i64.
func appendWriteBatch(b []byte, writer, base uint64, ws []nodeWrite) []byte {
	b = append(b, nodeWireVersion)
	b = binary.BigEndian.AppendUint64(b, writer)
	b = binary.BigEndian.AppendUint64(b, base)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ws)))
	for _, w := range ws {
		b = binary.BigEndian.AppendUint64(b, w.WSeq)
		b = append(b, w.Op)
		b = binary.BigEndian.AppendUint16(b, uint16(len(w.Key)))
		b = append(b, w.Key...)
		b = append(b, byte(w.Value.Type))
		b = binary.BigEndian.AppendUint32(b, uint32(len(w.Value.Data)))
		b = append(b, w.Value.Data...)
		b = binary.BigEndian.AppendUint64(b, uint64(w.Step))
	}
	return b
}

var errShortFrame = errors.New("objdb: truncated node-key frame")

// reader walks a frame; the first error sticks and every later read
// returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = errShortFrame
		return nil
	}
	p := r.b[:n:n] // an append to it never writes over what follows
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// bytes copies: frames are the subscription's buffers, values outlive them.
func (r *reader) bytes(n int) []byte {
	p := r.take(n)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

func (r *reader) version() {
	if v := r.u8(); r.err == nil && v != nodeWireVersion {
		r.err = fmt.Errorf("objdb: node-key frame version %d, want %d", v, nodeWireVersion)
	}
}

func decodeWriteBatch(b []byte) (writer, base uint64, ws []nodeWrite, err error) {
	r := &reader{b: b}
	r.version()
	writer = r.u64()
	base = r.u64()
	n := r.u32()
	if r.err == nil && int(n) > len(r.b)/24 {
		return 0, 0, nil, errShortFrame
	}
	ws = make([]nodeWrite, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		var w nodeWrite
		w.WSeq = r.u64()
		w.Op = r.u8()
		w.Key = string(r.take(int(r.u16())))
		w.Value.Type = Type(r.u8())
		w.Value.Data = r.bytes(int(r.u32()))
		w.Step = int64(r.u64())
		ws = append(ws, w)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("objdb: %d bytes after a write batch", len(r.b))
	}
	return writer, base, ws, r.err
}

// nodeRecord is one applied write, as the node feed carries it: the
// writer and its wseq (so the writer knows the write is in), what
// happened to the key (Kind 0: nothing changed), the status of the write
// (an adjust of a missing key fails) and the key's new value.
type nodeRecord struct {
	Seq    uint64
	Writer uint64
	WSeq   uint64
	Kind   EventKind // 0 when the view did not change
	Status cswire.Error
	Key    string
	New    Value // the value after the write (none for a delete)
}

// appendRecords encodes a feed message: version u8, epoch u64, first seq
// u64, last seq u64 (a heartbeat carries no records and last = the
// keeper's seq), count u32, then per record: writer u64, wseq u64, kind
// u8, status i32, len(key) u16, key, type u8, len(data) u32, data.
// Records are consecutive from first.
func appendRecords(b []byte, epoch, last uint64, rs []nodeRecord) []byte {
	b = append(b, nodeWireVersion)
	b = binary.BigEndian.AppendUint64(b, epoch)
	first := last + 1
	if len(rs) > 0 {
		first = rs[0].Seq
	}
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint64(b, last)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rs)))
	for _, rec := range rs {
		b = appendRecord(b, rec)
	}
	return b
}

func appendRecord(b []byte, rec nodeRecord) []byte {
	b = binary.BigEndian.AppendUint64(b, rec.Writer)
	b = binary.BigEndian.AppendUint64(b, rec.WSeq)
	b = append(b, byte(rec.Kind))
	b = binary.BigEndian.AppendUint32(b, uint32(rec.Status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(rec.Key)))
	b = append(b, rec.Key...)
	b = append(b, byte(rec.New.Type))
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec.New.Data)))
	return append(b, rec.New.Data...)
}

// recordRef is a feed record as decodeFeedRefs leaves it: Key and Data
// alias the frame (no copy); the copy owns them only once it keeps them.
type recordRef struct {
	Seq    uint64
	Writer uint64
	WSeq   uint64
	Kind   EventKind
	Status cswire.Error
	Key    []byte
	Type   Type
	Data   []byte
}

// decodeFeedRefs decodes a feed message into refs (reused: its array is
// kept between messages), its records' keys and values aliasing b. Under
// a stream of writes a copy's node feed is mostly its own writes coming
// back, whose key and value it holds already (applyFeed): copying each
// record's key and value out of the frame cost two allocations per set.
func decodeFeedRefs(b []byte, refs []recordRef) (epoch, last uint64, out []recordRef, err error) {
	r := &reader{b: b}
	r.version()
	epoch = r.u64()
	first := r.u64()
	last = r.u64()
	n := r.u32()
	if r.err == nil && int(n) > len(r.b)/28 {
		return 0, 0, refs[:0], errShortFrame
	}
	out = refs[:0]
	for i := uint32(0); i < n && r.err == nil; i++ {
		rec := recordRef{Seq: first + uint64(i)}
		rec.Writer = r.u64()
		rec.WSeq = r.u64()
		rec.Kind = EventKind(r.u8())
		rec.Status = cswire.Error(int32(r.u32()))
		rec.Key = r.take(int(r.u16()))
		rec.Type = Type(r.u8())
		rec.Data = r.take(int(r.u32()))
		out = append(out, rec)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("objdb: %d bytes after a feed message", len(r.b))
	}
	if r.err == nil && n > 0 && first+uint64(n)-1 != last {
		r.err = fmt.Errorf("objdb: feed message of %d records from %d claims last %d", n, first, last)
	}
	return epoch, last, out, r.err
}

// feedMsg is a decoded feed message.
type feedMsg struct {
	Epoch   uint64
	Last    uint64
	Records []nodeRecord
}

func decodeRecords(b []byte) (feedMsg, error) {
	r := &reader{b: b}
	r.version()
	m := feedMsg{Epoch: r.u64()}
	first := r.u64()
	m.Last = r.u64()
	n := r.u32()
	if r.err == nil && int(n) > len(r.b)/28 {
		return feedMsg{}, errShortFrame
	}
	m.Records = make([]nodeRecord, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		rec := nodeRecord{Seq: first + uint64(i)}
		rec.Writer = r.u64()
		rec.WSeq = r.u64()
		rec.Kind = EventKind(r.u8())
		rec.Status = cswire.Error(int32(r.u32()))
		rec.Key = string(r.take(int(r.u16())))
		rec.New.Type = Type(r.u8())
		rec.New.Data = r.bytes(int(r.u32()))
		m.Records = append(m.Records, rec)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("objdb: %d bytes after a feed message", len(r.b))
	}
	if r.err == nil && n > 0 && first+uint64(n)-1 != m.Last {
		r.err = fmt.Errorf("objdb: feed message of %d records from %d claims last %d", n, first, m.Last)
	}
	return m, r.err
}

// A sync request asks the keeper for what a Store lacks: the records
// after From in epoch Epoch when the keeper still has them, else a
// snapshot page of the keys after After. Request: version u8, writer
// u64, epoch u64, from u64, snapshot u8, len(after) u16, after.
type syncRequest struct {
	Writer uint64 // the asking Store's writer id
	Epoch  uint64
	From   uint64 // the last seq the Store applied; records from From+1
	After  string // snapshot paging: keys after this one
	// Snapshot asks for a snapshot page whatever the log holds.
	Snapshot bool
}

func appendSyncRequest(b []byte, q syncRequest) []byte {
	b = append(b, nodeWireVersion)
	b = binary.BigEndian.AppendUint64(b, q.Writer)
	b = binary.BigEndian.AppendUint64(b, q.Epoch)
	b = binary.BigEndian.AppendUint64(b, q.From)
	snap := byte(0)
	if q.Snapshot {
		snap = 1
	}
	b = append(b, snap)
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.After)))
	return append(b, q.After...)
}

func decodeSyncRequest(b []byte) (syncRequest, error) {
	r := &reader{b: b}
	r.version()
	q := syncRequest{Writer: r.u64(), Epoch: r.u64(), From: r.u64(), Snapshot: r.u8() == 1}
	q.After = string(r.take(int(r.u16())))
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("objdb: %d bytes after a sync request", len(r.b))
	}
	return q, r.err
}

// Sync reply kinds.
const (
	syncRecords  = 1
	syncSnapshot = 2
)

// syncReply is either records (a feed message's records) or one snapshot
// page: the keys after the request's After, in key order, taken when the
// keeper's seq was Seq; More says whether keys follow. Loaded says whether
// the keeper has loaded the keys a previous run of the node left in
// JetStream. WriterNext is the next wseq the keeper expects of the asking
// writer (0: unknown to it): every write below it is applied. Layout:
// version u8, kind u8, epoch u64, seq u64, loaded u8, writer next u64,
// then for records a feed message's body (as appendRecords, after its
// version byte) and for a snapshot: more u8, count u32, per key: len(key)
// u16, key, type u8, len(data) u32, data.
type syncReply struct {
	Kind       uint8
	Epoch      uint64
	Seq        uint64
	Loaded     bool
	WriterNext uint64
	Records    feedMsg
	More       bool
	Keys       []Entry
}

func appendSyncReply(b []byte, s syncReply) []byte {
	b = append(b, nodeWireVersion, s.Kind)
	b = binary.BigEndian.AppendUint64(b, s.Epoch)
	b = binary.BigEndian.AppendUint64(b, s.Seq)
	b = append(b, boolByte(s.Loaded))
	b = binary.BigEndian.AppendUint64(b, s.WriterNext)
	switch s.Kind {
	case syncRecords:
		b = append(b, appendRecords(nil, s.Epoch, s.Records.Last, s.Records.Records)[1:]...)
	case syncSnapshot:
		b = append(b, boolByte(s.More))
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.Keys)))
		for _, e := range s.Keys {
			b = binary.BigEndian.AppendUint16(b, uint16(len(e.Key)))
			b = append(b, e.Key...)
			b = append(b, byte(e.Value.Type))
			b = binary.BigEndian.AppendUint32(b, uint32(len(e.Value.Data)))
			b = append(b, e.Value.Data...)
		}
	}
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func decodeSyncReply(b []byte) (syncReply, error) {
	r := &reader{b: b}
	r.version()
	s := syncReply{Kind: r.u8(), Epoch: r.u64(), Seq: r.u64(), Loaded: r.u8() == 1, WriterNext: r.u64()}
	if r.err != nil {
		return syncReply{}, r.err
	}
	switch s.Kind {
	case syncRecords:
		m, err := decodeRecords(append([]byte{nodeWireVersion}, r.b...))
		if err != nil {
			return syncReply{}, err
		}
		s.Records = m
		return s, nil
	case syncSnapshot:
		s.More = r.u8() == 1
		n := r.u32()
		if r.err == nil && int(n) > len(r.b)/7 {
			return syncReply{}, errShortFrame
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			var e Entry
			e.Key = string(r.take(int(r.u16())))
			e.Value.Type = Type(r.u8())
			e.Value.Data = r.bytes(int(r.u32()))
			e.Scope = ScopeNode
			s.Keys = append(s.Keys, e)
		}
		if r.err == nil && len(r.b) != 0 {
			r.err = fmt.Errorf("objdb: %d bytes after a snapshot page", len(r.b))
		}
		return s, r.err
	}
	return syncReply{}, fmt.Errorf("objdb: sync reply of unknown kind %d", s.Kind)
}
