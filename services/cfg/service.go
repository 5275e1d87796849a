package cfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/session"
)

// TotemService is the totem service name cfg multicasts under.
const TotemService = "cfg"

// DefaultShutdownTimeout is how long registered clients have to answer a
// shutdown request (cfg.shutdown_timeout overrides it), as in corosync.
const DefaultShutdownTimeout = 5 * time.Second

// NodeAddrs are a nodelist entry's addresses, ringN_addr in link order.
type NodeAddrs struct {
	ID    uint32
	Addrs []string
}

// ReloadResult is what a reload did on one node.
type ReloadResult struct {
	Code    cswire.Error `json:"code"`
	Changed []string     `json:"changed,omitempty"`
	Ignored []string     `json:"ignored,omitempty"`
	Reason  string       `json:"reason,omitempty"`
}

// Config is what a Service needs.
type Config struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	Node     uint32
	Log      *slog.Logger
	// Nodes is the nodelist, for addresses and link status.
	Nodes []NodeAddrs
	// Reload re-reads this node's configuration file and applies it.
	Reload func(ctx context.Context) ReloadResult
	// ShutdownTimeout reads cfg.shutdown_timeout at the time of a
	// request; nil or an error means DefaultShutdownTimeout.
	ShutdownTimeout func(ctx context.Context) (time.Duration, error)
	// StopNode asks whatever supervises the node's layers to stop them.
	StopNode func(ctx context.Context, req StopRequest) error
	// Instance is this instance's id in the loader's listing
	// (loader.Component.Instance): the shutdown negotiation asks the
	// node's other instances, and knows itself among them by it.
	// Default: a fresh id.
	Instance string
}

// Service is a node's cfg service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	tc       *totem.Client
	instance string

	mu       sync.Mutex
	trackers []*Conn
	sd       *negotiation // the shutdown in progress, if any
	reloads  map[uint64]chan cswire.Error
	nextReq  uint64
	stopping bool

	reloadMu sync.Mutex // one reload at a time, in delivery order
	rx, tx   [NumExec]atomic.Uint64
	// moved tells the component that rx or tx moved (CountersMoved).
	moved loader.Moved
	// ready is closed once Run listens to the node's other instances.
	ready chan struct{}
}

// negotiation is one try_shutdown as one instance runs it: who asked,
// with what flags, and the answers of the instance's registered clients.
// The instance whose client asked runs it until it decides; another
// instance holds it (by nil) until the asker says it decided, or is gone.
type negotiation struct {
	id     string
	origin string // the instance whose client asked
	// since is when that client asked (Unix ns; the node's instances
	// share the clock): with origin, the rank that leaves one of two
	// negotiations started at once (before).
	since         int64
	by            *Conn // the client that asked, when on this instance
	flags         uint32
	timeout       time.Duration
	yes, no, want int
	answers       map[*Conn]int // 1 yes, 0 no, -1 not yet
	asked         bool          // the callbacks went out
	timer         *time.Timer
	// timedOut: cfg.shutdown_timeout passed, the unanswered are no, and
	// nothing changes any more (corosync decides when its timer fires).
	timedOut bool

	// The requester's side (by != nil). claimed: every other instance
	// took this negotiation, so none can displace it; refused: another
	// instance runs an earlier one (the requester gets CS_ERR_EXIST).
	claimed, refused bool
	// changed wakes the requester's loop (tryShutdown) when this
	// instance's answers moved; gone is closed when the requester went
	// away.
	changed chan struct{}
	gone    chan struct{}
	// verdicts carries the other instances' answers to the requester's
	// loop, until ended.
	verdicts chan peerMsg
	ended    chan struct{}

	// The side of an instance another asked (by == nil): the verdicts
	// it published, its bound if the asker never says it decided, and
	// the end of its watch on the asker.
	seq       int
	hold      *time.Timer
	stopWatch func()

	// pending are asks for negotiations that rank before this one, held
	// unanswered until this one ends (it may yet be refused for them).
	pending []pendingAsk
}

// pendingAsk is an ask waiting for an answer.
type pendingAsk struct {
	m *nats.Msg
	p peerMsg
}

