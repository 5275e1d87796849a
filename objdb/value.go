// Package objdb is corobus's object database: corosync's typed keys (cmap's
// key names and value types) stored in a JetStream key-value bucket that is
// replicated across the nodes, read from a watched local copy, and tracked
// for changes.
package objdb

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/corobus/corobus/services/cswire"
)

// Type is a value type, numbered as libcmap's cmap_value_types_t so that
// the cmap service passes it through unchanged.
type Type uint8

// The value types.
const (
	Int8   Type = 1
	Uint8  Type = 2
	Int16  Type = 3
	Uint16 Type = 4
	Int32  Type = 5
	Uint32 Type = 6
	Int64  Type = 7
	Uint64 Type = 8
	Float  Type = 9
	Double Type = 10
	String Type = 11
	Binary Type = 12
)

// String is the type's name as corosync-cmapctl prints it (u32, str, …).
func (t Type) String() string {
	switch t {
	case Int8:
		return "i8"
	case Uint8:
		return "u8"
	case Int16:
		return "i16"
	case Uint16:
		return "u16"
	case Int32:
		return "i32"
	case Uint32:
		return "u32"
	case Int64:
		return "i64"
	case Uint64:
		return "u64"
	case Float:
		return "flt"
	case Double:
		return "dbl"
	case String:
		return "str"
	case Binary:
		return "bin"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is one of the twelve types.
func (t Type) Valid() bool { return t >= Int8 && t <= Binary }

// ParseType reads a type name (u8 … bin).
func ParseType(s string) (Type, error) {
	for t := Int8; t <= Binary; t++ {
		if t.String() == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown type %q (expected u8 u16 u32 u64 i8 i16 i32 i64 flt dbl str bin): %w", s, ErrInvalidParam)
}

// Size is the fixed size of a numeric type's value, 0 for str and bin.
func (t Type) Size() int {
	switch t {
	case Int8, Uint8:
		return 1
	case Int16, Uint16:
		return 2
	case Int32, Uint32, Float:
		return 4
	case Int64, Uint64, Double:
		return 8
	}
	return 0
}

// Integer reports whether inc and dec apply to t.
func (t Type) Integer() bool { return t >= Int8 && t <= Uint64 }

// Value is a typed value. Data holds the value as libcmap carries it:
// numbers in host (little-endian) order, strings with their terminating
// NUL, binary as is.
type Value struct {
	Type Type
	Data []byte
}

// Errors, as cs_error_t codes so that the cmap service returns what
// corosync would.
var (
	ErrNotExist     = cswire.ErrNotExist
	ErrExist        = cswire.ErrExist
	ErrInvalidParam = cswire.ErrInvalidParam
	ErrAccess       = cswire.ErrAccess
	ErrTryAgain     = cswire.ErrTryAgain
	ErrNameTooLong  = cswire.ErrNameTooLong
)

// Key name rules of corosync's icmap.
const (
	MinKeyLen = 3
	MaxKeyLen = 255
)

// ValidKey checks corosync's rules: 3 to 255 characters of
// A-Za-z0-9 . _ - / :. Whichever rule a name breaks, the error is
// CS_ERR_NAME_TOO_LONG: corosync's icmap has one check for all of them and
// answers a set of a new key that fails it with that code
// (corosync-cmapctl -s ab u8 1: "Error CS_ERR_NAME_TOO_LONG").
func ValidKey(key string) error {
	if why := keyProblem(key); why != "" {
		return fmt.Errorf("%s: %w", why, ErrNameTooLong)
	}
	return nil
}

// lookupKey checks the name of a key to read, delete or adjust. A name
// that breaks the rules is a key that cannot exist: corosync's icmap looks
// it up without checking it and answers CS_ERR_NOT_EXIST
// (corosync-cmapctl -g ab). A name over 255 characters stays
// CS_ERR_NAME_TOO_LONG: libcmap refuses it so before asking.
func lookupKey(key string) error {
	why := keyProblem(key)
	switch {
	case why == "":
		return nil
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%s: %w", why, ErrNameTooLong)
	}
	return fmt.Errorf("%s: %w", why, ErrNotExist)
}

// keyProblem says which of corosync's key name rules key breaks, or "".
func keyProblem(key string) string {
	if len(key) < MinKeyLen {
		return fmt.Sprintf("key %q: shorter than %d characters", key, MinKeyLen)
	}
	if len(key) > MaxKeyLen {
		return fmt.Sprintf("key %.20q…: longer than %d characters", key, MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-/:", c) >= 0) {
			return fmt.Sprintf("key %q: character %q not allowed (A-Za-z0-9._-/: only)", key, c)
		}
	}
	return ""
}

// Check validates a value against its type: numbers have their size,
// strings end in one NUL and hold no other.
func (v Value) Check() error {
	if !v.Type.Valid() {
		return fmt.Errorf("value type %d: %w", v.Type, ErrInvalidParam)
	}
	if n := v.Type.Size(); n > 0 && len(v.Data) != n {
		return fmt.Errorf("%s value of %d bytes, want %d: %w", v.Type, len(v.Data), n, ErrInvalidParam)
	}
	return nil
}

// normalized gives a string its terminating NUL: libcmap sends some
// strings with it and some without, and corosync stores them with it, so
// that every reader (and every track notification, which carries the new
// and old values back to back) finds the end.
func (v Value) normalized() Value {
	if v.Type == String && (len(v.Data) == 0 || v.Data[len(v.Data)-1] != 0) {
		v.Data = append(append([]byte(nil), v.Data...), 0)
	}
	return v
}

// ParseValue reads a value from its text form, as corosync-cmapctl -s takes
// it: decimal (or 0x…) numbers, strings as they are, binary as hex.
func ParseValue(t Type, s string) (Value, error) {
	v := Value{Type: t}
	bad := func(err error) (Value, error) {
		// strconv's own words, without its function's name and a
		// second copy of the input; a range with the type's bounds.
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
			if ne.Err == strconv.ErrRange && t.Integer() {
				shift := 64 - t.Size()*8
				lo, hi := "0", strconv.FormatUint(uint64(math.MaxUint64)>>shift, 10)
				if t == Int8 || t == Int16 || t == Int32 || t == Int64 {
					lo, hi = strconv.FormatInt(int64(math.MinInt64)>>shift, 10), strconv.FormatInt(int64(math.MaxInt64)>>shift, 10)
				}
				err = fmt.Errorf("out of range (%s to %s)", lo, hi)
			}
		}
		return Value{}, fmt.Errorf("%q is not a valid %s value: %v: %w", s, t, err, ErrInvalidParam)
	}
	switch t {
	case Int8, Int16, Int32, Int64:
		n, err := strconv.ParseInt(s, 0, t.Size()*8)
		if err != nil {
			return bad(err)
		}
		v.Data = putInt(t, uint64(n))
	case Uint8, Uint16, Uint32, Uint64:
		n, err := strconv.ParseUint(s, 0, t.Size()*8)
		if err != nil {
			return bad(err)
		}
		v.Data = putInt(t, n)
	case Float:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return bad(err)
		}
		v.Data = binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(f)))
	case Double:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad(err)
		}
		v.Data = binary.LittleEndian.AppendUint64(nil, math.Float64bits(f))
	case String:
		v.Data = append([]byte(s), 0)
	case Binary:
		b, err := hex.DecodeString(s)
		if err != nil {
			return bad(err)
		}
		v.Data = b
	default:
		return Value{}, fmt.Errorf("value type %d: %w", t, ErrInvalidParam)
	}
	return v, nil
}

