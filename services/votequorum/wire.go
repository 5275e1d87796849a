package votequorum

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// libvotequorum's wire protocol, as include/corosync/ipc_votequorum.h of
// corosync 3.1 lays it out on 64-bit Linux.

// Request ids.
const (
	ReqGetInfo           = 0
	ReqSetExpected       = 1
	ReqSetVotes          = 2
	ReqTrackStart        = 3
	ReqTrackStop         = 4
	ReqQdeviceRegister   = 5
	ReqQdeviceUnregister = 6
	ReqQdeviceUpdate     = 7
	ReqQdevicePoll       = 8
	ReqQdeviceMasterWins = 9
)

// Response ids. TRACKSTART is answered with STATUS, as corosync does.
const (
	ResStatus                    = 0
	ResGetInfo                   = 1
	ResTrackStart                = 2
	ResQuorumNotification        = 3
	ResExpectedVotesNotification = 4
	ResNodelistNotification      = 5
)

// Info flags (VOTEQUORUM_INFO_*).
const (
	InfoTwoNode           = 1
	InfoQuorate           = 2
	InfoWaitForAll        = 4
	InfoLastManStanding   = 8
	InfoAutoTieBreaker    = 16
	InfoAllowDownscale    = 32
	InfoQdeviceRegistered = 64
	InfoQdeviceAlive      = 128
	InfoQdeviceCastVote   = 256
	InfoQdeviceMasterWins = 512
)

// Node states (VOTEQUORUM_NODESTATE_*).
const (
	StateMember  = 1
	StateDead    = 2
	StateLeaving = 3
)

// QdeviceNodeID is the node id a quorum device is known by.
const QdeviceNodeID = 0

// QdeviceNameLen is VOTEQUORUM_QDEVICE_MAX_NAME_LEN: the size of a
// device name's char array.
const QdeviceNameLen = 255

// Track flags (cs_track_flags_t).
const (
	TrackCurrent     = 1
	TrackChanges     = 2
	TrackChangesOnly = 4
)

// Layout offsets.
const (
	getInfoSize = 320 // res_lib_votequorum_getinfo
	nameOff     = cswire.ReqHeaderSize
	newNameOff  = nameOff + QdeviceNameLen // 271, right after oldname
)

// Request is a decoded libvotequorum request.
type Request struct {
	ID       int32
	NodeID   uint32 // GETINFO, SETVOTES
	Votes    uint32 // SETVOTES
	Expected uint32 // SETEXPECTED
	Context  uint64 // TRACKSTART
	Flags    uint32 // TRACKSTART
	Name     string // QDEVICE_*: the device's name (oldname of UPDATE)
	NewName  string // QDEVICE_UPDATE
	CastVote bool   // QDEVICE_POLL
	Ring     RingID // QDEVICE_POLL
	Allow    bool   // QDEVICE_MASTER_WINS
}

// RingID is a ring id as libvotequorum carries it.
type RingID struct {
	NodeID uint32 `json:"rep"`
	Seq    uint64 `json:"seq"`
}

// DecodeRequest checks a whole request against its layout; a mismatch is
// answered CS_ERR_INVALID_PARAM.
func DecodeRequest(msg []byte) (Request, error) {
	h, err := cswire.ParseRequest(msg)
	r := Request{ID: h.ID}
	if err != nil {
		return r, fmt.Errorf("votequorum: %w", err)
	}
	need := func(n int) error {
		if err := h.Need(n); err != nil {
			return fmt.Errorf("votequorum: %w", err)
		}
		return nil
	}
	switch r.ID {
	case ReqGetInfo: // nodeid int @16
		if err := need(20); err != nil {
			return r, err
		}
		r.NodeID = cswire.U32(msg, 16)
	case ReqSetExpected: // expected_votes @16
		if err := need(20); err != nil {
			return r, err
		}
		r.Expected = cswire.U32(msg, 16)
	case ReqSetVotes: // votes @16, nodeid @20
		if err := need(24); err != nil {
			return r, err
		}
		r.Votes = cswire.U32(msg, 16)
		r.NodeID = cswire.U32(msg, 20)
	case ReqTrackStart: // context u64 @16, track_flags @24
		if err := need(28); err != nil {
			return r, err
		}
		r.Context = cswire.U64(msg, 16)
		r.Flags = cswire.U32(msg, 24)
	case ReqTrackStop:
	case ReqQdeviceRegister, ReqQdeviceUnregister: // name[255] @16
		if err := need(nameOff + QdeviceNameLen); err != nil {
			return r, err
		}
		r.Name = cswire.CString(msg, nameOff, QdeviceNameLen)
	case ReqQdeviceUpdate: // oldname @16, newname @271
		if err := need(newNameOff + QdeviceNameLen); err != nil {
			return r, err
		}
		r.Name = cswire.CString(msg, nameOff, QdeviceNameLen)
		r.NewName = cswire.CString(msg, newNameOff, QdeviceNameLen)
	case ReqQdevicePoll: // name @16, cast_vote @272, ring_id{nodeid @280, seq @288}
		if err := need(296); err != nil {
			return r, err
		}
		r.Name = cswire.CString(msg, nameOff, QdeviceNameLen)
		r.CastVote = cswire.U32(msg, 272) != 0
		r.Ring = RingID{NodeID: cswire.U32(msg, 280), Seq: cswire.U64(msg, 288)}
	case ReqQdeviceMasterWins: // name @16, allow @272
		if err := need(276); err != nil {
			return r, err
		}
		r.Name = cswire.CString(msg, nameOff, QdeviceNameLen)
		r.Allow = cswire.U32(msg, 272) != 0
	default:
		return r, fmt.Errorf("votequorum: unknown request id %d: %w", r.ID, cswire.ErrInvalidParam)
	}
	return r, nil
}

