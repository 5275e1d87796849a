// Package quorum is corosync's quorum service (libquorum's "quorum" IPC
// service): whether this node is in the primary component, the quorum
// view, and, for libquorum's v1 model, the membership with joined and left
// lists on every synchronization.
//
// This file is libquorum's wire protocol as include/corosync/ipc_quorum.h
// of corosync 3.1 lays it out on 64-bit Linux. Offsets are those of the C
// structs, including their quirks: a notification's size counts the
// struct's trailing padding although its list starts before it.
package quorum

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// Request ids.
const (
	ReqGetQuorate   = 0
	ReqTrackStart   = 1
	ReqTrackStop    = 2
	ReqGetType      = 3
	ReqModelGetType = 4
)

// Response ids.
const (
	ResGetQuorate             = 0
	ResTrackStart             = 1
	ResTrackStop              = 2
	ResNotification           = 3
	ResGetType                = 4
	ResModelGetType           = 5
	ResV1QuorumNotification   = 6
	ResV1NodelistNotification = 7
)

// Models of quorum_model_initialize.
const (
	ModelV0 = 0
	ModelV1 = 1
)

// Quorum types (quorum_initialize's quorum_type): QUORUM_FREE when no
// provider is configured, QUORUM_SET when one decides.
const (
	TypeFree = 0
	TypeSet  = 1
)

// Track flags (cs_track_flags_t).
const (
	TrackCurrent     = 1
	TrackChanges     = 2
	TrackChangesOnly = 4
)

// Request is a decoded libquorum request.
type Request struct {
	ID    int32
	Flags uint32 // TRACKSTART
	Model uint32 // MODEL_GETTYPE
}

// DecodeRequest checks a request against its layout.
func DecodeRequest(msg []byte) (Request, error) {
	h, err := cswire.ParseRequest(msg)
	if err != nil {
		return Request{ID: h.ID}, fmt.Errorf("quorum: %w", err)
	}
	r := Request{ID: h.ID}
	switch r.ID {
	case ReqGetQuorate, ReqTrackStop, ReqGetType:
	case ReqTrackStart: // track_flags u32 @16
		if err := h.Need(20); err != nil {
			return r, fmt.Errorf("quorum: %w", err)
		}
		r.Flags = cswire.U32(msg, 16)
	case ReqModelGetType: // model u32 @16
		if err := h.Need(20); err != nil {
			return r, fmt.Errorf("quorum: %w", err)
		}
		r.Model = cswire.U32(msg, 16)
	default:
		return r, fmt.Errorf("quorum: unknown request id %d: %w", r.ID, cswire.ErrInvalidParam)
	}
	return r, nil
}

// ResponseID is the response id of a request id.
func ResponseID(req int32) int32 {
	switch req {
	case ReqGetQuorate:
		return ResGetQuorate
	case ReqTrackStart:
		return ResTrackStart
	case ReqTrackStop:
		return ResTrackStop
	case ReqGetType:
		return ResGetType
	case ReqModelGetType:
		return ResModelGetType
	}
	return req
}

// EncodeStatus answers a request with its response struct's full size
// and an error; libquorum reads the error only when the size fits.
func EncodeStatus(req int32, code cswire.Error) []byte {
	size := cswire.ResHeaderSize
	switch req {
	case ReqGetQuorate, ReqGetType, ReqModelGetType:
		size = 32
	}
	return cswire.Response(ResponseID(req), size, code)
}

// EncodeGetQuorate answers GETQUORATE.
func EncodeGetQuorate(quorate bool) []byte {
	b := cswire.Response(ResGetQuorate, 32, cswire.OK)
	cswire.PutU32(b, 24, b2u(quorate))
	return b
}

// EncodeType answers GETTYPE or MODEL_GETTYPE with the quorum type.
func EncodeType(req int32, typ uint32, code cswire.Error) []byte {
	b := cswire.Response(ResponseID(req), 32, code)
	cswire.PutU32(b, 24, typ)
	return b
}

// RingID is a ring id as libquorum v1 carries it.
type RingID struct {
	NodeID uint32 `json:"rep"`
	Seq    uint64 `json:"seq"`
}

// EncodeNotificationV0 is res_lib_quorum_notification: quorate@24,
// ring_seq@32, view_list_entries@40, view_list@44; its size counts the
// struct's 48 bytes plus the list.
func EncodeNotificationV0(quorate bool, ringSeq uint64, view []uint32) []byte {
	b := cswire.Response(ResNotification, 48+4*len(view), cswire.OK)
	cswire.PutU32(b, 24, b2u(quorate))
	cswire.PutU64(b, 32, ringSeq)
	cswire.PutU32(b, 40, uint32(len(view)))
	putList(b, 44, view)
	return b
}

// EncodeNotificationV1 is res_lib_quorum_v1_quorum_notification:
// quorate@24, ring_id{nodeid@32, seq@40}, view_list_entries@48,
// view_list@52; size 56 plus the list.
func EncodeNotificationV1(quorate bool, ring RingID, view []uint32) []byte {
	b := cswire.Response(ResV1QuorumNotification, 56+4*len(view), cswire.OK)
	cswire.PutU32(b, 24, b2u(quorate))
	cswire.PutU32(b, 32, ring.NodeID)
	cswire.PutU64(b, 40, ring.Seq)
	cswire.PutU32(b, 48, uint32(len(view)))
	putList(b, 52, view)
	return b
}

// EncodeNodelistV1 is res_lib_quorum_v1_nodelist_notification:
// ring_id{nodeid@24, seq@32}, member_list_entries@40,
// joined_list_entries@48, left_list_entries@56, then the member, joined
// and left lists from 60; size 64 plus the lists.
func EncodeNodelistV1(ring RingID, members, joined, left []uint32) []byte {
	n := len(members) + len(joined) + len(left)
	b := cswire.Response(ResV1NodelistNotification, 64+4*n, cswire.OK)
	cswire.PutU32(b, 24, ring.NodeID)
	cswire.PutU64(b, 32, ring.Seq)
	cswire.PutU32(b, 40, uint32(len(members)))
	cswire.PutU32(b, 48, uint32(len(joined)))
	cswire.PutU32(b, 56, uint32(len(left)))
	off := putList(b, 60, members)
	off = putList(b, off, joined)
	putList(b, off, left)
	return b
}

func putList(b []byte, off int, l []uint32) int {
	for _, v := range l {
		cswire.PutU32(b, off, v)
		off += 4
	}
	return off
}

func b2u(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}
