package cpgwire

import "bytes"

// Request is a decoded libcpg request. Which fields are set depends on ID.
type Request struct {
	ID int32
	// Group: join, leave, membership_get, iteration_initialize.
	Group Name
	// PID: join, leave (the library's getpid()); Flags: join (the model's
	// flags).
	PID, Flags uint32
	// Guarantee, MsgLen: mcast and partial mcast; FragLen, FragType:
	// partial mcast. Data is the message (mcast) or the fragment
	// (partial); it aliases the request.
	Guarantee, MsgLen uint32
	FragLen, FragType uint32
	Data              []byte
	// IterType: iteration_initialize; Handle: iteration_next and
	// iteration_finalize.
	IterType uint32
	Handle   uint64
	// MapSize, Path: zc_alloc; MapSize, ServerAddr: zc_free; ServerAddr:
	// zc_execute.
	MapSize    uint64
	Path       string
	ServerAddr uint64
}

// DecodeRequest decodes a whole request message (header included). The
// libqb layer has checked that the header's size is the message's length.
// A group name longer than 128 bytes is ErrNameTooLong (corosync answers
// CS_ERR_NAME_TOO_LONG to a join); anything else malformed is ErrShort,
// ErrSize or ErrUnknown.
func DecodeRequest(msg []byte) (Request, error) {
	id, size, err := Header(msg)
	if err != nil {
		return Request{}, err
	}
	r := Request{ID: id}
	if int(size) != len(msg) {
		return r, ErrSize
	}
	need := func(n int) error {
		if len(msg) < n {
			return ErrShort
		}
		return nil
	}
	switch id {
	case ReqJoin:
		if err := need(joinSize); err != nil {
			return r, err
		}
		r.PID, r.Flags = le32(msg[ReqHeaderSize+NameSize:]), le32(msg[ReqHeaderSize+NameSize+8:])
		r.Group, err = getName(msg[ReqHeaderSize:])
	case ReqLeave:
		if err := need(leaveSize); err != nil {
			return r, err
		}
		r.PID = le32(msg[ReqHeaderSize+NameSize:])
		r.Group, err = getName(msg[ReqHeaderSize:])
	case ReqMembership:
		if err := need(membReqSize); err != nil {
			return r, err
		}
		r.Group, err = getName(msg[ReqHeaderSize:])
	case ReqIterInit:
		if err := need(iterInitSize); err != nil {
			return r, err
		}
		r.IterType = le32(msg[ReqHeaderSize+NameSize:])
		// libcpg leaves the name unset (stack garbage) unless one group
		// is asked for; corosync reads it only then.
		if r.IterType == IterOneGroup {
			r.Group, err = getName(msg[ReqHeaderSize:])
		}
	case ReqIterNext, ReqIterFinalize:
		if err := need(iterHandleSize); err != nil {
			return r, err
		}
		r.Handle = le64(msg[ReqHeaderSize:])
	case ReqLocalGet, ReqFinalize:
	case ReqMcast:
		if err := need(McastHeaderSize); err != nil {
			return r, err
		}
		r.Guarantee, r.MsgLen = le32(msg[ResHeaderSize:]), le32(msg[ResHeaderSize+8:])
		if uint64(r.MsgLen) != uint64(len(msg)-McastHeaderSize) {
			return r, ErrSize
		}
		r.Data = msg[McastHeaderSize:]
	case ReqPartialMcast:
		if err := need(PartialHeaderSize); err != nil {
			return r, err
		}
		r.Guarantee, r.MsgLen = le32(msg[ResHeaderSize:]), le32(msg[ResHeaderSize+8:])
		r.FragLen, r.FragType = le32(msg[ResHeaderSize+16:]), le32(msg[ResHeaderSize+24:])
		if uint64(r.FragLen) != uint64(len(msg)-PartialHeaderSize) || r.FragLen > r.MsgLen ||
			r.FragType < PartialFirst || r.FragType > PartialLast {
			return r, ErrSize
		}
		r.Data = msg[PartialHeaderSize:]
	case ReqZCAlloc:
		if err := need(zcAllocSize); err != nil {
			return r, err
		}
		r.MapSize = le64(msg[ReqHeaderSize:])
		p := msg[ReqHeaderSize+8 : ReqHeaderSize+8+ZCPathLen]
		end := bytes.IndexByte(p, 0)
		if end < 0 {
			return r, ErrSize // not NUL-terminated within its array
		}
		r.Path = string(p[:end])
	case ReqZCFree:
		if err := need(zcFreeSize); err != nil {
			return r, err
		}
		r.MapSize, r.ServerAddr = le64(msg[ReqHeaderSize:]), le64(msg[ReqHeaderSize+8:])
	case ReqZCExecute:
		if err := need(zcExecSize); err != nil {
			return r, err
		}
		r.ServerAddr = le64(msg[ReqHeaderSize:])
	default:
		return r, ErrUnknown
	}
	return r, err
}

