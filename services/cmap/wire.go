// Package cmap is corosync's cmap service over corobus's objdb: it speaks
// libcmap's wire protocol (include/corosync/ipc_cmap.h of corosync 3.1)
// so that corosync-cmapctl and every program linked against libcmap work
// unchanged.
//
// Messages are handled whole: a request starts with libqb's 16-byte request
// header {int32 id; int32 size} (each field aligned to 8), a response with
// the 24-byte response header {int32 id; int32 size; int32 error}. Every
// field after them is aligned to 8 as corosync declares it.
package cmap

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// Request and response ids.
const (
	ReqSet            = 0
	ReqDelete         = 1
	ReqGet            = 2
	ReqAdjustInt      = 3
	ReqIterInit       = 4
	ReqIterNext       = 5
	ReqIterFinalize   = 6
	ReqTrackAdd       = 7
	ReqTrackDelete    = 8
	ReqSetCurrentMap  = 9
	ResNotifyCallback = 9
	ResSetCurrentMap  = 10
)

// Track flags of cmap_track_add.
const (
	TrackDelete = 1
	TrackModify = 2
	TrackAdd    = 4
	TrackPrefix = 8
)

// Maps of cmap_initialize_map.
const (
	MapDefault = 0
	MapStats   = 1
)

// Header sizes.
const (
	ReqHeaderSize = 16
	ResHeaderSize = 24
)

// Layout offsets of ipc_cmap.h's structs (whole message, header included).
const (
	offKey       = ReqHeaderSize            // mar_name_t key_name / prefix
	offAfterKey  = offKey + cswire.NameSize // 280
	setValueOff  = offAfterKey + 16         // value_len@280, type@288, value@296
	getReqSize   = offAfterKey + 8          // value_len@280
	adjustSize   = offAfterKey + 8          // step@280
	iterInitSize = offAfterKey              // prefix only
	handleReq    = ReqHeaderSize + 8        // iter_next, iter_finalize, track_delete
	trackAddSize = offAfterKey + 16         // track_type@280, inst@288
	setMapSize   = ReqHeaderSize + 8        // map@16
	getResValue  = ResHeaderSize + 16       // value_len@24, type@32, value@40
	iterNextRes  = ResHeaderSize + cswire.NameSize + 16
	notifyValues = ResHeaderSize + 8 + cswire.NameSize + 8 + 8 + 8 + 8 + 8
)

// Request is a decoded libcmap request.
type Request struct {
	ID      int32
	Key     string // key_name, or the prefix of ITER_INIT / TRACK_ADD
	Type    uint8  // SET: the value's cmap type
	Value   []byte // SET: the value bytes (aliasing the message)
	MaxLen  uint64 // GET: the caller's buffer size (0: only type and length wanted)
	Step    int32  // ADJUST_INT
	Handle  uint64 // ITER_NEXT, ITER_FINALIZE, TRACK_DELETE
	Track   int32  // TRACK_ADD: CMAP_TRACK_* flags
	UserCtx uint64 // TRACK_ADD: the client's track_inst_handle, echoed in notifications
	Map     int32  // SET_CURRENT_MAP
}

// DecodeRequest checks a whole request message against its layout.
// Any mismatch — a size field that disagrees with the message, a value that
// runs past it, an unknown id — is an error the caller answers with
// CS_ERR_INVALID_PARAM (or by closing the connection).
func DecodeRequest(msg []byte) (Request, error) {
	if len(msg) < ReqHeaderSize {
		return Request{}, fmt.Errorf("cmap request of %d bytes: %w", len(msg), cswire.ErrShort)
	}
	r := Request{ID: cswire.I32(msg, 0)}
	if size := cswire.I32(msg, 8); int(size) != len(msg) {
		return r, fmt.Errorf("cmap request header says %d bytes, message has %d: %w", size, len(msg), cswire.ErrInvalidParam)
	}
	need := func(n int) error {
		if len(msg) < n {
			return fmt.Errorf("cmap request %d needs %d bytes, has %d: %w", r.ID, n, len(msg), cswire.ErrInvalidParam)
		}
		return nil
	}
	var err error
	switch r.ID {
	case ReqSet:
		if err = need(setValueOff); err != nil {
			return r, err
		}
		n := cswire.U64(msg, offAfterKey)
		r.Type = msg[offAfterKey+8]
		if n > uint64(len(msg)-setValueOff) {
			return r, fmt.Errorf("cmap set value of %d bytes runs past the message: %w", n, cswire.ErrInvalidParam)
		}
		r.Value = msg[setValueOff : setValueOff+int(n)]
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqDelete:
		if err = need(offAfterKey); err != nil {
			return r, err
		}
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqGet:
		if err = need(getReqSize); err != nil {
			return r, err
		}
		r.MaxLen = cswire.U64(msg, offAfterKey)
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqAdjustInt:
		if err = need(adjustSize); err != nil {
			return r, err
		}
		r.Step = cswire.I32(msg, offAfterKey)
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqIterInit:
		if err = need(iterInitSize); err != nil {
			return r, err
		}
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqIterNext, ReqIterFinalize, ReqTrackDelete:
		if err = need(handleReq); err != nil {
			return r, err
		}
		r.Handle = cswire.U64(msg, ReqHeaderSize)
	case ReqTrackAdd:
		if err = need(trackAddSize); err != nil {
			return r, err
		}
		r.Track = cswire.I32(msg, offAfterKey)
		r.UserCtx = cswire.U64(msg, offAfterKey+8)
		r.Key, err = cswire.GetName(msg, offKey)
	case ReqSetCurrentMap:
		if err = need(setMapSize); err != nil {
			return r, err
		}
		r.Map = cswire.I32(msg, ReqHeaderSize)
	default:
		return r, fmt.Errorf("unknown cmap request id %d: %w", r.ID, cswire.ErrInvalidParam)
	}
	return r, err
}

