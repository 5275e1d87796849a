package votequorum

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// Client-side encoders and decoders, for corobus's own clients (the
// `corobus quorum` verb) and tests: the messages libvotequorum sends and
// reads.

// EncodeGetInfoRequest builds GETINFO for node id (0: the local node).
func EncodeGetInfoRequest(id uint32) []byte {
	b := cswire.NewRequest(ReqGetInfo, 24)
	cswire.PutU32(b, 16, id)
	return b
}

// EncodeSetExpected builds SETEXPECTED.
func EncodeSetExpected(v uint32) []byte {
	b := cswire.NewRequest(ReqSetExpected, 24)
	cswire.PutU32(b, 16, v)
	return b
}

// EncodeSetVotes builds SETVOTES.
func EncodeSetVotes(id, votes uint32) []byte {
	b := cswire.NewRequest(ReqSetVotes, 24)
	cswire.PutU32(b, 16, votes)
	cswire.PutU32(b, 20, id)
	return b
}

// EncodeTrackStart builds TRACKSTART.
func EncodeTrackStart(context uint64, flags uint32) []byte {
	b := cswire.NewRequest(ReqTrackStart, 32)
	cswire.PutU64(b, 16, context)
	cswire.PutU32(b, 24, flags)
	return b
}

// EncodeQdeviceName builds QDEVICE_REGISTER or QDEVICE_UNREGISTER.
func EncodeQdeviceName(id int32, name string) []byte {
	b := cswire.NewRequest(id, 272)
	cswire.PutCString(b, nameOff, QdeviceNameLen, name)
	return b
}

// DecodeStatus reads the error of any response.
func DecodeStatus(b []byte) (cswire.Error, error) {
	_, code, err := cswire.ParseResponse(b)
	return code, err
}

// Notification is a decoded votequorum notification.
type Notification struct {
	ID       int32
	Context  uint64
	Quorate  bool
	Ring     RingID
	Nodes    []NodeState // quorum notification
	NodeList []uint32    // nodelist notification
	Expected uint32      // expected votes notification
}

// DecodeNotification reads a notification, checking that its list fits.
func DecodeNotification(b []byte) (Notification, error) {
	id, _, err := cswire.ParseResponse(b)
	if err != nil {
		return Notification{}, err
	}
	n := Notification{ID: id}
	switch id {
	case ResQuorumNotification:
		if len(b) < 48 {
			return n, cswire.ErrShort
		}
		n.Quorate, n.Context = cswire.U32(b, 24) != 0, cswire.U64(b, 32)
		cnt := uint64(cswire.U32(b, 40))
		if 48+8*cnt > uint64(len(b)) {
			return n, fmt.Errorf("votequorum notification of %d nodes runs past the message: %w", cnt, cswire.ErrInvalidParam)
		}
		for i := 0; i < int(cnt); i++ {
			n.Nodes = append(n.Nodes, NodeState{NodeID: cswire.U32(b, 48+8*i), State: cswire.U32(b, 52+8*i)})
		}
	case ResNodelistNotification:
		if len(b) < 56 {
			return n, cswire.ErrShort
		}
		n.Context = cswire.U64(b, 24)
		n.Ring = RingID{NodeID: cswire.U32(b, 32), Seq: cswire.U64(b, 40)}
		cnt := uint64(cswire.U32(b, 48))
		if 56+4*cnt > uint64(len(b)) {
			return n, fmt.Errorf("votequorum nodelist of %d nodes runs past the message: %w", cnt, cswire.ErrInvalidParam)
		}
		for i := 0; i < int(cnt); i++ {
			n.NodeList = append(n.NodeList, cswire.U32(b, 56+4*i))
		}
	case ResExpectedVotesNotification:
		if len(b) < 40 {
			return n, cswire.ErrShort
		}
		n.Context, n.Expected = cswire.U64(b, 24), cswire.U32(b, 32)
	default:
		return n, fmt.Errorf("not a votequorum notification (id %d): %w", id, cswire.ErrInvalidParam)
	}
	return n, nil
}
