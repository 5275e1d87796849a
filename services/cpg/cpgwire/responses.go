package cpgwire

import (
	"github.com/corobus/corobus/services/cswire"
)

// EncodeStatus is a response of a header only: join, leave, finalize,
// iteration_finalize, partial_send, zero-copy calls.
func EncodeStatus(id int32, err cswire.Error) []byte {
	b := make([]byte, ResHeaderSize)
	resHeader(b, id, err)
	return b
}

// EncodeLocalGet is res_lib_cpg_local_get.
func EncodeLocalGet(nodeID uint32) []byte {
	b := make([]byte, ResHeaderSize+8)
	resHeader(b, ResLocalGet, cswire.OK)
	put32(b[ResHeaderSize:], nodeID)
	return b
}

// EncodeMembershipResponse is res_lib_cpg_membership_get: its fixed array holds
// at most ProcessorCountMax members (corosync's limit too).
func EncodeMembershipResponse(members []Address) []byte {
	b := make([]byte, MembershipResponseSize)
	resHeader(b, ResMembership, cswire.OK)
	members = members[:min(len(members), ProcessorCountMax)]
	put32(b[ResHeaderSize:], uint32(len(members)))
	for i, m := range members {
		putAddress(b[ResHeaderSize+8+i*AddressSize:], Address{NodeID: m.NodeID, PID: m.PID})
	}
	return b
}

// EncodeIterInitResponse is res_lib_cpg_iterationinitialize.
func EncodeIterInitResponse(err cswire.Error, handle uint64) []byte {
	b := make([]byte, ResHeaderSize+8)
	resHeader(b, ResIterInit, err)
	put64(b[ResHeaderSize:], handle)
	return b
}

// EncodeIterNextResponse is res_lib_cpg_iterationnext.
func EncodeIterNextResponse(err cswire.Error, d Description) []byte {
	b := make([]byte, ResHeaderSize+DescSize)
	resHeader(b, ResIterNext, err)
	putName(b[ResHeaderSize:], d.Group)
	put32(b[ResHeaderSize+NameSize:], d.NodeID)
	put32(b[ResHeaderSize+NameSize+4:], d.PID)
	return b
}

// AppendDeliver appends res_lib_cpg_deliver_callback with its message.
func AppendDeliver(dst []byte, group Name, nodeID, pid uint32, msg []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, DeliverHeaderSize)...)
	h := dst[n:]
	put32(h, uint32(ResDeliverCallback))
	put32(h[8:], uint32(DeliverHeaderSize+len(msg)))
	put32(h[16:], uint32(cswire.OK))
	putName(h[ResHeaderSize:], group)
	o := ResHeaderSize + NameSize
	put32(h[o:], uint32(len(msg)))
	put32(h[o+8:], nodeID)
	put32(h[o+16:], pid)
	return append(dst, msg...)
}

// AppendPartialDeliver appends res_lib_cpg_partial_deliver_callback with
// one fragment of a message of msgLen bytes.
func AppendPartialDeliver(dst []byte, group Name, msgLen, nodeID, pid, typ uint32, frag []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, PartialDeliverHeaderSize)...)
	h := dst[n:]
	put32(h, uint32(ResPartialDeliver))
	put32(h[8:], uint32(PartialDeliverHeaderSize+len(frag)))
	put32(h[16:], uint32(cswire.OK))
	putName(h[ResHeaderSize:], group)
	o := ResHeaderSize + NameSize
	put32(h[o:], msgLen)
	put32(h[o+8:], uint32(len(frag)))
	put32(h[o+16:], nodeID)
	put32(h[o+24:], pid)
	put32(h[o+32:], typ)
	return append(dst, frag...)
}

// EncodeConfChg is res_lib_cpg_confchg_callback: the member list, then
// the left list, then the joined list.
func EncodeConfChg(group Name, members, left, joined []Address) []byte {
	b := make([]byte, ConfChgHeaderSize+AddressSize*(len(members)+len(left)+len(joined)))
	resHeader(b, ResConfChgCallback, cswire.OK)
	putName(b[ResHeaderSize:], group)
	o := ResHeaderSize + NameSize
	put32(b[o:], uint32(len(members)))
	put32(b[o+8:], uint32(len(joined)))
	put32(b[o+16:], uint32(len(left)))
	p := ConfChgHeaderSize
	for _, l := range [][]Address{members, left, joined} {
		for _, a := range l {
			putAddress(b[p:], a)
			p += AddressSize
		}
	}
	return b
}

// EncodeTotemConfChg is res_lib_cpg_totem_confchg_callback: the ring id
// and the totem members, whose list starts at offset 44 as corosync
// writes it (the struct's size, 48, counts 4 bytes of padding).
func EncodeTotemConfChg(ringNode uint32, ringSeq uint64, members []uint32) []byte {
	b := make([]byte, TotemConfChgHeaderSize+4*len(members))
	resHeader(b, ResTotemConfChgCallback, cswire.OK)
	put32(b[ResHeaderSize:], ringNode)
	put64(b[ResHeaderSize+8:], ringSeq)
	put32(b[ResHeaderSize+16:], uint32(len(members)))
	for i, m := range members {
		put32(b[totemMembersOffset+4*i:], m)
	}
	return b
}

// Response is a decoded libcpg response (what a client reads).
type Response struct {
	ID      int32
	Error   cswire.Error
	NodeID  uint32      // local_get
	Members []Address   // membership_get
	Handle  uint64      // iteration_initialize
	Desc    Description // iteration_next
}

