package cfg

import (
	"fmt"
	"net"

	"github.com/corobus/corobus/services/cswire"
)

// Client-side encoders and decoders, for corobus's own clients (the
// `corobus cfg` and `corobus quorum` verbs) and tests: the messages libcfg
// sends and reads.

// EncodeRequest builds a request without arguments (LOCAL_GET,
// RELOAD_CONFIG, REOPEN_LOG_FILES, RINGSTATUSGET, TRACKSTOP).
func EncodeRequest(id int32) []byte { return cswire.NewRequest(id, cswire.ReqHeaderSize) }

// EncodeNodeID builds GET_NODE_ADDRS (or any request with a node id @16).
func EncodeNodeID(id int32, node uint32) []byte {
	b := cswire.NewRequest(id, 24)
	cswire.PutU32(b, 16, node)
	return b
}

// EncodeNodeStatusGet builds NODESTATUSGET for version 1.
func EncodeNodeStatusGet(node uint32) []byte {
	b := cswire.NewRequest(ReqNodeStatusGet, 32)
	cswire.PutU32(b, 16, node)
	cswire.PutU32(b, 24, NodeStatusV1)
	return b
}

// EncodeTryShutdown builds TRYSHUTDOWN.
func EncodeTryShutdown(flags uint32) []byte {
	b := cswire.NewRequest(ReqTryShutdown, 24)
	cswire.PutU32(b, 16, flags)
	return b
}

// EncodeKillNode builds KILLNODE, the reason counted with its NUL as
// libcfg counts it.
func EncodeKillNode(node uint32, reason string) []byte {
	b := cswire.NewRequest(ReqKillNode, 288)
	cswire.PutU32(b, 16, node)
	if len(reason) > csNameLen-1 {
		reason = reason[:csNameLen-1]
	}
	cswire.PutU32(b, 24, uint32(len(reason)+1)&0xffff)
	copy(b[26:], reason)
	return b
}

// DecodeLocalGet reads LOCAL_GET's answer.
func DecodeLocalGet(b []byte) (uint32, cswire.Error, error) {
	_, code, err := cswire.ParseResponse(b)
	if err != nil || len(b) < 28 {
		return 0, code, fmt.Errorf("cfg local_get response: %w", cswire.ErrShort)
	}
	return cswire.U32(b, 24), code, nil
}

// DecodeNodeAddrs reads GET_NODE_ADDRS's answer.
func DecodeNodeAddrs(b []byte) ([]net.IP, cswire.Error, error) {
	_, code, err := cswire.ParseResponse(b)
	if err != nil {
		return nil, 0, err
	}
	if code != cswire.OK {
		return nil, code, nil
	}
	if len(b) < 32 {
		return nil, code, cswire.ErrShort
	}
	family, n := cswire.U32(b, 24), uint64(cswire.U32(b, 28))
	if 32+AddrLen*n > uint64(len(b)) {
		return nil, code, fmt.Errorf("cfg node addresses run past the message: %w", cswire.ErrInvalidParam)
	}
	var out []net.IP
	for i := 0; i < int(n); i++ {
		a := b[32+AddrLen*i : 32+AddrLen*(i+1)]
		if family == AFInet {
			out = append(out, net.IP(append([]byte(nil), a[:4]...)))
		} else {
			out = append(out, net.IP(append([]byte(nil), a...)))
		}
	}
	return out, code, nil
}

// DecodeNodeStatus reads NODESTATUSGET's answer.
func DecodeNodeStatus(b []byte) (NodeStatus, cswire.Error, error) {
	_, code, err := cswire.ParseResponse(b)
	if err != nil {
		return NodeStatus{}, 0, err
	}
	if code != cswire.OK {
		return NodeStatus{}, code, nil
	}
	if len(b) < nodeStatusV1Size {
		return NodeStatus{}, code, cswire.ErrShort
	}
	base := cswire.ResHeaderSize
	st := NodeStatus{NodeID: cswire.U32(b, base+4), Reachable: b[base+8] != 0, Remote: b[base+9] != 0, External: b[base+10] != 0,
		OnwireMin: b[base+11], OnwireMax: b[base+12], OnwireVer: b[base+13]}
	for i := range st.Links {
		off := base + 16 + i*linkStatusSize
		st.Links[i] = LinkStatus{Enabled: b[off] != 0, Connected: b[off+1] != 0, DynConnected: b[off+2] != 0,
			MTU: cswire.U32(b, off+4), Src: cswire.CString(b, off+8, MaxHostLen), Dst: cswire.CString(b, off+8+MaxHostLen, MaxHostLen)}
	}
	return st, code, nil
}