// EncodeStatus is res_lib_votequorum_status, the answer to every request
// but GETINFO. A failed GETINFO still gets its full-size struct.
func EncodeStatus(req int32, code cswire.Error) []byte {
	if req == ReqGetInfo {
		return cswire.Response(ResGetInfo, getInfoSize, code)
	}
	return cswire.Response(ResStatus, cswire.ResHeaderSize, code)
}

// Info is res_lib_votequorum_getinfo's content.
type Info struct {
	NodeID          uint32 `json:"nodeid"`
	State           uint32 `json:"state"`
	Votes           uint32 `json:"votes"`
	ExpectedVotes   uint32 `json:"expected_votes"`
	HighestExpected uint32 `json:"highest_expected"`
	TotalVotes      uint32 `json:"total_votes"`
	Quorum          uint32 `json:"quorum"`
	Flags           uint32 `json:"flags"`
	QdeviceVotes    uint32 `json:"qdevice_votes"`
	QdeviceName     string `json:"qdevice_name"`
}

// EncodeGetInfo answers GETINFO: nine unsigned ints from 24, then the
// device name's char array at 60.
func EncodeGetInfo(in Info) []byte {
	b := cswire.Response(ResGetInfo, getInfoSize, cswire.OK)
	for i, v := range []uint32{in.NodeID, in.State, in.Votes, in.ExpectedVotes, in.HighestExpected,
		in.TotalVotes, in.Quorum, in.Flags, in.QdeviceVotes} {
		cswire.PutU32(b, 24+4*i, v)
	}
	cswire.PutCString(b, 60, QdeviceNameLen, in.QdeviceName)
	return b
}

// DecodeGetInfo reads a GETINFO response (for corobus's own client).
func DecodeGetInfo(b []byte) (Info, cswire.Error, error) {
	if len(b) < getInfoSize {
		return Info{}, 0, fmt.Errorf("votequorum getinfo response of %d bytes: %w", len(b), cswire.ErrShort)
	}
	code := cswire.Error(cswire.I32(b, 16))
	v := func(i int) uint32 { return cswire.U32(b, 24+4*i) }
	return Info{NodeID: v(0), State: v(1), Votes: v(2), ExpectedVotes: v(3), HighestExpected: v(4),
		TotalVotes: v(5), Quorum: v(6), Flags: v(7), QdeviceVotes: v(8),
		QdeviceName: cswire.CString(b, 60, QdeviceNameLen)}, code, nil
}

// NodeState is one entry of a quorum notification's node list.
type NodeState struct {
	NodeID uint32 `json:"nodeid"`
	State  uint32 `json:"state"`
}

// EncodeQuorumNotification is res_lib_votequorum_quorum_notification:
// quorate@24, context@32, node_list_entries@40, {nodeid, state} pairs
// from 48.
func EncodeQuorumNotification(quorate bool, context uint64, nodes []NodeState) []byte {
	b := cswire.Response(ResQuorumNotification, 48+8*len(nodes), cswire.OK)
	if quorate {
		cswire.PutU32(b, 24, 1)
	}
	cswire.PutU64(b, 32, context)
	cswire.PutU32(b, 40, uint32(len(nodes)))
	for i, n := range nodes {
		cswire.PutU32(b, 48+8*i, n.NodeID)
		cswire.PutU32(b, 52+8*i, n.State)
	}
	return b
}

// EncodeNodelistNotification is res_lib_votequorum_nodelist_notification:
// context@24, ring_id{nodeid@32, seq@40}, node_list_entries@48, node ids
// from 56.
func EncodeNodelistNotification(context uint64, ring RingID, nodes []uint32) []byte {
	b := cswire.Response(ResNodelistNotification, 56+4*len(nodes), cswire.OK)
	cswire.PutU64(b, 24, context)
	cswire.PutU32(b, 32, ring.NodeID)
	cswire.PutU64(b, 40, ring.Seq)
	cswire.PutU32(b, 48, uint32(len(nodes)))
	for i, n := range nodes {
		cswire.PutU32(b, 56+4*i, n)
	}
	return b
}

// EncodeExpectedVotesNotification is
// res_lib_votequorum_expectedvotes_notification: context@24,
// expected_votes@32.
func EncodeExpectedVotesNotification(context uint64, expected uint32) []byte {
	b := cswire.Response(ResExpectedVotesNotification, 40, cswire.OK)
	cswire.PutU64(b, 24, context)
	cswire.PutU32(b, 32, expected)
	return b
}

// SetContext rewrites the context field of an encoded notification, so
// that one encoding serves every tracker.
func SetContext(msg []byte, context uint64) {
	if len(msg) < 40 {
		return
	}
	off := 24
	if cswire.I32(msg, 0) == ResQuorumNotification {
		off = 32
	}
	cswire.PutU64(msg, off, context)
}