// NewService builds the service; Run starts it.
func NewService(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Instance == "" {
		cfg.Instance = nuid.Next()
	}
	return &Service{cfg: cfg, log: cfg.Log, instance: cfg.Instance, moved: loader.NewMoved(), reloads: map[uint64]chan cswire.Error{},
		ready: make(chan struct{})}
}

// Run attaches to totem and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	tc, err := totem.NewClient(s.cfg.Conn, s.cfg.Subjects, s.cfg.Node, totem.ClientOptions{Window: 64, Service: TotemService, OnDeliver: s.onDeliver})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.tc = tc
	s.mu.Unlock()
	defer func() { _ = tc.Close() }()
	// The node's other cfg instances ask this one's registered clients
	// through it (shutdown.go).
	peers, err := s.cfg.Conn.Subscribe(s.cfg.Subjects.CfgPeers(s.cfg.Node), s.onPeer)
	if err != nil {
		return fmt.Errorf("cfg: subscribing to %s: %w", s.cfg.Subjects.CfgPeers(s.cfg.Node), err)
	}
	defer func() { _ = peers.Unsubscribe() }()
	// Its peers in a negotiation ping it, ask it where its clients'
	// answers stand, and end it (onDirect).
	ping, err := s.cfg.Conn.Subscribe(s.cfg.Subjects.CfgPeer(s.cfg.Node, s.instance), s.onDirect)
	if err != nil {
		return fmt.Errorf("cfg: subscribing to %s: %w", s.cfg.Subjects.CfgPeer(s.cfg.Node, s.instance), err)
	}
	defer func() { _ = ping.Unsubscribe() }()
	// The server has the subscription before the loader lists this
	// instance (the component waits for Ready): an ask sent once the
	// asker sees it listed reaches it.
	if err := s.cfg.Conn.Flush(); err != nil {
		return fmt.Errorf("cfg: subscribing to %s: %w", s.cfg.Subjects.CfgPeers(s.cfg.Node), err)
	}
	close(s.ready)
	<-ctx.Done()
	return nil
}

// Ready is closed once Run listens to the node's other cfg instances:
// the instance is announced to the loader only then (Run in component.go),
// or an instance that asks the ones it finds listed could miss it.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Counters are runtime.services.cfg.<N>.{rx,tx}.
func (s *Service) Counters() map[string]loader.FnStats {
	out := map[string]loader.FnStats{}
	for i := range NumExec {
		out[strconv.Itoa(i)] = loader.FnStats{RX: s.rx[i].Load(), TX: s.tx[i].Load()}
	}
	return out
}

// CountersMoved receives when Counters may have changed: the component
// looks at them then, not every second at rest (loader.Component).
func (s *Service) CountersMoved() <-chan struct{} { return s.moved }

func (s *Service) mcast(ctx context.Context, e Exec) error {
	s.mu.Lock()
	tc := s.tc
	s.mu.Unlock()
	if tc == nil {
		return errors.New("cfg: not attached to totem yet")
	}
	if _, err := tc.Mcast(ctx, TotemService, e.Encode()); err != nil {
		return err
	}
	s.tx[e.Kind].Add(1)
	s.moved.Poke()
	return nil
}

func (s *Service) event(kind string, v any) {
	b, _ := json.Marshal(v)
	_ = s.cfg.Conn.Publish(s.cfg.Subjects.CfgEvent(s.cfg.Node, kind), b)
}

// ShutdownEvent is published on <prefix>.cfg.<node>.shutdown at each step
// of a shutdown.
type ShutdownEvent struct {
	Node  uint32 `json:"node"`
	Phase string `json:"phase"` // requested, confirmed, cancelled, timeout, shutdown
	Flags string `json:"flags,omitempty"`
	// By is the node whose shutdown message was delivered (phase
	// shutdown: that node goes down).
	By       uint32 `json:"by,omitempty"`
	Yes      int    `json:"yes"`
	No       int    `json:"no"`
	Expected int    `json:"expected"`
}

