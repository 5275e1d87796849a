package totem

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// A heartbeat on the wire (since protocol version 2) is a JSON envelope
// around a binary body:
//
//	{"node":<id>,"proto":<version>,"hb":"<base64 of the body>"}
//
// The envelope keeps "node" and "proto" readable by every build, as
// ProtocolVersion promises: a build of version 1, which decodes the whole
// heartbeat as JSON, reads them (and ignores "hb") and refuses this one by
// its version, logging whom it refuses. The body is what a node decodes at
// every new heartbeat of every peer (32-node heartbeats: about 21 µs each
// as JSON, BenchmarkOnHeartbeat): integers as uvarints, the two node lists
// as a count and their ids, instead of field names and decimal text.
//
// Body, in this order: inc (8 bytes, big-endian: random), ring.rep,
// ring.seq, state (1 byte: 0 operational, 1 gather, 2 recovery),
// delivered, ordered, max_seq, config_version, seq_epoch, seqr, seq_from,
// token (uvarints), members (a uvarint count, then each id as a
// uvarint), hears (a uvarint count plus one, 0 when the sender gives none,
// then each id), addr (a uvarint length, then its bytes). Nothing may
// follow.

// The envelope's own layout, as appendHeartbeat writes it and
// parseHeartbeat reads it without a JSON decoder.
var (
	hbPrefix = []byte(`{"node":`)
	hbProto  = []byte(`,"proto":`)
	hbBody   = []byte(`,"hb":"`)
	hbSuffix = []byte(`"}`)
)

// hbStates maps Heartbeat.State to its byte in the body and back.
var hbStates = [...]string{stOperational, stGather, stRecovery}

func hbStateByte(s string) (byte, error) {
	for i, v := range hbStates {
		if v == s {
			return byte(i), nil
		}
	}
	return 0, fmt.Errorf("heartbeat state %q", s)
}

// appendHeartbeatBody appends hb's body (without node and proto, which
// the envelope carries).
func appendHeartbeatBody(b []byte, hb *Heartbeat) ([]byte, error) {
	st, err := hbStateByte(hb.State)
	if err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint64(b, hb.Inc)
	b = binary.AppendUvarint(b, uint64(hb.Ring.Rep))
	b = binary.AppendUvarint(b, hb.Ring.Seq)
	b = append(b, st)
	for _, v := range [...]uint64{hb.Delivered, hb.Ordered, hb.MaxSeq, hb.ConfigVersion,
		uint64(hb.SeqEpoch), uint64(hb.Seqr), hb.SeqFrom, uint64(hb.Token)} {
		b = binary.AppendUvarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(hb.Members)))
	for _, id := range hb.Members {
		b = binary.AppendUvarint(b, uint64(id))
	}
	if hb.Hears == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(hb.Hears))+1)
		for _, id := range hb.Hears {
			b = binary.AppendUvarint(b, uint64(id))
		}
	}
	b = binary.AppendUvarint(b, uint64(len(hb.Addr)))
	return append(b, hb.Addr...), nil
}

// appendHeartbeat appends hb as this version sends it: the envelope with
// its body. A heartbeat announcing a version before 2 (tests: a node of
// an older build, Announce) is sent as those builds sent it, all JSON.
func appendHeartbeat(b []byte, hb *Heartbeat) ([]byte, error) {
	if hb.Proto < 2 {
		j, err := json.Marshal(hb)
		return append(b, j...), err
	}
	var raw [256]byte
	body, err := appendHeartbeatBody(raw[:0], hb)
	if err != nil {
		return b, err
	}
	// Room for the envelope: its text, two numbers, the body.
	b = slices.Grow(b, len(hbPrefix)+len(hbProto)+len(hbBody)+len(hbSuffix)+20+base64.StdEncoding.EncodedLen(len(body)))
	b = append(b, hbPrefix...)
	b = strconv.AppendUint(b, uint64(hb.Node), 10)
	b = append(b, hbProto...)
	b = strconv.AppendUint(b, uint64(hb.Proto), 10)
	b = append(b, hbBody...)
	b = base64.StdEncoding.AppendEncode(b, body)
	return append(b, hbSuffix...), nil
}

var errHBBody = errors.New("heartbeat body cut short or too long")

// hbReader reads a body's fields; the first error sticks.
type hbReader struct {
	b   []byte
	err error
}

func (r *hbReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errHBBody
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *hbReader) u32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 && r.err == nil {
		r.err = errors.New("heartbeat field beyond 32 bits")
	}
	return uint32(v)
}

