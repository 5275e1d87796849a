package cfg

import (
	"fmt"

	"github.com/corobus/corobus/services/cswire"
)

// libcfg's wire protocol, as include/corosync/ipc_cfg.h and cfg.h of
// corosync 3.1 lay it out on 64-bit Linux.

// Request ids.
const (
	ReqRingStatusGet   = 0
	ReqRingReenable    = 1
	ReqKillNode        = 2
	ReqTryShutdown     = 3
	ReqReplyToShutdown = 4
	ReqGetNodeAddrs    = 5
	ReqLocalGet        = 6
	ReqReloadConfig    = 7
	ReqReopenLogFiles  = 8
	ReqNodeStatusGet   = 9
	ReqTrackStart      = 10
	ReqTrackStop       = 11
)

// Response ids.
const (
	ResRingStatusGet   = 0
	ResRingReenable    = 1
	ResTrackStart      = 2
	ResTrackStop       = 3
	ResKillNode        = 8
	ResTryShutdown     = 9
	ResTestShutdown    = 10
	ResGetNodeAddrs    = 11
	ResLocalGet        = 12
	ResReplyToShutdown = 13
	ResReloadConfig    = 14
	ResReopenLogFiles  = 15
	ResNodeStatusGet   = 16
)

// Shutdown flags of corosync_cfg_try_shutdown.
const (
	ShutdownRequest    = 0
	ShutdownRegardless = 1
	ShutdownImmediate  = 2
)

// FlagName names a shutdown flag.
func FlagName(f uint32) string {
	switch f {
	case ShutdownRequest:
		return "request"
	case ShutdownRegardless:
		return "regardless"
	case ShutdownImmediate:
		return "immediate"
	}
	return fmt.Sprintf("flag %d", f)
}

// HeldDuringSync are the requests corosync marks
// CS_LIB_FLOW_CONTROL_REQUIRED: while a sync runs they are answered
// CS_ERR_TRY_AGAIN.
func HeldDuringSync(id int32) bool {
	switch id {
	case ReqRingStatusGet, ReqRingReenable, ReqKillNode, ReqTryShutdown, ReqReplyToShutdown,
		ReqReloadConfig, ReqTrackStart, ReqTrackStop:
		return true
	}
	return false
}

// Sizes of the fixed arrays.
const (
	MaxInterfaces      = 16  // CFG_MAX_INTERFACES
	InterfaceNameLen   = 128 // CFG_INTERFACE_NAME_MAX_LEN
	InterfaceStatusLen = 512 // CFG_INTERFACE_STATUS_MAX_LEN
	MaxLinks           = 8   // CFG_MAX_LINKS
	MaxHostLen         = 256 // CFG_MAX_HOST_LEN
	AddrLen            = 16  // TOTEMIP_ADDRLEN
	NodeStatusV1       = 1   // CFG_NODE_STATUS_V1
	ringStatusSize     = 32 + MaxInterfaces*InterfaceNameLen + MaxInterfaces*InterfaceStatusLen
	linkStatusSize     = 520
	nodeStatusV1Size   = cswire.ResHeaderSize + 16 + MaxLinks*linkStatusSize // 4200
	csNameLen          = 256                                                 // cs_name_t's value array
)

// Request is a decoded libcfg request.
type Request struct {
	ID       int32
	NodeID   uint32 // KILLNODE, GET_NODE_ADDRS, NODESTATUSGET
	Reason   string // KILLNODE
	Flags    uint32 // TRYSHUTDOWN
	Response uint32 // REPLYTOSHUTDOWN: 1 yes, 0 no
	Version  uint32 // NODESTATUSGET
	Track    uint8  // TRACKSTART
}

// DecodeRequest checks a request against its layout.
func DecodeRequest(msg []byte) (Request, error) {
	h, err := cswire.ParseRequest(msg)
	r := Request{ID: h.ID}
	if err != nil {
		return r, fmt.Errorf("cfg: %w", err)
	}
	need := func(n int) error {
		if err := h.Need(n); err != nil {
			return fmt.Errorf("cfg: %w", err)
		}
		return nil
	}
	switch r.ID {
	case ReqRingStatusGet, ReqRingReenable, ReqLocalGet, ReqReloadConfig, ReqReopenLogFiles, ReqTrackStop:
	case ReqKillNode: // nodeid @16, cs_name_t reason {u16 length @24, value[256] @26}
		if err := need(26 + csNameLen); err != nil {
			return r, err
		}
		r.NodeID = cswire.U32(msg, 16)
		n := int(cswire.U32(msg, 24) & 0xffff)
		if n > csNameLen {
			return r, fmt.Errorf("cfg: kill reason of %d bytes: %w", n, cswire.ErrInvalidParam)
		}
		r.Reason = cswire.CString(msg, 26, n)
	case ReqTryShutdown: // flags @16
		if err := need(20); err != nil {
			return r, err
		}
		r.Flags = cswire.U32(msg, 16)
	case ReqReplyToShutdown: // response @16
		if err := need(20); err != nil {
			return r, err
		}
		r.Response = cswire.U32(msg, 16)
	case ReqGetNodeAddrs: // nodeid @16
		if err := need(20); err != nil {
			return r, err
		}
		r.NodeID = cswire.U32(msg, 16)
	case ReqNodeStatusGet: // nodeid @16, version @24
		if err := need(28); err != nil {
			return r, err
		}
		r.NodeID = cswire.U32(msg, 16)
		r.Version = cswire.U32(msg, 24)
	case ReqTrackStart: // track_flags u8 @16
		if err := need(17); err != nil {
			return r, err
		}
		r.Track = msg[16]
	default:
		return r, fmt.Errorf("cfg: unknown request id %d: %w", r.ID, cswire.ErrInvalidParam)
	}
	return r, nil
}