func (s *Service) onDeliver(d totem.Delivery) {
	m := d.Message
	if m == nil || m.Service != TotemService {
		return
	}
	e, err := DecodeExec(m.Payload)
	if err != nil {
		s.log.Warn("malformed cfg message", "from", m.ID.Node, "err", err)
		return
	}
	s.rx[e.Kind].Add(1)
	s.moved.Poke()
	switch e.Kind {
	case ExecKillNode:
		if e.NodeID != s.cfg.Node {
			return
		}
		s.log.Warn(fmt.Sprintf("Killed by node %d: %s", m.ID.Node, e.Reason))
		s.event("kill", map[string]any{"node": s.cfg.Node, "by": m.ID.Node, "reason": e.Reason})
		go s.stop(StopRequest{Reason: fmt.Sprintf("killed by node %d: %s", m.ID.Node, e.Reason), Exit: KilledExitStatus})
	case ExecShutdown:
		s.log.Info(fmt.Sprintf("Node %d was shut down by sysadmin", m.ID.Node))
		if m.ID.Node == s.cfg.Node {
			s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "shutdown", By: m.ID.Node})
			go s.stop(StopRequest{Reason: "shut down by sysadmin"})
		}
	case ExecReloadConfig:
		s.log.Info(fmt.Sprintf("Config reload requested by node %d", m.ID.Node))
		from, req := m.ID.Node, e.Request
		// Every node reloads its own file, one reload at a time, in the
		// order the requests were delivered.
		s.reloadMu.Lock()
		go func() {
			defer s.reloadMu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			res := s.cfg.Reload(ctx)
			cancel()
			// Lists even when empty: subscribers read them as lists
			// (docs/subjects.md), and null is not one.
			s.event("reload", map[string]any{"node": s.cfg.Node, "by": from, "code": res.Code.String(),
				"changed": orEmpty(res.Changed), "ignored": orEmpty(res.Ignored), "reason": res.Reason})
			if from != s.cfg.Node {
				return
			}
			s.mu.Lock()
			ch := s.reloads[req]
			delete(s.reloads, req)
			s.mu.Unlock()
			if ch != nil {
				ch <- res.Code
			}
		}()
	}
}

// stop asks the node's supervisor to stop the node.
func (s *Service) stop(req StopRequest) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	s.mu.Unlock()
	if s.cfg.StopNode == nil {
		s.log.Error("nothing can stop this node: it was not started by `corobus up`", "reason", req.Reason)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.StopNode(ctx, req); err != nil {
		s.log.Error("the node's supervisor did not take the shutdown request", "reason", req.Reason, "err", err)
		s.mu.Lock()
		s.stopping = false
		s.mu.Unlock()
	}
}

// Open implements session.Handler.
func (s *Service) Open(c *session.Conn) (session.Session, error) {
	return s.OpenConn(c, c.ID), nil
}

// OpenConn starts a libcfg connection whose events go to sink.
func (s *Service) OpenConn(sink session.EventSink, label string) *Conn {
	return &Conn{svc: s, sink: sink, label: label}
}

// Conn is one libcfg connection.
type Conn struct {
	svc   *Service
	sink  session.EventSink
	label string
}

func (c *Conn) send(msg []byte) {
	if err := c.sink.SendEvent(msg); err != nil {
		c.svc.log.Debug("cfg event not sent", "conn", c.label, "err", err)
	}
}

// Request implements session.Session.
func (c *Conn) Request(ctx context.Context, msg []byte) []byte {
	r, err := DecodeRequest(msg)
	if err != nil {
		c.svc.log.Warn("malformed cfg request", "conn", c.label, "err", err)
		return EncodeStatus(r.ID, cswire.ErrInvalidParam)
	}
	s := c.svc
	switch r.ID {
	case ReqLocalGet:
		return EncodeLocalGet(s.cfg.Node)
	case ReqGetNodeAddrs:
		return s.nodeAddrs(r.NodeID)
	case ReqNodeStatusGet:
		if r.Version != NodeStatusV1 {
			return EncodeNodeStatusError(cswire.ErrNotSupported)
		}
		return s.nodeStatus(r.NodeID)
	case ReqRingStatusGet:
		return s.ringStatus()
	case ReqRingReenable:
		return EncodeStatus(r.ID, cswire.ErrNotSupported)
	case ReqKillNode:
		return EncodeStatus(r.ID, s.killNode(ctx, r.NodeID, r.Reason))
	case ReqTrackStart:
		s.trackStart(c)
		return EncodeStatus(r.ID, cswire.OK)
	case ReqTrackStop:
		s.leave(c)
		return EncodeStatus(r.ID, cswire.OK)
	case ReqTryShutdown:
		return EncodeStatus(r.ID, s.tryShutdown(ctx, c, r.Flags))
	case ReqReplyToShutdown:
		return EncodeStatus(r.ID, s.reply(c, r.Response != 0))
	case ReqReloadConfig:
		return EncodeStatus(r.ID, s.reload(ctx))
	case ReqReopenLogFiles:
		return EncodeStatus(r.ID, s.reopenLogs())
	}
	return EncodeStatus(r.ID, cswire.ErrInvalidParam)
}

