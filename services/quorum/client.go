package quorum

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// Client-side encoders and decoders, for corobus's own clients (the
// `corobus quorum` verb) and tests: the messages libquorum sends and
// reads.

// EncodeRequest builds a request without arguments (GETQUORATE,
// TRACKSTOP, GETTYPE).
func EncodeRequest(id int32) []byte { return cswire.NewRequest(id, cswire.ReqHeaderSize) }

// EncodeTrackStart builds TRACKSTART.
func EncodeTrackStart(flags uint32) []byte {
	b := cswire.NewRequest(ReqTrackStart, 24)
	cswire.PutU32(b, 16, flags)
	return b
}

// EncodeModelGetType builds MODEL_GETTYPE.
func EncodeModelGetType(model uint32) []byte {
	b := cswire.NewRequest(ReqModelGetType, 24)
	cswire.PutU32(b, 16, model)
	return b
}

// DecodeGetQuorate reads GETQUORATE's answer.
func DecodeGetQuorate(b []byte) (bool, cswire.Error, error) {
	_, code, err := cswire.ParseResponse(b)
	if err != nil || len(b) < 28 {
		return false, code, fmt.Errorf("quorum getquorate response: %w", cswire.ErrShort)
	}
	return cswire.U32(b, 24) != 0, code, nil
}

// Notification is a decoded quorum or nodelist notification (v1).
type Notification struct {
	ID                    int32
	Quorate               bool
	Ring                  RingID
	Members, Joined, Left []uint32
}

// DecodeNotification reads a v1 quorum or nodelist notification, checking
// that its lists fit the message.
func DecodeNotification(b []byte) (Notification, error) {
	id, _, err := cswire.ParseResponse(b)
	if err != nil {
		return Notification{}, err
	}
	list := func(off int, n uint32) ([]uint32, int, error) {
		if uint64(off)+4*uint64(n) > uint64(len(b)) {
			return nil, 0, fmt.Errorf("quorum notification list of %d runs past the message: %w", n, cswire.ErrInvalidParam)
		}
		out := make([]uint32, n)
		for i := range out {
			out[i] = cswire.U32(b, off+4*i)
		}
		return out, off + 4*int(n), nil
	}
	n := Notification{ID: id}
	switch id {
	case ResV1QuorumNotification:
		if len(b) < 56 {
			return n, cswire.ErrShort
		}
		n.Quorate = cswire.U32(b, 24) != 0
		n.Ring = RingID{NodeID: cswire.U32(b, 32), Seq: cswire.U64(b, 40)}
		n.Members, _, err = list(52, cswire.U32(b, 48))
	case ResV1NodelistNotification:
		if len(b) < 64 {
			return n, cswire.ErrShort
		}
		n.Ring = RingID{NodeID: cswire.U32(b, 24), Seq: cswire.U64(b, 32)}
		off := 60
		if n.Members, off, err = list(off, cswire.U32(b, 40)); err == nil {
			if n.Joined, off, err = list(off, cswire.U32(b, 48)); err == nil {
				n.Left, _, err = list(off, cswire.U32(b, 56))
			}
		}
	default:
		return n, fmt.Errorf("not a v1 quorum notification (id %d): %w", id, cswire.ErrInvalidParam)
	}
	return n, err
}