func (r *hbReader) ids(n uint64) []uint32 {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) { // every id takes a byte at least
		r.err = errHBBody
		return nil
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = r.u32()
	}
	return out
}

// parseHeartbeatBody fills hb's fields but Node and Proto from body.
func parseHeartbeatBody(body []byte, hb *Heartbeat) error {
	if len(body) < 9 {
		return errHBBody
	}
	hb.Inc = binary.BigEndian.Uint64(body)
	r := hbReader{b: body[8:]}
	hb.Ring.Rep = r.u32()
	hb.Ring.Seq = r.uvarint()
	if r.err == nil {
		if len(r.b) == 0 || int(r.b[0]) >= len(hbStates) {
			return errors.New("heartbeat body: no valid state")
		}
		hb.State = hbStates[r.b[0]]
		r.b = r.b[1:]
	}
	hb.Delivered, hb.Ordered, hb.MaxSeq, hb.ConfigVersion = r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
	hb.SeqEpoch, hb.Seqr, hb.SeqFrom, hb.Token = r.u32(), r.u32(), r.uvarint(), r.u32()
	if c := r.uvarint(); c > 0 {
		hb.Members = r.ids(c)
	}
	if h := r.uvarint(); h > 0 {
		// Present: never nil, even empty (nil says the sender gives
		// none, which a peer reads as hearing everyone).
		hb.Hears = r.ids(h - 1)
	}
	if l := r.uvarint(); r.err == nil {
		if l != uint64(len(r.b)) {
			return errHBBody
		}
		if l > 0 {
			hb.Addr = string(r.b)
		}
	}
	return r.err
}

// parseHeartbeat reads a heartbeat of any build: this version's envelope
// without a JSON decoder, anything else as JSON (a build before version
// 2, whose heartbeat is JSON through and through; or an envelope written
// differently). The body is decoded only when the envelope says this
// version: of another, Node and Proto are all a node needs (it refuses
// the sender).
func parseHeartbeat(data []byte, hb *Heartbeat) error {
	if node, proto, body, ok := splitHeartbeat(data); ok {
		hb.Node, hb.Proto = node, proto
		if proto != ProtocolVersion {
			return nil
		}
		var raw [256]byte
		dst := raw[:0]
		if n := base64.StdEncoding.DecodedLen(len(body)); n > len(raw) {
			dst = make([]byte, 0, n)
		}
		dec, err := base64.StdEncoding.AppendDecode(dst, body)
		if err != nil {
			return fmt.Errorf("heartbeat body: %w", err)
		}
		return parseHeartbeatBody(dec, hb)
	}
	var env struct {
		Heartbeat
		Body []byte `json:"hb"` // base64, as the envelope writes it
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return err
	}
	*hb = env.Heartbeat
	if hb.Proto != ProtocolVersion {
		return nil
	}
	if env.Body == nil {
		return errors.New("heartbeat of this version without its body")
	}
	node, proto := hb.Node, hb.Proto
	*hb = Heartbeat{Node: node, Proto: proto}
	return parseHeartbeatBody(env.Body, hb)
}

// splitHeartbeat cuts an envelope laid out exactly as appendHeartbeat
// writes it into its node, version and (still base64) body.
func splitHeartbeat(data []byte) (node, proto uint32, body []byte, ok bool) {
	rest, found := bytes.CutPrefix(data, hbPrefix)
	if !found {
		return 0, 0, nil, false
	}
	if node, rest, ok = cutUint32(rest); !ok {
		return 0, 0, nil, false
	}
	if rest, found = bytes.CutPrefix(rest, hbProto); !found {
		return 0, 0, nil, false
	}
	if proto, rest, ok = cutUint32(rest); !ok {
		return 0, 0, nil, false
	}
	if rest, found = bytes.CutPrefix(rest, hbBody); !found {
		return 0, 0, nil, false
	}
	if body, found = bytes.CutSuffix(rest, hbSuffix); !found || bytes.IndexByte(body, '"') >= 0 {
		return 0, 0, nil, false
	}
	return node, proto, body, true
}

// cutUint32 reads the decimal digits at b's start.
func cutUint32(b []byte) (uint32, []byte, bool) {
	i := 0
	var v uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		if v > 1<<32-1 {
			return 0, nil, false
		}
		i++
	}
	if i == 0 {
		return 0, nil, false
	}
	return uint32(v), b[i:], true
}
