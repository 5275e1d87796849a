package cswire

import (
	"bytes"
	"fmt"
)

// Sizes of libqb's message headers: a request starts with {int32 id;
// int32 size} (each aligned to 8), a response with {int32 id; int32 size;
// int32 error}.
const (
	ReqHeaderSize = 16
	ResHeaderSize = 24
)

// Request is a request message whose header has been checked: its size
// field matches the message. Readers past the message's end fail instead
// of reading garbage.
type Request struct {
	ID  int32
	Msg []byte
}

// ParseRequest checks a request's header. A size field that disagrees with
// the message is CS_ERR_INVALID_PARAM: the client sent garbage.
func ParseRequest(msg []byte) (Request, error) {
	if len(msg) < ReqHeaderSize {
		return Request{}, fmt.Errorf("request of %d bytes: %w", len(msg), ErrShort)
	}
	r := Request{ID: I32(msg, 0), Msg: msg}
	if size := I32(msg, 8); int(size) != len(msg) {
		return r, fmt.Errorf("request header says %d bytes, message has %d: %w", size, len(msg), ErrInvalidParam)
	}
	return r, nil
}

// Need reports an error unless the message has at least n bytes: the
// layout of request ID needs them.
func (r Request) Need(n int) error {
	if len(r.Msg) < n {
		return fmt.Errorf("request %d needs %d bytes, has %d: %w", r.ID, n, len(r.Msg), ErrInvalidParam)
	}
	return nil
}

// Response builds a response of size bytes (at least the header) with its
// header filled in.
func Response(id int32, size int, code Error) []byte {
	b := make([]byte, max(size, ResHeaderSize))
	PutI32(b, 0, id)
	PutI32(b, 8, int32(len(b)))
	PutI32(b, 16, int32(code))
	return b
}

// CString reads a NUL-terminated string from a fixed char array of n bytes
// at off; an array with no NUL is taken whole (corosync compares such names
// with strncmp over the array's length).
func CString(b []byte, off, n int) string {
	v := b[off : off+n]
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	return string(v)
}

// PutCString writes s into a fixed char array of n bytes at off, NUL
// terminated; s is cut to n-1 bytes.
func PutCString(b []byte, off, n int, s string) {
	if len(s) > n-1 {
		s = s[:n-1]
	}
	copy(b[off:off+n], s)
	b[off+len(s)] = 0
}

// NewRequest builds a request message of size bytes (at least the
// header) with its header filled in, as libqb clients lay it out.
func NewRequest(id int32, size int) []byte {
	b := make([]byte, max(size, ReqHeaderSize))
	PutI32(b, 0, id)
	PutI32(b, 8, int32(len(b)))
	return b
}

// ParseResponse checks a response's header and returns its id and error.
func ParseResponse(msg []byte) (id int32, code Error, err error) {
	if len(msg) < ResHeaderSize {
		return 0, 0, fmt.Errorf("response of %d bytes: %w", len(msg), ErrShort)
	}
	if size := I32(msg, 8); int(size) != len(msg) {
		return 0, 0, fmt.Errorf("response header says %d bytes, message has %d: %w", size, len(msg), ErrInvalidParam)
	}
	return I32(msg, 0), Error(I32(msg, 16)), nil
}

// ExecHeader builds an exec (totem) message of size bytes with corosync's
// qb_ipc_request_header-shaped header filled in: id = service << 16 | kind
// at 0, size at 8.
func ExecHeader(service, kind, size int) []byte {
	b := make([]byte, size)
	PutI32(b, 0, int32(service<<16|kind))
	PutI32(b, 8, int32(size))
	return b
}
