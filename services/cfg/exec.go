package cfg

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// The messages cfg instances multicast to each other in total order
// (corosync's req_exec_cfg_*), numbered as corosync numbers them: they are
// the N of runtime.services.cfg.N.{rx,tx}. Ring re-enable and crypto
// reconfiguration exist in corosync only for knet; corobus never sends
// them but keeps their numbers.
const (
	ExecRingReenable   = 0
	ExecKillNode       = 1
	ExecShutdown       = 2
	ExecReloadConfig   = 3
	ExecCryptoReconfig = 4
	NumExec            = 5
	serviceID          = 1 // CFG_SERVICE
	execKillNodeSize   = 24 + cswire.NameSize
	execShutdownSize   = cswire.ReqHeaderSize
	execReloadSize     = 32
)

// Exec is one decoded exec message.
type Exec struct {
	Kind int
	// KILLNODE: the node to stop and why.
	NodeID uint32
	Reason string
	// RELOAD_CONFIG: the request on the originating node that waits for
	// its answer (corosync's message source).
	Request uint64
}

func execHeader(kind, size int) []byte { return cswire.ExecHeader(serviceID, kind, size) }

// Encode lays out an exec message.
func (e Exec) Encode() []byte {
	switch e.Kind {
	case ExecKillNode: // nodeid @16, mar_name_t reason @24
		b := execHeader(ExecKillNode, execKillNodeSize)
		cswire.PutU32(b, 16, e.NodeID)
		cswire.PutName(b, 24, e.Reason)
		return b
	case ExecShutdown:
		return execHeader(ExecShutdown, execShutdownSize)
	case ExecReloadConfig: // request @24
		b := execHeader(ExecReloadConfig, execReloadSize)
		cswire.PutU64(b, 24, e.Request)
		return b
	}
	panic(fmt.Sprintf("cfg: no exec message %d", e.Kind))
}

// DecodeExec reads an exec message another instance multicast.
func DecodeExec(b []byte) (Exec, error) {
	if len(b) < cswire.ReqHeaderSize {
		return Exec{}, fmt.Errorf("cfg exec message of %d bytes: %w", len(b), cswire.ErrShort)
	}
	id := cswire.I32(b, 0)
	if id>>16 != serviceID || int(cswire.I32(b, 8)) != len(b) {
		return Exec{}, fmt.Errorf("cfg exec message: bad header (id %#x, size %d of %d): %w",
			id, cswire.I32(b, 8), len(b), cswire.ErrInvalidParam)
	}
	e := Exec{Kind: int(id & 0xffff)}
	want := map[int]int{ExecKillNode: execKillNodeSize, ExecShutdown: execShutdownSize, ExecReloadConfig: execReloadSize}[e.Kind]
	if want == 0 || len(b) != want {
		return e, fmt.Errorf("cfg exec message %d of %d bytes: %w", e.Kind, len(b), cswire.ErrInvalidParam)
	}
	switch e.Kind {
	case ExecKillNode:
		e.NodeID = cswire.U32(b, 16)
		r, err := cswire.GetName(b, 24)
		if err != nil {
			return e, fmt.Errorf("cfg kill message: %w", err)
		}
		e.Reason = r
	case ExecReloadConfig:
		e.Request = cswire.U64(b, 24)
	}
	return e, nil
}