// DecodeResponse decodes a response to a request of id req (the id of a
// response to a request corosync did not run — CS_ERR_TRY_AGAIN while a
// sync runs — is 0: only its error counts).
func DecodeResponse(req int32, msg []byte) (Response, error) {
	if len(msg) < ResHeaderSize {
		return Response{}, ErrShort
	}
	r := Response{ID: int32(le32(msg)), Error: cswire.Error(le32(msg[16:]))}
	if int(le32(msg[8:])) != len(msg) {
		return r, ErrSize
	}
	if r.Error != cswire.OK {
		return r, nil
	}
	switch req {
	case ReqLocalGet:
		if len(msg) < ResHeaderSize+8 {
			return r, ErrShort
		}
		r.NodeID = le32(msg[ResHeaderSize:])
	case ReqMembership:
		if len(msg) < ResHeaderSize+8 {
			return r, ErrShort
		}
		n := int(le32(msg[ResHeaderSize:]))
		if n > ProcessorCountMax || len(msg) < ResHeaderSize+8+n*AddressSize {
			return r, ErrSize
		}
		for i := range n {
			a := getAddress(msg[ResHeaderSize+8+i*AddressSize:])
			r.Members = append(r.Members, a)
		}
	case ReqIterInit:
		if len(msg) < ResHeaderSize+8 {
			return r, ErrShort
		}
		r.Handle = le64(msg[ResHeaderSize:])
	case ReqIterNext:
		if len(msg) < ResHeaderSize+DescSize {
			return r, ErrShort
		}
		g, err := getName(msg[ResHeaderSize:])
		if err != nil {
			return r, err
		}
		r.Desc = Description{Group: g, NodeID: le32(msg[ResHeaderSize+NameSize:]), PID: le32(msg[ResHeaderSize+NameSize+4:])}
	}
	return r, nil
}

// Event is a decoded libcpg callback message. Which fields are set
// depends on ID.
type Event struct {
	ID    int32
	Group Name
	// Deliver and partial deliver: the sender, the whole message's
	// length, the fragment type and the data (a fragment for a partial
	// delivery); Data aliases the message.
	NodeID, PID      uint32
	MsgLen, FragType uint32
	Data             []byte
	Members, Left    []Address // configuration change
	Joined           []Address
	RingNode         uint32 // totem configuration change
	RingSeq          uint64
	TotemMembers     []uint32
}

// DecodeEvent decodes a callback message.
func DecodeEvent(msg []byte) (Event, error) {
	if len(msg) < ResHeaderSize {
		return Event{}, ErrShort
	}
	e := Event{ID: int32(le32(msg))}
	if int(le32(msg[8:])) != len(msg) {
		return e, ErrSize
	}
	var err error
	o := ResHeaderSize + NameSize
	switch e.ID {
	case ResDeliverCallback:
		if len(msg) < DeliverHeaderSize {
			return e, ErrShort
		}
		if e.Group, err = getName(msg[ResHeaderSize:]); err != nil {
			return e, err
		}
		e.MsgLen, e.NodeID, e.PID = le32(msg[o:]), le32(msg[o+8:]), le32(msg[o+16:])
		if uint64(e.MsgLen) != uint64(len(msg)-DeliverHeaderSize) {
			return e, ErrSize
		}
		e.Data = msg[DeliverHeaderSize:]
	case ResPartialDeliver:
		if len(msg) < PartialDeliverHeaderSize {
			return e, ErrShort
		}
		if e.Group, err = getName(msg[ResHeaderSize:]); err != nil {
			return e, err
		}
		e.MsgLen, e.NodeID, e.PID, e.FragType = le32(msg[o:]), le32(msg[o+16:]), le32(msg[o+24:]), le32(msg[o+32:])
		if fl := le32(msg[o+8:]); uint64(fl) != uint64(len(msg)-PartialDeliverHeaderSize) || fl > e.MsgLen {
			return e, ErrSize
		}
		e.Data = msg[PartialDeliverHeaderSize:]
	case ResConfChgCallback:
		if len(msg) < ConfChgHeaderSize {
			return e, ErrShort
		}
		if e.Group, err = getName(msg[ResHeaderSize:]); err != nil {
			return e, err
		}
		nm, nj, nl := uint64(le32(msg[o:])), uint64(le32(msg[o+8:])), uint64(le32(msg[o+16:]))
		if uint64(len(msg)) != ConfChgHeaderSize+AddressSize*(nm+nj+nl) {
			return e, ErrSize
		}
		p := ConfChgHeaderSize
		for _, l := range []struct {
			n   uint64
			dst *[]Address
		}{{nm, &e.Members}, {nl, &e.Left}, {nj, &e.Joined}} {
			*l.dst = make([]Address, 0, l.n)
			for range l.n {
				*l.dst = append(*l.dst, getAddress(msg[p:]))
				p += AddressSize
			}
		}
	case ResTotemConfChgCallback:
		if len(msg) < TotemConfChgHeaderSize {
			return e, ErrShort
		}
		e.RingNode, e.RingSeq = le32(msg[ResHeaderSize:]), le64(msg[ResHeaderSize+8:])
		n := uint64(le32(msg[ResHeaderSize+16:]))
		if uint64(len(msg)) != TotemConfChgHeaderSize+4*n {
			return e, ErrSize
		}
		e.TotemMembers = make([]uint32, n)
		for i := range e.TotemMembers {
			e.TotemMembers[i] = le32(msg[totemMembersOffset+4*i:])
		}
	default:
		return e, ErrUnknown
	}
	return e, nil
}