// Close implements session.Session: a registered client that goes away
// counts as a yes; a requester that goes away cancels its request.
func (c *Conn) Close() {
	c.svc.leave(c)
}

func (s *Service) nodeAddrs(id uint32) []byte {
	if id == 0 {
		id = s.cfg.Node
	}
	i := slices.IndexFunc(s.cfg.Nodes, func(n NodeAddrs) bool { return n.ID == id })
	if i < 0 {
		return EncodeNodeAddrs(0, nil)
	}
	var family uint32
	var out [][]byte
	for _, a := range s.cfg.Nodes[i].Addrs {
		ip := resolve(a)
		if ip == nil {
			continue
		}
		f := uint32(AFInet6)
		b := make([]byte, AddrLen)
		if v4 := ip.To4(); v4 != nil {
			f = AFInet
			copy(b, v4)
		} else {
			copy(b, ip.To16())
		}
		if family == 0 {
			family = f
		}
		out = append(out, b)
	}
	return EncodeNodeAddrs(family, out)
}

// resolve turns a ringN_addr (an address or a name) into an IP.
func resolve(a string) net.IP {
	if ip := net.ParseIP(a); ip != nil {
		return ip
	}
	ips, err := net.LookupIP(a)
	if err != nil || len(ips) == 0 {
		return nil
	}
	return ips[0]
}

// links describes corobus's one link per node: the bus route between
// ring0 addresses. It is connected while the peer is heard within the
// token; its MTU is the local interface's (a TCP route has no knet PMTU).
func (s *Service) link(peer NodeAddrs, reachable []uint32) (LinkStatus, bool) {
	self := slices.IndexFunc(s.cfg.Nodes, func(n NodeAddrs) bool { return n.ID == s.cfg.Node })
	if self < 0 || len(s.cfg.Nodes[self].Addrs) == 0 || len(peer.Addrs) == 0 {
		return LinkStatus{}, false
	}
	src := s.cfg.Nodes[self].Addrs[0]
	connected := peer.ID == s.cfg.Node || slices.Contains(reachable, peer.ID)
	return LinkStatus{Enabled: true, Connected: connected, MTU: interfaceMTU(src), Src: src, Dst: peer.Addrs[0]}, true
}

func interfaceMTU(addr string) uint32 {
	ip := resolve(addr)
	ifs, err := net.Interfaces()
	if err != nil || ip == nil {
		return 0
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return uint32(ifc.MTU)
			}
		}
	}
	return 0
}

func (s *Service) reachable() []uint32 {
	st, err := totem.FetchStatus(s.cfg.Conn, s.cfg.Subjects, s.cfg.Node, 2*time.Second)
	if err != nil {
		return []uint32{s.cfg.Node}
	}
	return st.Reachable
}

func (s *Service) nodeStatus(id uint32) []byte {
	i := slices.IndexFunc(s.cfg.Nodes, func(n NodeAddrs) bool { return n.ID == id })
	if i < 0 {
		return EncodeNodeStatusError(cswire.ErrFailedOperation)
	}
	reach := s.reachable()
	st := NodeStatus{NodeID: id, Reachable: id == s.cfg.Node || slices.Contains(reach, id)}
	if l, ok := s.link(s.cfg.Nodes[i], reach); ok {
		st.Links[0] = l
	}
	return EncodeNodeStatusV1(st)
}

