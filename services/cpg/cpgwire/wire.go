// Package cpgwire holds the byte layouts of corosync's CPG: the libcpg IPC
// messages (requests, responses, callbacks) of corosync 3.1's
// include/corosync/ipc_cpg.h on 64-bit Linux, and corobus's own frames of
// CPG traffic on the ordered multicast (exec.go). The service
// (services/cpg), the pure-Go client (package cpg) and observers share it.
//
// Every libcpg struct is aligned(8) field by field: a request header
// {int32 id, int32 size} takes 16 bytes, a response header {id, size,
// error} 24, mar_cpg_name_t {u32 length, char value[128]} 136,
// mar_cpg_address_t {nodeid, pid, reason} 24. Numbers are little-endian
// (the host's order, which libcpg sends as is).
//
// Decoding never reads past a message: a size that disagrees with the
// message, a name longer than its array or a payload running past the end
// is an error, never a panic.
package cpgwire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// Request message ids (enum req_cpg_types).
const (
	ReqJoin         int32 = 0
	ReqLeave        int32 = 1
	ReqMcast        int32 = 2
	ReqMembership   int32 = 3
	ReqLocalGet     int32 = 4
	ReqIterInit     int32 = 5
	ReqIterNext     int32 = 6
	ReqIterFinalize int32 = 7
	ReqFinalize     int32 = 8
	ReqZCAlloc      int32 = 9
	ReqZCFree       int32 = 10
	ReqZCExecute    int32 = 11
	ReqPartialMcast int32 = 12
	numRequestTypes       = 13
)

// Response and callback message ids (enum res_cpg_types).
const (
	ResJoin                 int32 = 0
	ResLeave                int32 = 1
	ResMcast                int32 = 2
	ResMembership           int32 = 3
	ResConfChgCallback      int32 = 4
	ResDeliverCallback      int32 = 5
	ResFlowControlStateSet  int32 = 6
	ResLocalGet             int32 = 7
	ResFlowControlCallback  int32 = 8
	ResIterInit             int32 = 9
	ResIterNext             int32 = 10
	ResIterFinalize         int32 = 11
	ResFinalize             int32 = 12
	ResTotemConfChgCallback int32 = 13
	ResZCAlloc              int32 = 14
	ResZCFree               int32 = 15
	ResZCExecute            int32 = 16
	ResPartialDeliver       int32 = 17
	ResPartialSend          int32 = 18
)

// Reasons of a configuration change (enum lib_cpg_confchg_reason).
const (
	ReasonUndefined uint32 = 0
	ReasonJoin      uint32 = 1
	ReasonLeave     uint32 = 2
	ReasonNodeDown  uint32 = 3
	ReasonNodeUp    uint32 = 4
	ReasonProcDown  uint32 = 5
)

// Fragment types of a partial multicast (enum lib_cpg_partial_types).
const (
	PartialFirst     uint32 = 1
	PartialContinued uint32 = 2
	PartialLast      uint32 = 3
)

// Iteration types (cpg_iteration_type_t).
const (
	IterNameOnly uint32 = 1
	IterOneGroup uint32 = 2
	IterAll      uint32 = 3
)

// Guarantees (cpg_guarantee_t): corosync delivers every one as AGREED.
const (
	GuaranteeUnordered uint32 = 0
	GuaranteeFIFO      uint32 = 1
	GuaranteeAgreed    uint32 = 2
	GuaranteeSafe      uint32 = 3
)

// Limits and flags of libcpg.
const (
	// MaxNameLength is CPG_MAX_NAME_LENGTH.
	MaxNameLength = 128
	// ProcessorCountMax bounds res_lib_cpg_membership_get's list.
	ProcessorCountMax = 384
	// ModelV1DeliverInitialTotemConf is CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF.
	ModelV1DeliverInitialTotemConf uint32 = 1
	// ZCPathLen is CPG_ZC_PATH_LEN.
	ZCPathLen = 128
	// IPCRequestSize is libcpg's IPC_REQUEST_SIZE (and its dispatch
	// buffer): the largest message it sends or takes.
	IPCRequestSize = 8192 * 128
	// MaxAtomicMsgSize is what cpg_max_atomic_msgsize_get reports: larger
	// messages go in fragments.
	MaxAtomicMsgSize = IPCRequestSize - 1024
)

