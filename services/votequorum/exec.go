package votequorum

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// The messages votequorum instances multicast to each other in total
// order (corosync's req_exec_quorum_*): a 16-byte header whose id is
// corosync's SERVICE_ID_MAKE(VOTEQUORUM_SERVICE, n), then packed fields.
// Their numbers are the N of runtime.services.votequorum.N.{rx,tx}.
const (
	ExecNodeInfo            = 0
	ExecReconfigure         = 1
	ExecQdeviceReg          = 2
	ExecQdeviceReconfigure  = 3
	NumExec                 = 4
	serviceID               = 5 // VOTEQUORUM_SERVICE
	execNodeInfoSize        = 32
	execReconfigureSize     = 28
	execQdeviceRegSize      = 20 + QdeviceNameLen
	execQdeviceReconfigSize = 16 + 2*QdeviceNameLen
)

// Reconfigure parameters (VOTEQUORUM_RECONFIG_PARAM_*).
const (
	ParamExpectedVotes = 1
	ParamNodeVotes     = 2
	ParamCancelWFA     = 3
)

// Qdevice registration operations.
const (
	QdeviceOpUnregister = 0
	QdeviceOpRegister   = 1
)

// Exec is one decoded exec message; Kind says which fields are set.
type Exec struct {
	Kind int
	// NODEINFO
	NodeID, Votes, Expected, Flags uint32
	// RECONFIGURE (NodeID too)
	Value uint32
	Param uint8
	// QDEVICE_REG (Op, Name) and QDEVICE_RECONFIGURE (Name, NewName)
	Op      uint32
	Name    string
	NewName string
}

func execHeader(kind, size int) []byte { return cswire.ExecHeader(serviceID, kind, size) }

// Encode lays out an exec message.
func (e Exec) Encode() []byte {
	switch e.Kind {
	case ExecNodeInfo:
		b := execHeader(ExecNodeInfo, execNodeInfoSize)
		cswire.PutU32(b, 16, e.NodeID)
		cswire.PutU32(b, 20, e.Votes)
		cswire.PutU32(b, 24, e.Expected)
		cswire.PutU32(b, 28, e.Flags)
		return b
	case ExecReconfigure:
		b := execHeader(ExecReconfigure, execReconfigureSize)
		cswire.PutU32(b, 16, e.NodeID)
		cswire.PutU32(b, 20, e.Value)
		b[24] = e.Param
		return b
	case ExecQdeviceReg:
		b := execHeader(ExecQdeviceReg, execQdeviceRegSize)
		cswire.PutU32(b, 16, e.Op)
		cswire.PutCString(b, 20, QdeviceNameLen, e.Name)
		return b
	case ExecQdeviceReconfigure:
		b := execHeader(ExecQdeviceReconfigure, execQdeviceReconfigSize)
		cswire.PutCString(b, 16, QdeviceNameLen, e.Name)
		cswire.PutCString(b, 16+QdeviceNameLen, QdeviceNameLen, e.NewName)
		return b
	}
	panic(fmt.Sprintf("votequorum: no exec message %d", e.Kind))
}

// DecodeExec reads an exec message another instance multicast.
func DecodeExec(b []byte) (Exec, error) {
	if len(b) < cswire.ReqHeaderSize {
		return Exec{}, fmt.Errorf("votequorum exec message of %d bytes: %w", len(b), cswire.ErrShort)
	}
	id := cswire.I32(b, 0)
	if id>>16 != serviceID || int(cswire.I32(b, 8)) != len(b) {
		return Exec{}, fmt.Errorf("votequorum exec message: bad header (id %#x, size %d of %d): %w",
			id, cswire.I32(b, 8), len(b), cswire.ErrInvalidParam)
	}
	e := Exec{Kind: int(id & 0xffff)}
	sizes := map[int]int{ExecNodeInfo: execNodeInfoSize, ExecReconfigure: execReconfigureSize,
		ExecQdeviceReg: execQdeviceRegSize, ExecQdeviceReconfigure: execQdeviceReconfigSize}
	want, ok := sizes[e.Kind]
	if !ok || len(b) != want {
		return e, fmt.Errorf("votequorum exec message %d of %d bytes: %w", e.Kind, len(b), cswire.ErrInvalidParam)
	}
	switch e.Kind {
	case ExecNodeInfo:
		e.NodeID, e.Votes, e.Expected, e.Flags = cswire.U32(b, 16), cswire.U32(b, 20), cswire.U32(b, 24), cswire.U32(b, 28)
	case ExecReconfigure:
		e.NodeID, e.Value, e.Param = cswire.U32(b, 16), cswire.U32(b, 20), b[24]
	case ExecQdeviceReg:
		e.Op, e.Name = cswire.U32(b, 16), cswire.CString(b, 20, QdeviceNameLen)
	case ExecQdeviceReconfigure:
		e.Name, e.NewName = cswire.CString(b, 16, QdeviceNameLen), cswire.CString(b, 16+QdeviceNameLen, QdeviceNameLen)
	}
	return e, nil
}