// ResponseID is the response id of a request id.
func ResponseID(req int32) int32 {
	return map[int32]int32{
		ReqRingStatusGet: ResRingStatusGet, ReqRingReenable: ResRingReenable, ReqKillNode: ResKillNode,
		ReqTryShutdown: ResTryShutdown, ReqReplyToShutdown: ResReplyToShutdown, ReqGetNodeAddrs: ResGetNodeAddrs,
		ReqLocalGet: ResLocalGet, ReqReloadConfig: ResReloadConfig, ReqReopenLogFiles: ResReopenLogFiles,
		ReqNodeStatusGet: ResNodeStatusGet, ReqTrackStart: ResTrackStart, ReqTrackStop: ResTrackStop,
	}[req]
}

// EncodeStatus answers a request with an error (or a bare CS_OK): the
// response struct's full size, as libcfg reads fields of it.
func EncodeStatus(req int32, code cswire.Error) []byte {
	size := cswire.ResHeaderSize
	switch req {
	case ReqRingStatusGet:
		size = ringStatusSize
	case ReqGetNodeAddrs, ReqLocalGet, ReqNodeStatusGet:
		size = 32
	}
	return cswire.Response(ResponseID(req), size, code)
}

// EncodeLocalGet answers LOCAL_GET: local_nodeid @24.
func EncodeLocalGet(node uint32) []byte {
	b := cswire.Response(ResLocalGet, 32, cswire.OK)
	cswire.PutU32(b, 24, node)
	return b
}

// Address families as libcfg compares them.
const (
	AFInet  = 2
	AFInet6 = 10
)

// EncodeNodeAddrs answers GET_NODE_ADDRS: family @24, num_addrs @28,
// TOTEMIP_ADDRLEN bytes per address from 32 (an IPv4 address in the
// first 4). No address is CS_ERR_NOT_EXIST, as corosync answers.
func EncodeNodeAddrs(family uint32, addrs [][]byte) []byte {
	if len(addrs) == 0 {
		return cswire.Response(ResGetNodeAddrs, 32, cswire.ErrNotExist)
	}
	b := cswire.Response(ResGetNodeAddrs, 32+AddrLen*len(addrs), cswire.OK)
	cswire.PutU32(b, 24, family)
	cswire.PutU32(b, 28, uint32(len(addrs)))
	for i, a := range addrs {
		copy(b[32+AddrLen*i:32+AddrLen*(i+1)], a)
	}
	return b
}

// EncodeTestShutdown is the shutdown callback's event: flags @24.
func EncodeTestShutdown(flags uint32, code cswire.Error) []byte {
	b := cswire.Response(ResTestShutdown, 32, code)
	cswire.PutU32(b, 24, flags)
	return b
}

// Ring is one interface of RINGSTATUSGET.
type Ring struct {
	Name   string // "<linknumber> <address>"
	Status string
}

// EncodeRingStatus answers RINGSTATUSGET: interface_count @24, names
// [16][128] @32, statuses [16][512] @2080.
func EncodeRingStatus(rings []Ring) []byte {
	b := cswire.Response(ResRingStatusGet, ringStatusSize, cswire.OK)
	if len(rings) > MaxInterfaces {
		rings = rings[:MaxInterfaces]
	}
	cswire.PutU32(b, 24, uint32(len(rings)))
	for i, r := range rings {
		cswire.PutCString(b, 32+i*InterfaceNameLen, InterfaceNameLen, r.Name)
		cswire.PutCString(b, 32+MaxInterfaces*InterfaceNameLen+i*InterfaceStatusLen, InterfaceStatusLen, r.Status)
	}
	return b
}

// LinkStatus is corosync_knet_link_status_v1.
type LinkStatus struct {
	Enabled, Connected, DynConnected bool
	MTU                              uint32
	Src, Dst                         string
}

// NodeStatus is corosync_cfg_node_status_v1.
type NodeStatus struct {
	NodeID                          uint32
	Reachable, Remote, External     bool
	OnwireMin, OnwireMax, OnwireVer uint8
	Links                           [MaxLinks]LinkStatus
}

// EncodeNodeStatusV1 answers NODESTATUSGET version 1: the status struct
// from 24 — version, nodeid, six bytes of flags and onwire versions, then
// eight link statuses of 520 bytes from 16.
func EncodeNodeStatusV1(st NodeStatus) []byte {
	b := cswire.Response(ResNodeStatusGet, nodeStatusV1Size, cswire.OK)
	base := cswire.ResHeaderSize
	cswire.PutU32(b, base, NodeStatusV1)
	cswire.PutU32(b, base+4, st.NodeID)
	b[base+8], b[base+9], b[base+10] = u8(st.Reachable), u8(st.Remote), u8(st.External)
	b[base+11], b[base+12], b[base+13] = st.OnwireMin, st.OnwireMax, st.OnwireVer
	for i, l := range st.Links {
		off := base + 16 + i*linkStatusSize
		b[off], b[off+1], b[off+2] = u8(l.Enabled), u8(l.Connected), u8(l.DynConnected)
		cswire.PutU32(b, off+4, l.MTU)
		cswire.PutCString(b, off+8, MaxHostLen, l.Src)
		cswire.PutCString(b, off+8+MaxHostLen, MaxHostLen, l.Dst)
	}
	return b
}

// EncodeNodeStatusError answers NODESTATUSGET with an error: the short
// res_lib_cfg_nodestatusget_version struct, as corosync sends it.
func EncodeNodeStatusError(code cswire.Error) []byte {
	return cswire.Response(ResNodeStatusGet, 32, code)
}

func u8(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}