// Sizes of the fixed structs.
const (
	ReqHeaderSize  = 16
	ResHeaderSize  = 24
	NameSize       = 8 + MaxNameLength // mar_cpg_name_t
	AddressSize    = 24                // mar_cpg_address_t
	DescSize       = NameSize + 8      // mar_cpg_iteration_description_t
	joinSize       = ReqHeaderSize + NameSize + 16
	leaveSize      = ReqHeaderSize + NameSize + 8
	membReqSize    = ReqHeaderSize + NameSize
	iterInitSize   = ReqHeaderSize + NameSize + 8
	iterHandleSize = ReqHeaderSize + 8
	zcAllocSize    = ReqHeaderSize + 8 + ZCPathLen
	zcFreeSize     = ReqHeaderSize + 16
	zcExecSize     = ReqHeaderSize + 8
	// McastHeaderSize is sizeof(struct req_lib_cpg_mcast): a response
	// header (libcpg's quirk), guarantee, msglen; the message follows.
	McastHeaderSize = ResHeaderSize + 16
	// PartialHeaderSize is sizeof(struct req_lib_cpg_partial_mcast).
	PartialHeaderSize = ResHeaderSize + 32
	// DeliverHeaderSize is sizeof(struct res_lib_cpg_deliver_callback).
	DeliverHeaderSize = ResHeaderSize + NameSize + 24
	// PartialDeliverHeaderSize is sizeof(struct
	// res_lib_cpg_partial_deliver_callback).
	PartialDeliverHeaderSize = ResHeaderSize + NameSize + 40
	// ConfChgHeaderSize is sizeof(struct res_lib_cpg_confchg_callback);
	// the member, left and joined lists follow.
	ConfChgHeaderSize = ResHeaderSize + NameSize + 24
	// TotemConfChgHeaderSize is sizeof(struct
	// res_lib_cpg_totem_confchg_callback); its u32 member list starts 4
	// bytes earlier (offset 44), as corosync writes it.
	TotemConfChgHeaderSize = ResHeaderSize + 16 + 8
	totemMembersOffset     = ResHeaderSize + 16 + 4
	// MembershipResponseSize is sizeof(struct res_lib_cpg_membership_get).
	MembershipResponseSize = ResHeaderSize + 8 + ProcessorCountMax*AddressSize
	// ZCHeaderSize is sizeof(struct coroipcs_zc_header), at the start of
	// a zero-copy buffer's file; a req_lib_cpg_mcast and the message
	// follow.
	ZCHeaderSize = 16
)

// Errors of decoding.
var (
	ErrShort       = errors.New("cpg message shorter than its layout")
	ErrSize        = errors.New("cpg message size disagrees with its content")
	ErrNameTooLong = errors.New("cpg group name longer than 128 bytes")
	ErrUnknown     = errors.New("unknown cpg message id")
)

// Name is a group name: up to 128 arbitrary bytes.
type Name string

// Valid reports whether the name fits mar_cpg_name_t.
func (n Name) Valid() bool { return len(n) <= MaxNameLength }

// Escaped is the name as corosync prints it (corosync-cpgtool without -e,
// the CPG log lines): printable ASCII as is, a backslash doubled, any
// other byte \xNN. corosync-cpgtool built where C's char is signed (x86)
// prints a byte of 0x80 or more as \xFFFFFFNN instead; corobus cpg does
// the same there (cmd/corobus, cpgPrinter).
func (n Name) Escaped() string {
	b := make([]byte, 0, len(n))
	for i := 0; i < len(n); i++ {
		switch c := n[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c >= ' ' && c < 0x7f:
			b = append(b, c)
		default:
			b = fmt.Appendf(b, "\\x%02X", c)
		}
	}
	return string(b)
}

// Address is a process of a group: cpg_address.
type Address struct {
	NodeID uint32 `json:"nodeid"`
	PID    uint32 `json:"pid"`
	Reason uint32 `json:"reason"`
}

// Description is one item of an iteration: cpg_iteration_description_t.
type Description struct {
	Group  Name
	NodeID uint32
	PID    uint32
}

func le32(b []byte) uint32     { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64     { return binary.LittleEndian.Uint64(b) }
func put32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func put64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// getName reads a mar_cpg_name_t at b.
func getName(b []byte) (Name, error) {
	n := le32(b)
	if n > MaxNameLength {
		return "", ErrNameTooLong
	}
	return Name(b[8 : 8+n]), nil
}

// putName writes a mar_cpg_name_t at b (the name is cut to 128 bytes).
func putName(b []byte, n Name) {
	if len(n) > MaxNameLength {
		n = n[:MaxNameLength]
	}
	put32(b, uint32(len(n)))
	clear(b[8:NameSize])
	copy(b[8:], n)
}

func putAddress(b []byte, a Address) {
	put32(b, a.NodeID)
	put32(b[8:], a.PID)
	put32(b[16:], a.Reason)
}

func getAddress(b []byte) Address {
	return Address{NodeID: le32(b), PID: le32(b[8:]), Reason: le32(b[16:])}
}

// resHeader writes a response header.
func resHeader(b []byte, id int32, err cswire.Error) {
	put32(b, uint32(id))
	put32(b[8:], uint32(len(b)))
	put32(b[16:], uint32(err))
}

func reqHeader(b []byte, id int32) {
	put32(b, uint32(id))
	put32(b[8:], uint32(len(b)))
}

// Header reads a message's id and size fields.
func Header(msg []byte) (id int32, size int32, err error) {
	if len(msg) < ReqHeaderSize {
		return 0, 0, ErrShort
	}
	return int32(le32(msg)), int32(le32(msg[8:])), nil
}