// EncodeJoin is req_lib_cpg_join.
func EncodeJoin(group Name, pid, flags uint32) []byte {
	b := make([]byte, joinSize)
	reqHeader(b, ReqJoin)
	putName(b[ReqHeaderSize:], group)
	put32(b[ReqHeaderSize+NameSize:], pid)
	put32(b[ReqHeaderSize+NameSize+8:], flags)
	return b
}

// EncodeLeave is req_lib_cpg_leave.
func EncodeLeave(group Name, pid uint32) []byte {
	b := make([]byte, leaveSize)
	reqHeader(b, ReqLeave)
	putName(b[ReqHeaderSize:], group)
	put32(b[ReqHeaderSize+NameSize:], pid)
	return b
}

// EncodeMembership is req_lib_cpg_membership_get.
func EncodeMembership(group Name) []byte {
	b := make([]byte, membReqSize)
	reqHeader(b, ReqMembership)
	putName(b[ReqHeaderSize:], group)
	return b
}

// EncodeBareRequest is a request of a header only (local_get, finalize).
func EncodeBareRequest(id int32) []byte {
	b := make([]byte, ReqHeaderSize)
	reqHeader(b, id)
	return b
}

// EncodeIterInit is req_lib_cpg_iterationinitialize.
func EncodeIterInit(typ uint32, group Name) []byte {
	b := make([]byte, iterInitSize)
	reqHeader(b, ReqIterInit)
	putName(b[ReqHeaderSize:], group)
	put32(b[ReqHeaderSize+NameSize:], typ)
	return b
}

// EncodeIterHandle is req_lib_cpg_iterationnext or _finalize.
func EncodeIterHandle(id int32, handle uint64) []byte {
	b := make([]byte, iterHandleSize)
	reqHeader(b, id)
	put64(b[ReqHeaderSize:], handle)
	return b
}

// EncodeMcast is req_lib_cpg_mcast with its message.
func EncodeMcast(guarantee uint32, data []byte) []byte {
	b := make([]byte, McastHeaderSize+len(data))
	put32(b, uint32(ReqMcast))
	put32(b[8:], uint32(len(b)))
	put32(b[ResHeaderSize:], guarantee)
	put32(b[ResHeaderSize+8:], uint32(len(data)))
	copy(b[McastHeaderSize:], data)
	return b
}

// EncodePartialMcast is req_lib_cpg_partial_mcast with one fragment of a
// message of msgLen bytes.
func EncodePartialMcast(guarantee, msgLen, typ uint32, frag []byte) []byte {
	b := make([]byte, PartialHeaderSize+len(frag))
	put32(b, uint32(ReqPartialMcast))
	put32(b[8:], uint32(len(b)))
	put32(b[ResHeaderSize:], guarantee)
	put32(b[ResHeaderSize+8:], msgLen)
	put32(b[ResHeaderSize+16:], uint32(len(frag)))
	put32(b[ResHeaderSize+24:], typ)
	copy(b[PartialHeaderSize:], frag)
	return b
}

// EncodeZCAlloc is mar_req_coroipcc_zc_alloc_t.
func EncodeZCAlloc(mapSize uint64, path string) []byte {
	b := make([]byte, zcAllocSize)
	reqHeader(b, ReqZCAlloc)
	put64(b[ReqHeaderSize:], mapSize)
	copy(b[ReqHeaderSize+8:ReqHeaderSize+8+ZCPathLen-1], path)
	return b
}

// EncodeZCFree is mar_req_coroipcc_zc_free_t.
func EncodeZCFree(mapSize, serverAddr uint64) []byte {
	b := make([]byte, zcFreeSize)
	reqHeader(b, ReqZCFree)
	put64(b[ReqHeaderSize:], mapSize)
	put64(b[ReqHeaderSize+8:], serverAddr)
	return b
}

// EncodeZCExecute is mar_req_coroipcc_zc_execute_t.
func EncodeZCExecute(serverAddr uint64) []byte {
	b := make([]byte, zcExecSize)
	reqHeader(b, ReqZCExecute)
	put64(b[ReqHeaderSize:], serverAddr)
	return b
}
