// Package cswire holds what every corosync client API shares on the wire:
// the cs_error_t codes, and mar_name_t, the fixed-size name that libcmap,
// libcpg and friends embed in their messages. Layouts are those of
// corosync 3.1's include/corosync/corotypes.h and mar_gen.h on 64-bit Linux:
// every field of a marshalled struct is aligned to 8 bytes.
package cswire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Error is a cs_error_t.
type Error int32

// cs_error_t values, as corosync's clients compare them.
const (
	OK                 Error = 1
	ErrLibrary         Error = 2
	ErrVersion         Error = 3
	ErrInit            Error = 4
	ErrTimeout         Error = 5
	ErrTryAgain        Error = 6
	ErrInvalidParam    Error = 7
	ErrNoMemory        Error = 8
	ErrBadHandle       Error = 9
	ErrBusy            Error = 10
	ErrAccess          Error = 11
	ErrNotExist        Error = 12
	ErrNameTooLong     Error = 13
	ErrExist           Error = 14
	ErrNoSpace         Error = 15
	ErrInterrupt       Error = 16
	ErrNameNotFound    Error = 17
	ErrNoResources     Error = 18
	ErrNotSupported    Error = 19
	ErrBadOperation    Error = 20
	ErrFailedOperation Error = 21
	ErrMessageError    Error = 22
	ErrQueueFull       Error = 23
	ErrQueueNotAvail   Error = 24
	ErrBadFlags        Error = 25
	ErrTooBig          Error = 26
	ErrNoSections      Error = 27
	ErrContextNotFound Error = 28
	ErrTooManyGroups   Error = 30
	ErrSecurity        Error = 100
)

var errorNames = map[Error]string{
	OK: "CS_OK", ErrLibrary: "CS_ERR_LIBRARY", ErrVersion: "CS_ERR_VERSION", ErrInit: "CS_ERR_INIT",
	ErrTimeout: "CS_ERR_TIMEOUT", ErrTryAgain: "CS_ERR_TRY_AGAIN", ErrInvalidParam: "CS_ERR_INVALID_PARAM",
	ErrNoMemory: "CS_ERR_NO_MEMORY", ErrBadHandle: "CS_ERR_BAD_HANDLE", ErrBusy: "CS_ERR_BUSY",
	ErrAccess: "CS_ERR_ACCESS", ErrNotExist: "CS_ERR_NOT_EXIST", ErrNameTooLong: "CS_ERR_NAME_TOO_LONG",
	ErrExist: "CS_ERR_EXIST", ErrNoSpace: "CS_ERR_NO_SPACE", ErrInterrupt: "CS_ERR_INTERRUPT",
	ErrNameNotFound: "CS_ERR_NAME_NOT_FOUND", ErrNoResources: "CS_ERR_NO_RESOURCES",
	ErrNotSupported: "CS_ERR_NOT_SUPPORTED", ErrBadOperation: "CS_ERR_BAD_OPERATION",
	ErrFailedOperation: "CS_ERR_FAILED_OPERATION", ErrMessageError: "CS_ERR_MESSAGE_ERROR",
	ErrQueueFull: "CS_ERR_QUEUE_FULL", ErrQueueNotAvail: "CS_ERR_QUEUE_NOT_AVAILABLE",
	ErrBadFlags: "CS_ERR_BAD_FLAGS", ErrTooBig: "CS_ERR_TOO_BIG", ErrNoSections: "CS_ERR_NO_SECTIONS",
	ErrContextNotFound: "CS_ERR_CONTEXT_NOT_FOUND", ErrTooManyGroups: "CS_ERR_TOO_MANY_GROUPS",
	ErrSecurity: "CS_ERR_SECURITY",
}

func (e Error) String() string {
	if n, ok := errorNames[e]; ok {
		return n
	}
	return fmt.Sprintf("cs_error_t(%d)", int32(e))
}

// Error makes a cs_error_t usable as a Go error.
func (e Error) Error() string { return e.String() }

// Code maps a Go error to the cs_error_t a corosync client expects: a
// wrapped Error is returned as is, anything else is a library error.
func Code(err error) Error {
	if err == nil {
		return OK
	}
	var e Error
	if errors.As(err, &e) {
		return e
	}
	return ErrLibrary
}

// MaxNameLength is CS_MAX_NAME_LENGTH: the value bytes of a mar_name_t.
const MaxNameLength = 256

// NameSize is sizeof(mar_name_t): a uint16 length aligned to 8, then 256
// value bytes.
const NameSize = 8 + MaxNameLength

// ErrShort is returned by decoders given fewer bytes than the layout needs.
var ErrShort = errors.New("message shorter than its layout")

// GetName reads a mar_name_t at off. The length must fit the value array;
// a client that says otherwise sent garbage and gets CS_ERR_INVALID_PARAM.
func GetName(b []byte, off int) (string, error) {
	if len(b) < off+NameSize {
		return "", ErrShort
	}
	n := int(binary.LittleEndian.Uint16(b[off:]))
	if n > MaxNameLength {
		return "", fmt.Errorf("name length %d exceeds %d: %w", n, MaxNameLength, ErrInvalidParam)
	}
	v := b[off+8 : off+8+n]
	// libcmap counts the terminating NUL in some calls and not in others;
	// a name never contains one, so trailing NULs are dropped.
	for len(v) > 0 && v[len(v)-1] == 0 {
		v = v[:len(v)-1]
	}
	return string(v), nil
}

// PutName writes a mar_name_t at off (b must have NameSize bytes there).
func PutName(b []byte, off int, name string) {
	n := copy(b[off+8:off+8+MaxNameLength], name)
	binary.LittleEndian.PutUint16(b[off:], uint16(n))
}

// U32, U64, I32 read little-endian fields; Put* write them. corosync's
// marshalling is host order, and corobus serves x86-64 and arm64 hosts,
// both little-endian.
func U32(b []byte, off int) uint32       { return binary.LittleEndian.Uint32(b[off:]) }
func U64(b []byte, off int) uint64       { return binary.LittleEndian.Uint64(b[off:]) }
func I32(b []byte, off int) int32        { return int32(binary.LittleEndian.Uint32(b[off:])) }
func PutU32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func PutU64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
func PutI32(b []byte, off int, v int32)  { binary.LittleEndian.PutUint32(b[off:], uint32(v)) }