func putInt(t Type, n uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, n)
	return b[:t.Size()]
}

// Int reads an integer value, sign-extended for signed types.
func (v Value) Int() (int64, bool) {
	if !v.Type.Integer() || len(v.Data) != v.Type.Size() {
		return 0, false
	}
	var u uint64
	for i := len(v.Data) - 1; i >= 0; i-- {
		u = u<<8 | uint64(v.Data[i])
	}
	switch v.Type {
	case Int8:
		return int64(int8(u)), true
	case Int16:
		return int64(int16(u)), true
	case Int32:
		return int64(int32(u)), true
	}
	return int64(u), true
}

// String formats a value as corosync-cmapctl prints it.
func (v Value) String() string {
	switch v.Type {
	case Int8, Int16, Int32, Int64:
		n, _ := v.Int()
		return strconv.FormatInt(n, 10)
	case Uint8, Uint16, Uint32, Uint64:
		n, _ := v.Int()
		return strconv.FormatUint(uint64(n), 10)
	case Float:
		if len(v.Data) == 4 {
			return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(v.Data))), 'f', 6, 32)
		}
	case Double:
		if len(v.Data) == 8 {
			return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(v.Data)), 'f', 6, 64)
		}
	case String:
		return strings.TrimRight(string(v.Data), "\x00")
	case Binary:
		return hex.EncodeToString(v.Data)
	}
	return fmt.Sprintf("%x", v.Data)
}

// adjust adds step to an integer value, wrapping as C does.
func (v Value) adjust(step int64) (Value, error) {
	n, ok := v.Int()
	if !ok {
		return Value{}, fmt.Errorf("%s value cannot be incremented: %w", v.Type, ErrInvalidParam)
	}
	return Value{Type: v.Type, Data: putInt(v.Type, uint64(n+step))}, nil
}

// encode is the stored form: one type byte, then the data.
func (v Value) encode() []byte { return append([]byte{byte(v.Type)}, v.Data...) }

func decodeValue(b []byte) (Value, error) {
	if len(b) == 0 || !Type(b[0]).Valid() {
		return Value{}, fmt.Errorf("stored value without a valid type byte")
	}
	return Value{Type: Type(b[0]), Data: b[1:]}, nil
}