// response builds a response of size bytes with its header filled in.
func response(id int32, size int, code cswire.Error) []byte {
	b := make([]byte, size)
	cswire.PutI32(b, 0, id)
	cswire.PutI32(b, 8, int32(size))
	cswire.PutI32(b, 16, int32(code))
	return b
}

// ResponseID is the response id that answers a request id. They are equal
// but for SET_CURRENT_MAP, whose response id comes after NOTIFY_CALLBACK.
func ResponseID(req int32) int32 {
	if req == ReqSetCurrentMap {
		return ResSetCurrentMap
	}
	return req
}

// EncodeStatus is a response that carries only a status: SET, DELETE,
// ADJUST_INT, ITER_FINALIZE, SET_CURRENT_MAP, and any failed request. A
// failed request's response still has its struct's full size, as libcmap
// checks sizes before it reads the error.
func EncodeStatus(req int32, code cswire.Error) []byte {
	size := ResHeaderSize
	switch req {
	case ReqGet:
		size = getResValue
	case ReqIterInit, ReqTrackAdd, ReqTrackDelete:
		size = ResHeaderSize + 8
	case ReqIterNext:
		size = iterNextRes
	}
	return response(ResponseID(req), size, code)
}

// EncodeGet answers GET. With maxLen 0 the client asked only for the type
// and length (cmap_get with a NULL value); else the value must fit.
func EncodeGet(typ uint8, value []byte, maxLen uint64) []byte {
	n := len(value)
	if maxLen == 0 {
		n = 0
	} else if uint64(len(value)) > maxLen {
		b := response(ReqGet, getResValue, cswire.ErrInvalidParam)
		return b
	}
	b := response(ReqGet, getResValue+n, cswire.OK)
	cswire.PutU64(b, ResHeaderSize, uint64(len(value)))
	b[ResHeaderSize+8] = typ
	copy(b[getResValue:], value[:n])
	return b
}

// EncodeHandle answers ITER_INIT, TRACK_ADD (the new handle) and
// TRACK_DELETE (the client's track_inst_handle).
func EncodeHandle(req int32, h uint64) []byte {
	b := response(req, ResHeaderSize+8, cswire.OK)
	cswire.PutU64(b, ResHeaderSize, h)
	return b
}

// EncodeIterNext answers ITER_NEXT with the next key's name, length and
// type. CS_ERR_NO_SECTIONS ends the iteration (EncodeStatus).
func EncodeIterNext(key string, typ uint8, valueLen uint64) []byte {
	b := response(ReqIterNext, iterNextRes, cswire.OK)
	cswire.PutName(b, ResHeaderSize, key)
	cswire.PutU64(b, ResHeaderSize+cswire.NameSize, valueLen)
	b[ResHeaderSize+cswire.NameSize+8] = typ
	return b
}

// Notify is one track event for a client.
type Notify struct {
	UserCtx  uint64
	Key      string
	Event    int32 // TrackAdd, TrackDelete or TrackModify
	NewType  uint8
	OldType  uint8
	NewValue []byte
	OldValue []byte
}

// EncodeNotify builds res_lib_cmap_notify_callback, sent on the event
// socket: the new value's bytes, then the old value's.
func EncodeNotify(n Notify) []byte {
	b := response(ResNotifyCallback, notifyValues+len(n.NewValue)+len(n.OldValue), cswire.OK)
	off := ResHeaderSize
	cswire.PutU64(b, off, n.UserCtx)
	off += 8
	cswire.PutName(b, off, n.Key)
	off += cswire.NameSize
	cswire.PutI32(b, off, n.Event)
	off += 8
	b[off] = n.NewType
	off += 8
	b[off] = n.OldType
	off += 8
	cswire.PutU64(b, off, uint64(len(n.NewValue)))
	off += 8
	cswire.PutU64(b, off, uint64(len(n.OldValue)))
	off += 8
	copy(b[off:], n.NewValue)
	copy(b[off+len(n.NewValue):], n.OldValue)
	return b
}