// ringStatus is corosync_cfg_ring_status_get: per link, one character per
// node in id order — 'n' this node, '0'+(enabled|connected<<1) the others.
func (s *Service) ringStatus() []byte {
	self := slices.IndexFunc(s.cfg.Nodes, func(n NodeAddrs) bool { return n.ID == s.cfg.Node })
	if self < 0 || len(s.cfg.Nodes[self].Addrs) == 0 {
		return EncodeRingStatus(nil)
	}
	reach := s.reachable()
	nodes := slices.Clone(s.cfg.Nodes)
	slices.SortFunc(nodes, func(a, b NodeAddrs) int { return int(a.ID) - int(b.ID) })
	status := make([]byte, 0, len(nodes))
	for _, n := range nodes {
		if n.ID == s.cfg.Node {
			status = append(status, 'n')
			continue
		}
		l, _ := s.link(n, reach)
		c := byte('0')
		if l.Enabled {
			c++
		}
		if l.Connected {
			c += 2
		}
		status = append(status, c)
	}
	ip := s.cfg.Nodes[self].Addrs[0]
	if r := resolve(ip); r != nil {
		ip = r.String()
	}
	return EncodeRingStatus([]Ring{{Name: "0 " + ip, Status: string(status)}})
}

func (s *Service) killNode(ctx context.Context, id uint32, reason string) cswire.Error {
	st, err := totem.FetchStatus(s.cfg.Conn, s.cfg.Subjects, s.cfg.Node, 2*time.Second)
	if err != nil {
		return cswire.ErrLibrary
	}
	if !slices.Contains(st.Members, id) {
		return cswire.ErrNotExist
	}
	if err := s.mcast(ctx, Exec{Kind: ExecKillNode, NodeID: id, Reason: reason}); err != nil {
		s.log.Warn("kill request not sent", "node", id, "err", err)
	}
	return cswire.OK
}

func (s *Service) reload(ctx context.Context) cswire.Error {
	ch := make(chan cswire.Error, 1)
	s.mu.Lock()
	s.nextReq++
	req := s.nextReq
	s.reloads[req] = ch
	s.mu.Unlock()
	if err := s.mcast(ctx, Exec{Kind: ExecReloadConfig, Request: req}); err != nil {
		s.mu.Lock()
		delete(s.reloads, req)
		s.mu.Unlock()
		return cswire.ErrTryAgain
	}
	select {
	case code := <-ch:
		return code
	case <-ctx.Done():
	case <-time.After(reloadPatience):
		// The message did not come back (the node left the view
		// meanwhile) or this node's reload hangs.
	}
	s.mu.Lock()
	delete(s.reloads, req)
	s.mu.Unlock()
	return cswire.ErrTimeout
}

// reloadPatience bounds the wait for this node's own reload.
const reloadPatience = 2 * time.Minute

// reopenLogs asks every layer process of the node to reopen its log
// file and gathers their answers.
func (s *Service) reopenLogs() cswire.Error {
	_, failed, err := askLayers(s.cfg.Conn, s.cfg.Subjects.LogReopen(s.cfg.Node), nil)
	if err != nil {
		return cswire.ErrLibrary
	}
	for _, f := range failed {
		s.log.Error("a layer could not reopen its log file", "err", f)
	}
	if len(failed) > 0 {
		return cswire.ErrLibrary
	}
	return cswire.OK
}

// askLayers sends a scatter-gather request to every layer process of a
// node and gathers the answers until none came for a second: how many
// answered, and the texts of those that answered with an error.
func askLayers(nc *nats.Conn, subject string, data []byte) (answered int, failed []string, err error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, nil, fmt.Errorf("subscribing to the answers: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, data); err != nil {
		return 0, nil, fmt.Errorf("asking %s: %w", subject, err)
	}
	for {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			return answered, failed, nil
		}
		answered++
		if len(m.Data) > 0 {
			failed = append(failed, string(m.Data))
		}
	}
}

// orEmpty is l, or an empty list for nil: JSON [] rather than null.
func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
