package votequorum

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corobus/corobus/services/cswire"
)

// Node flags carried in NODEINFO messages (corosync's NODE_FLAGS_*).
const (
	FlagQuorate           = 1
	FlagLeaving           = 2
	FlagWFAStatus         = 4
	FlagFirst             = 8
	FlagQdeviceRegistered = 16
	FlagQdeviceAlive      = 32
	FlagQdeviceCastVote   = 64
	FlagQdeviceMasterWins = 128
)

// Auto tie breaker modes (runtime.votequorum.atb_type).
const (
	ATBNone    = 0
	ATBLowest  = 1
	ATBHighest = 2
	ATBList    = 3
)

// Timers the core asks its environment to run.
const (
	TimerLMS     = "last_man_standing"
	TimerQdevice = "qdevice"
	// TimerSilent bounds how long a round's quorum notification waits
	// for a member whose votequorum has not spoken yet (SyncActivate).
	TimerSilent = "silent_member"
)

// SilentMemberWait is how long the trackers' quorum notification of a
// view waits for a member that sent no NODEINFO in it (a joining node
// whose votequorum has not started yet): its round runs again when that
// votequorum registers, usually within a few hundred milliseconds.
const SilentMemberWait = 3 * time.Second

// Env is what the core does to the world. Every call is made with the
// core's lock held: an implementation queues, it does not wait.
type Env interface {
	// Mcast submits an exec message to every instance in total order. An
	// error means it could not even be queued.
	Mcast(e Exec) error
	// SetKey records a runtime.votequorum.* value (u8 or u32) in objdb.
	SetKey(key string, typ string, value uint32)
	// QuorumChanged is corosync's quorum callback: the quorum service's
	// view and whether this node is in the primary component.
	QuorumChanged(members []uint32, quorate bool, ring RingID)
	// NotifyQuorum, NotifyNodelist and NotifyExpected send the
	// libvotequorum callbacks, to one connection (conn != nil, with its
	// context) or to every tracking connection (conn == nil).
	NotifyQuorum(conn any, context uint64, quorate bool, nodes []NodeState)
	NotifyNodelist(conn any, context uint64, ring RingID, members []uint32)
	NotifyExpected(expected uint32)
	// StartTimer (re)arms a named timer that calls Core.Timer(name);
	// StopTimer disarms it.
	StartTimer(name string, d time.Duration)
	StopTimer(name string)
	// LoadEVBarrier and SaveEVBarrier keep expected_votes_tracking's
	// barrier on disk (<state_dir>/ev_tracking, as corosync keeps it).
	LoadEVBarrier() (uint32, error)
	SaveEVBarrier(v uint32) error
	// QdeviceRegistered answers the pending QDEVICE_REGISTER request of
	// conn once the registration went round the cluster.
	QdeviceRegistered(conn any, code cswire.Error)
}

type cnode struct {
	id       uint32
	state    uint32
	votes    uint32
	expected uint32
	flags    uint32
}

// Core is one node's votequorum state machine: corosync's
// exec/votequorum.c algorithm, fed with the ordered exec messages, the
// sync engine's calls, timers and client requests. It is not safe for
// concurrent use; its owner serializes calls.
type Core struct {
	env Env
	log *slog.Logger

	us      *cnode
	qdevice *cnode
	nodes   []*cnode // every node but the device, by id

	quorum  uint32
	quorate bool

	twoNode, waitForAll, wfaStatus, wfaAutoset bool
	atb, initialATB                            int
	atbList                                    []uint32
	lowest, highest                            uint32
	lms                                        bool
	lmsWindow                                  time.Duration
	allowDownscale                             bool
	evBarrier                                  uint32
	evTracking                                 bool
	evTrackingBarrier                          uint32

	qdeviceName        string
	qdeviceCanOperate  bool
	qdeviceRegConn     any
	qdeviceMasterWins  bool
	qdeviceTimeout     time.Duration
	qdeviceSyncTimeout time.Duration
	qdeviceTimerSet    bool
	lmsTimerSet        bool

	members, prevMembers []uint32
	ring                 RingID

	// syncInProgress holds back quorum callbacks until the first
	// synchronization has completed: a (re)started instance must not
	// announce a view it has not agreed with the cluster.
	syncInProgress   bool
	syncNodeinfoSent bool
	syncWaitForPoll  bool

	// toldRing is the ring whose nodelist the trackers were sent;
	// toldQuorum what the last quorum notification of a round said.
	// corosync runs one round a ring; corobus runs a ring's round again
	// when a joining node's services register after it formed
	// (services/sync), and a rerun tells the trackers only what changed.
	toldRing   RingID
	toldQuorum struct {
		ring    RingID
		quorate bool
		nodes   []NodeState
	}
	// quorumHeld says a round's quorum notification waits for a silent
	// member (TimerSilent runs).
	quorumHeld bool
}

// ErrNotVotequorum is returned when quorum.provider names another provider.
var ErrNotVotequorum = errors.New("quorum.provider is not corosync_votequorum")

// NewCore starts votequorum for node id with the node's settings, as
// corosync's exec_init does: a configuration error refuses to start.
func NewCore(id uint32, s Settings, env Env, log *slog.Logger) (*Core, error) {
	if s.Provider != ProviderVotequorum {
		return nil, ErrNotVotequorum
	}
	c := &Core{env: env, log: log, qdeviceCanOperate: true, lmsWindow: DefaultLMSWindow,
		qdeviceTimeout: DefaultQdeviceTimeout, qdeviceSyncTimeout: DefaultQdeviceSyncTimeout, syncInProgress: true}
	c.qdevice = &cnode{id: QdeviceNodeID}
	c.us = c.allocate(id)
	c.env.SetKey("runtime.votequorum.this_node_id", "u32", id)
	c.us.state = StateMember
	c.us.votes = 1
	c.us.flags |= FlagFirst
	if err := c.readConfig(s, false); err != nil {
		return nil, err
	}
	c.recalculate(false, false)
	return c, nil
}

func (c *Core) allocate(id uint32) *cnode {
	n := &cnode{id: id}
	i, _ := slices.BinarySearchFunc(c.nodes, id, func(a *cnode, id uint32) int {
		switch {
		case a.id < id:
			return -1
		case a.id > id:
			return 1
		}
		return 0
	})
	c.nodes = slices.Insert(c.nodes, i, n)
	return n
}

func (c *Core) find(id uint32) *cnode {
	if id == c.us.id {
		return c.us
	}
	if id == QdeviceNodeID {
		return c.qdevice
	}
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (c *Core) setATB(v int) {
	c.atb = v
	c.env.SetKey("runtime.votequorum.atb_type", "u32", uint32(v))
}

func (c *Core) updateWFAStatus(v bool) {
	c.wfaStatus = v
	if v {
		c.us.flags |= FlagWFAStatus
	} else {
		c.us.flags &^= FlagWFAStatus
	}
	c.env.SetKey("runtime.votequorum.wait_for_all_status", "u8", b2u(v))
}

func (c *Core) updateEVBarrier(v uint32) {
	c.evBarrier = v
	c.env.SetKey("runtime.votequorum.ev_barrier", "u32", v)
}

func (c *Core) updateQdeviceCanOperate(v bool) {
	c.qdeviceCanOperate = v
	c.env.SetKey("runtime.votequorum.qdevice_can_operate", "u8", b2u(v))
}

func (c *Core) updateQdeviceMasterWins(v bool) {
	c.qdeviceMasterWins = v
	c.env.SetKey("runtime.votequorum.qdevice_master_wins", "u8", b2u(v))
}

func (c *Core) updateEVTrackingBarrier(v uint32) {
	c.evTrackingBarrier = v
	c.env.SetKey("runtime.votequorum.ev_tracking_barrier", "u32", v)
	if err := c.env.SaveEVBarrier(v); err != nil {
		c.log.Warn("unable to keep ev_tracking_barrier on disk", "err", err)
	}
}

// parseATB reads auto_tie_breaker_node: "lowest", "highest" or node ids.
func (c *Core) parseATB(s string) {
	c.atb = ATBNone
	switch s {
	case "lowest":
		c.atb = ATBLowest
	case "highest":
		c.atb = ATBHighest
	default:
		c.atbList = nil
		for _, f := range strings.Fields(s) {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil || n == 0 {
				break
			}
			c.atbList = append(c.atbList, uint32(n))
		}
		if len(c.atbList) > 0 {
			c.atb = ATBList
		}
	}
	c.setATB(c.atb)
	if c.atb == ATBNone {
		c.log.Warn("auto_tie_breaker_node is not valid: it must be 'lowest', 'highest' or a space-separated list of node ids; auto_tie_breaker is disabled")
	}
}

// readConfig applies settings, at start or at run time (corosync's
// votequorum_readconfig): at run time what cannot change (wait_for_all,
// last_man_standing, auto_tie_breaker, allow_downscale, expected votes
// tracking) keeps its start value, and an inconsistent configuration is
// logged and ignored rather than fatal.
func (c *Core) readConfig(s Settings, runtime bool) error {
	expected := s.ExpectedVotes
	if runtime {
		c.twoNode = false
		c.setATB(c.initialATB)
	}
	haveQdevice := s.QdeviceModel != ""
	qdeviceVotes := s.QdeviceVotes
	if haveQdevice {
		c.qdeviceTimeout, c.qdeviceSyncTimeout = s.QdeviceTimeout, s.QdeviceSyncTimeout
		c.updateQdeviceCanOperate(true)
	}
	c.twoNode = s.TwoNode
	fail := func(msg string, atRuntime func()) error {
		if !runtime {
			return errors.New("configuration error: " + msg)
		}
		c.log.Error("configuration error: " + msg)
		if atRuntime != nil {
			atRuntime()
		}
		return nil
	}
	if !s.HaveNodelist && expected == 0 {
		if !runtime {
			return errors.New("configuration error: nodelist or quorum.expected_votes must be configured")
		}
		c.log.Error("configuration error: nodelist or quorum.expected_votes must be configured; continuing with the current runtime data")
		return nil
	}
	if c.twoNode && haveQdevice {
		if err := fail("two_node and quorum device cannot be configured at the same time", func() {
			if c.us.flags&FlagQdeviceRegistered != 0 {
				c.log.Error("quorum device is registered, disabling two_node")
				c.twoNode = false
			} else {
				c.log.Error("quorum device is not registered, allowing two_node")
				c.updateQdeviceCanOperate(false)
			}
		}); err != nil {
			return err
		}
	}
	if !runtime {
		c.allowDownscale = s.AllowDownscale
		c.waitForAll = s.WaitForAll
		c.wfaAutoset = !s.WaitForAllSet
		c.lms = s.LastManStanding
		c.lmsWindow = s.LastManStandingWindow
		c.evTracking = s.ExpectedVotesTracking
		if s.AutoTieBreaker {
			c.setATB(ATBLowest)
			if s.AutoTieBreakerNode != "" {
				c.parseATB(s.AutoTieBreakerNode)
			}
		} else {
			c.atb = ATBNone
			if s.AutoTieBreakerNode != "" {
				c.log.Warn("auto_tie_breaker_node is meaningless while auto_tie_breaker is 0")
			}
		}
		c.initialATB = c.atb
		if c.allowDownscale {
			c.evTracking = true
		}
		if c.evTracking {
			v, err := c.env.LoadEVBarrier()
			if err != nil {
				return fmt.Errorf("unable to load the ev_tracking file: %w", err)
			}
			c.updateEVTrackingBarrier(v)
		}
	}
	if c.wfaAutoset {
		c.waitForAll = c.twoNode
	}
	if c.twoNode && c.atb != ATBNone {
		c.log.Error("two_node and auto_tie_breaker are both specified but are not compatible; two_node has been disabled")
		c.twoNode = false
	}
	if c.atb != ATBNone && s.NodelistExpected%2 == 1 && !c.waitForAll {
		if c.lms {
			return errors.New("configuration error: auto_tie_breaker and last_man_standing are not available in an odd-sized cluster (set wait_for_all, or drop last_man_standing)")
		}
		c.log.Error("auto_tie_breaker is set and the cluster has an odd number of nodes, so wait_for_all is required but missing; auto_tie_breaker has been disabled")
		c.setATB(ATBNone)
	}
	disableDevice := func() { c.log.Error("disabling quorum device operations"); c.updateQdeviceCanOperate(false) }
	if haveQdevice && c.lms {
		if err := fail("quorum.device is not compatible with last_man_standing", disableDevice); err != nil {
			return err
		}
	}
	if haveQdevice && c.atb != ATBNone {
		if err := fail("quorum.device is not compatible with auto_tie_breaker", disableDevice); err != nil {
			return err
		}
	}
	if haveQdevice && c.allowDownscale {
		if err := fail("quorum.device is not compatible with allow_downscale", disableDevice); err != nil {
			return err
		}
	}
	if expected != 0 && haveQdevice && qdeviceVotes == -1 {
		if err := fail("quorum.device.votes must be specified when quorum.expected_votes is set", disableDevice); err != nil {
			return err
		}
	}
	if haveQdevice && qdeviceVotes == -1 && s.HaveNodelist && s.NodeCount != s.NodelistExpected {
		if err := fail("quorum.device.votes must be specified when not all nodes vote 1", disableDevice); err != nil {
			return err
		}
	}
	if qdeviceVotes > 0 && expected != 0 && int64(expected)-qdeviceVotes < 2 {
		if err := fail("quorum.device.votes is too high or expected_votes is too low", disableDevice); err != nil {
			return err
		}
	}
	nodeExpected := s.NodelistExpected
	if haveQdevice && qdeviceVotes == -1 && expected == 0 && s.HaveNodelist && s.NodeCount == s.NodelistExpected {
		qdeviceVotes = int64(s.NodelistExpected) - 1
		nodeExpected += uint32(qdeviceVotes)
	}
	if c.evTracking {
		expected = c.evTrackingBarrier
	}
	if s.HaveNodelist {
		c.us.votes = s.NodeVotes
		c.us.expected = nodeExpected
	} else {
		c.us.votes = 1
		if s.Votes != 0 {
			c.us.votes = s.Votes
		}
	}
	if expected != 0 {
		c.us.expected = expected
	}
	if !haveQdevice {
		c.qdevice.votes = 0
	}
	if qdeviceVotes != -1 {
		c.qdevice.votes = uint32(qdeviceVotes)
	}
	c.updateEVBarrier(c.us.expected)
	c.env.SetKey("runtime.votequorum.two_node", "u8", b2u(c.twoNode))
	if c.waitForAll {
		if !runtime {
			c.updateWFAStatus(true)
		}
	} else if c.wfaAutoset && c.wfaStatus {
		c.updateWFAStatus(false)
	}
	return nil
}

// Refresh re-reads the configuration at run time (corosync's
// votequorum_refresh_config, on changes of quorum.* and nodelist.*) and
// tells the cluster what changed.
func (c *Core) Refresh(s Settings) {
	if s.CancelWaitForAll {
		if err := c.env.Mcast(Exec{Kind: ExecReconfigure, Param: ParamCancelWFA, NodeID: c.us.id}); err != nil {
			c.log.Error("failed to send the cancel wait_for_all message", "err", err)
		}
		return
	}
	oldVotes, oldExpected := c.us.votes, c.us.expected
	if err := c.readConfig(s, true); err != nil {
		c.log.Error("configuration not applied", "err", err)
	}
	c.sendNodeinfo(c.us.id)
	c.sendNodeinfo(QdeviceNodeID)
	if c.us.votes != oldVotes {
		if err := c.env.Mcast(Exec{Kind: ExecReconfigure, Param: ParamNodeVotes, NodeID: c.us.id, Value: c.us.votes}); err != nil {
			c.log.Error("failed to send new votes to the other nodes", "err", err)
		}
	}
	if c.us.expected != oldExpected {
		if err := c.env.Mcast(Exec{Kind: ExecReconfigure, Param: ParamExpectedVotes, NodeID: c.us.id, Value: c.us.expected}); err != nil {
			c.log.Error("failed to send expected votes to the other nodes", "err", err)
		}
	}
}

func (c *Core) sendNodeinfo(id uint32) {
	n := c.find(id)
	if n == nil {
		return
	}
	if err := c.env.Mcast(Exec{Kind: ExecNodeInfo, NodeID: id, Votes: n.votes, Expected: n.expected, Flags: n.flags}); err != nil {
		c.log.Warn("nodeinfo not sent", "node", id, "err", err)
	}
}

// calculate is corosync's calculate_quorum: the OpenVMS rule, quorum =
// max(expected/2+1, total/2+1), never decreasing unless allowed, 1 for a
// two_node cluster of at most two members.
func (c *Core) calculate(allowDecrease bool, maxExpected uint32) (quorum, total uint32) {
	if c.allowDownscale && allowDecrease && maxExpected != 0 {
		maxExpected = max(c.evBarrier, maxExpected)
	}
	var highest, members uint32
	for _, n := range c.nodes {
		if n.state == StateMember {
			highest = max(highest, n.expected)
			total += n.votes
			members++
		}
	}
	if c.us.flags&FlagQdeviceCastVote != 0 {
		total += c.qdevice.votes
		members++
	}
	if maxExpected > 0 {
		highest = maxExpected
	}
	q := max((highest+2)/2, (total+2)/2)
	if !allowDecrease {
		q = max(c.quorum, q)
	}
	if c.twoNode && members <= 2 {
		q = 1
	}
	return q, total
}

func (c *Core) setExpectedAll(v uint32) {
	if v == 0 {
		return
	}
	for _, n := range c.nodes {
		if n.state == StateMember {
			n.expected = v
		}
	}
}

func (c *Core) memberState(id uint32) bool {
	for _, n := range c.nodes {
		if n.id == id {
			return n.state == StateMember
		}
	}
	return false
}

func (c *Core) computeLowestHighest() {
	c.lowest, c.highest = c.us.id, c.us.id
	for _, n := range c.nodes {
		if n.state == StateMember {
			c.lowest, c.highest = min(c.lowest, n.id), max(c.highest, n.id)
		}
	}
	c.env.SetKey("runtime.votequorum.lowest_node_id", "u32", c.lowest)
	c.env.SetKey("runtime.votequorum.highest_node_id", "u32", c.highest)
}

// checkATB decides a 50/50 split by node id: the side holding the lowest
// (or highest) id, or for a list the side holding the first listed node
// unless an earlier listed node was in the previous view (it might be
// alive on the other side).
func (c *Core) checkATB() bool {
	switch c.atb {
	case ATBLowest:
		return c.memberState(c.lowest)
	case ATBHighest:
		return c.memberState(c.highest)
	}
	for i, id := range c.atbList {
		if !slices.Contains(c.members, id) {
			continue
		}
		for _, earlier := range c.atbList[:i] {
			if slices.Contains(c.prevMembers, earlier) {
				c.log.Debug("ATB list: an earlier node was in the previous partition but is not here; quorum denied", "node", earlier)
				return false
			}
		}
		return true
	}
	return false
}

func (c *Core) qdeviceMaster() bool {
	for _, n := range c.nodes {
		if n.state == StateMember && n.flags&FlagQdeviceMasterWins != 0 && n.flags&FlagQdeviceCastVote != 0 {
			return true
		}
	}
	return false
}

// decide is corosync's are_we_quorate.
func (c *Core) decide(total uint32) {
	if c.waitForAll && c.wfaStatus {
		if total != c.us.expected {
			c.log.Info("waiting for all cluster members", "votes", total, "expected_votes", c.us.expected)
			return
		}
		c.updateWFAStatus(false)
	}
	quorate := c.quorum <= total
	if quorate {
		c.computeLowestHighest()
	}
	if c.atb != ATBNone && total == c.us.expected/2 &&
		len(c.prevMembers)-len(c.members) < int(c.quorum) && c.checkATB() {
		quorate = true
	}
	if c.qdeviceMasterWins && !quorate && c.qdeviceMaster() {
		c.log.Debug("node is quorate as part of the master_wins partition")
		quorate = true
	}
	changed := quorate != c.quorate
	if changed {
		if quorate {
			c.log.Debug("quorum regained, resuming activity")
		} else {
			c.log.Debug("quorum lost, blocking activity")
		}
	}
	c.quorate = quorate
	if quorate {
		c.us.flags |= FlagQuorate
	} else {
		c.us.flags &^= FlagQuorate
	}
	if c.waitForAll {
		c.updateWFAStatus(!quorate)
	}
	if changed && !c.syncInProgress {
		c.env.QuorumChanged(slices.Clone(c.members), c.quorate, c.ring)
		c.notifyQuorum(c.nodeStates())
	}
}

func (c *Core) totals() (total, members uint32) {
	for _, n := range c.nodes {
		if n.state == StateMember {
			members++
			total += n.votes
		}
	}
	if c.qdevice.votes != 0 {
		total += c.qdevice.votes
		members++
	}
	return total, members
}

// recalculate is corosync's recalculate_quorum.
func (c *Core) recalculate(allowDecrease, byCurrentNodes bool) {
	total, members := c.totals()
	if !byCurrentNodes {
		members = 0
	}
	if total > c.us.expected {
		c.us.expected = total
		c.env.NotifyExpected(c.us.expected)
	}
	if c.evTracking && c.us.expected > c.evTrackingBarrier {
		c.updateEVTrackingBarrier(c.us.expected)
	}
	c.quorum, total = c.calculate(allowDecrease, members)
	c.setExpectedAll(members)
	c.decide(total)
}

func (c *Core) nodeStates() []NodeState {
	out := make([]NodeState, 0, len(c.nodes)+1)
	for _, n := range c.nodes {
		out = append(out, NodeState{NodeID: n.id, State: n.state})
	}
	if c.us.flags&FlagQdeviceRegistered != 0 {
		out = append(out, NodeState{NodeID: QdeviceNodeID, State: c.qdevice.state})
	}
	return out
}

// Deliver handles an exec message multicast by node sender, in total
// order.
func (c *Core) Deliver(sender uint32, e Exec) {
	switch e.Kind {
	case ExecNodeInfo:
		c.onNodeinfo(sender, e)
	case ExecReconfigure:
		c.onReconfigure(sender, e)
	case ExecQdeviceReg:
		c.onQdeviceReg(sender, e)
	case ExecQdeviceReconfigure:
		if e.Name == c.qdeviceName {
			c.log.Debug("quorum device renamed", "from", e.Name, "to", e.NewName, "by", sender)
			c.qdeviceName = e.NewName
		}
	}
}

func (c *Core) onNodeinfo(sender uint32, e Exec) {
	n := c.find(e.NodeID)
	isNew := n == nil
	if isNew {
		n = c.allocate(e.NodeID)
	}
	oldVotes, oldExpected, oldState, oldFlags := n.votes, n.expected, n.state, n.flags
	if isNew {
		oldVotes, oldExpected, oldState, oldFlags = 0, 0, StateDead, 0
	}
	allowDowngrade, byNode := false, false
	if e.NodeID == QdeviceNodeID {
		s := c.find(sender)
		if s != nil && !c.quorate && s.flags&FlagQuorate != 0 {
			n.votes = e.Votes
		} else {
			n.votes = max(n.votes, e.Votes)
		}
	} else {
		n.flags = e.Flags
		n.votes = e.Votes
		n.state = StateMember
		if n.flags&FlagLeaving != 0 {
			n.state = StateLeaving
			allowDowngrade, byNode = true, true
		}
		if !c.quorate && n.flags&FlagQuorate != 0 {
			allowDowngrade = true
			c.us.expected = e.Expected
		}
		if n.flags&FlagQuorate != 0 || c.evTracking {
			n.expected = e.Expected
		} else {
			n.expected = c.us.expected
		}
		if c.lms && n.votes > 1 {
			c.log.Warn("last_man_standing is supported only when every node has 1 vote; disabling it")
			c.lms = false
			if c.lmsTimerSet {
				c.env.StopTimer(TimerLMS)
				c.lmsTimerSet = false
			}
		}
	}
	if isNew || e.NodeID == c.us.id || n.flags&FlagFirst != 0 || oldVotes != n.votes ||
		oldExpected != n.expected || oldFlags != n.flags || oldState != n.state {
		c.recalculate(allowDowngrade, byNode)
	}
	if c.waitForAll && n.flags&FlagWFAStatus == 0 && n.flags&FlagQuorate != 0 {
		c.updateWFAStatus(false)
	}
}

func (c *Core) onReconfigure(sender uint32, e Exec) {
	switch e.Param {
	case ParamExpectedVotes:
		c.setExpectedAll(e.Value)
		c.env.NotifyExpected(c.us.expected)
		c.updateEVBarrier(e.Value)
		if c.evTracking {
			c.us.expected = max(c.us.expected, c.evTrackingBarrier)
		}
		c.recalculate(true, false)
	case ParamNodeVotes:
		n := c.find(e.NodeID)
		if n == nil {
			return
		}
		n.votes = e.Value
		c.recalculate(true, false)
	case ParamCancelWFA:
		c.updateWFAStatus(false)
		c.log.Info("wait_for_all_status reset by user", "node", e.NodeID)
		c.recalculate(false, false)
	}
}

func (c *Core) onQdeviceReg(sender uint32, e Exec) {
	switch e.Op {
	case QdeviceOpRegister:
		if sender != c.us.id {
			if c.qdeviceName == "" {
				c.qdeviceName = e.Name
			}
			return
		}
		if c.us.flags&FlagQdeviceRegistered != 0 || c.qdeviceRegConn == nil {
			return
		}
		if c.qdeviceName == "" {
			c.qdeviceName = e.Name
		}
		code := cswire.OK
		if e.Name == c.qdeviceName {
			c.us.flags |= FlagQdeviceRegistered
			c.sendNodeinfo(QdeviceNodeID)
			c.sendNodeinfo(c.us.id)
		} else {
			c.log.Warn("a quorum device with another name tries to register", "new", e.Name, "old", c.qdeviceName)
			code = cswire.ErrExist
		}
		c.env.QdeviceRegistered(c.qdeviceRegConn, code)
		c.qdeviceRegConn = nil
	case QdeviceOpUnregister:
		wipe := true
		for _, n := range c.nodes {
			if n.state == StateMember && n.flags&FlagQdeviceRegistered != 0 {
				wipe = false
			}
		}
		if wipe {
			c.qdeviceName = ""
		}
	}
}

// SyncInit starts a synchronization round for a new view.
func (c *Core) SyncInit(trans, members []uint32, ring RingID) {
	c.syncInProgress = true
	c.syncNodeinfoSent = false
	c.syncWaitForPoll = false
	if len(members) > 1 {
		c.us.flags &^= FlagFirst
	}
	left := false
	for _, id := range c.members {
		if !slices.Contains(members, id) {
			left = true
			if n := c.find(id); n != nil {
				n.state = StateDead
			}
		}
	}
	if c.lms && ((uint32(len(members)) >= c.quorum && left) ||
		(uint32(len(members)) <= c.quorum && c.atb != ATBNone && c.memberState(c.lowest))) {
		c.env.StartTimer(TimerLMS, c.lmsWindow)
		c.lmsTimerSet = true
	}
	c.prevMembers = slices.Clone(c.members)
	c.members = slices.Clone(members)
	c.ring = ring
	if c.us.flags&FlagQdeviceRegistered != 0 && c.us.flags&FlagQdeviceAlive != 0 {
		c.env.StartTimer(TimerQdevice, c.qdeviceSyncTimeout)
		c.qdeviceTimerSet = true
		c.syncWaitForPoll = true
		c.log.Info("waiting for the quorum device's poll", "device", c.qdeviceName, "at_most", c.qdeviceSyncTimeout)
	}
}

// SyncProcess sends this node's state once per round; it returns false
// while the round must wait for the quorum device's poll.
func (c *Core) SyncProcess() bool {
	if !c.syncNodeinfoSent {
		c.sendNodeinfo(c.us.id)
		c.sendNodeinfo(QdeviceNodeID)
		if c.qdeviceName != "" {
			if err := c.env.Mcast(Exec{Kind: ExecQdeviceReg, Op: QdeviceOpRegister, Name: c.qdeviceName}); err != nil {
				c.log.Warn("qdevice registration not sent", "err", err)
			}
		}
		if c.toldRing != c.ring {
			c.env.NotifyNodelist(nil, 0, c.ring, slices.Clone(c.members))
			c.toldRing = c.ring
		}
		c.syncNodeinfoSent = true
	}
	return !(c.us.flags&FlagQdeviceRegistered != 0 && c.syncWaitForPoll)
}

// SyncActivate ends the round: quorum is recomputed with every member's
// state and announced.
func (c *Core) SyncActivate() {
	c.recalculate(false, false)
	// The quorum service tells its own clients once per view (it
	// follows the state this publishes, which carries expected votes
	// and totals that a rerun may change).
	c.env.QuorumChanged(slices.Clone(c.members), c.quorate, c.ring)
	c.syncInProgress = false
	if c.silentMember() {
		// corosync's trackers never see a member of the view dead: every
		// member's NODEINFO precedes the round's barrier. A corobus node
		// that joins starts its votequorum after its ring formed, and
		// the ring's round runs again when it registers: tell the
		// trackers then, once, or when the wait is over.
		if !c.quorumHeld {
			c.quorumHeld = true
			c.env.StartTimer(TimerSilent, SilentMemberWait)
		}
		return
	}
	nodes := c.nodeStates()
	if t := c.toldQuorum; c.quorumHeld || t.ring != c.ring || t.quorate != c.quorate || !slices.Equal(t.nodes, nodes) {
		c.notifyQuorum(nodes)
	}
}

// silentMember reports whether a member of the view sent no NODEINFO
// since it (re)joined: its node is unknown or still dead.
func (c *Core) silentMember() bool {
	for _, id := range c.members {
		if n := c.find(id); n == nil || n.state == StateDead {
			return true
		}
	}
	return false
}

// notifyQuorum sends every tracker the quorum notification and keeps
// what it said.
func (c *Core) notifyQuorum(nodes []NodeState) {
	if c.quorumHeld {
		c.quorumHeld = false
		c.env.StopTimer(TimerSilent)
	}
	c.toldQuorum.ring, c.toldQuorum.quorate, c.toldQuorum.nodes = c.ring, c.quorate, nodes
	c.env.NotifyQuorum(nil, 0, c.quorate, slices.Clone(nodes))
}

// SyncAbort is called when a round is abandoned for a newer view.
func (c *Core) SyncAbort() {}

// Timer is called when a timer started with Env.StartTimer fires.
func (c *Core) Timer(name string) {
	switch name {
	case TimerLMS:
		c.lmsTimerSet = false
		if c.quorate {
			c.recalculate(true, true)
		}
	case TimerSilent:
		// A round in progress notifies at its end.
		if c.quorumHeld && !c.syncInProgress {
			c.log.Info("a member's votequorum did not speak; telling the trackers without it", "waited", SilentMemberWait)
			c.notifyQuorum(c.nodeStates())
		}
	case TimerQdevice:
		if c.us.flags&FlagQdeviceAlive == 0 || !c.qdeviceTimerSet {
			return
		}
		c.us.flags &^= FlagQdeviceAlive | FlagQdeviceCastVote
		c.log.Info("lost contact with the quorum device", "device", c.qdeviceName)
		c.sendNodeinfo(c.us.id)
		c.qdeviceTimerSet = false
		c.syncWaitForPoll = false
	}
}

// Leaving announces a clean exit (allow_downscale), as corosync's
// exec_exit_fn does.
func (c *Core) Leaving() {
	if c.allowDownscale {
		c.us.flags |= FlagLeaving
		c.sendNodeinfo(c.us.id)
	}
}

// State is a summary of this node's view, for observers and the CLI.
type State struct {
	Node          uint32      `json:"node"`
	Quorate       bool        `json:"quorate"`
	Ring          RingID      `json:"ring"`
	Members       []uint32    `json:"members"`
	ExpectedVotes uint32      `json:"expected_votes"`
	TotalVotes    uint32      `json:"total_votes"`
	Quorum        uint32      `json:"quorum"`
	Nodes         []NodeState `json:"nodes"`
	Synced        bool        `json:"synced"`
}

// Snapshot returns the current view.
func (c *Core) Snapshot() State {
	in, _ := c.GetInfo(c.us.id)
	return State{Node: c.us.id, Quorate: c.quorate, Ring: c.ring, Members: slices.Clone(c.members),
		ExpectedVotes: c.us.expected, TotalVotes: in.TotalVotes, Quorum: c.quorum, Nodes: c.nodeStates(), Synced: !c.syncInProgress}
}

// GetInfo answers GETINFO for node id (0: this node).
func (c *Core) GetInfo(id uint32) (Info, cswire.Error) {
	if id == QdeviceNodeID {
		id = c.us.id
	}
	n := c.find(id)
	if n == nil {
		return Info{}, cswire.ErrNotExist
	}
	var highest, total uint32
	for _, m := range c.nodes {
		if m.state == StateMember {
			highest = max(highest, m.expected)
			total += m.votes
		}
	}
	if n.flags&FlagQdeviceCastVote != 0 {
		total += c.qdevice.votes
	}
	in := Info{NodeID: n.id, State: n.state, Votes: n.votes, ExpectedVotes: n.expected, HighestExpected: highest,
		TotalVotes: total, Quorum: c.quorum, QdeviceVotes: c.qdevice.votes, QdeviceName: c.qdeviceName}
	for _, f := range []struct {
		on   bool
		flag uint32
	}{
		{c.twoNode, InfoTwoNode}, {c.quorate, InfoQuorate}, {c.waitForAll, InfoWaitForAll},
		{c.lms, InfoLastManStanding}, {c.atb != ATBNone, InfoAutoTieBreaker}, {c.allowDownscale, InfoAllowDownscale},
		{n.flags&FlagQdeviceRegistered != 0, InfoQdeviceRegistered}, {n.flags&FlagQdeviceAlive != 0, InfoQdeviceAlive},
		{n.flags&FlagQdeviceCastVote != 0, InfoQdeviceCastVote}, {n.flags&FlagQdeviceMasterWins != 0, InfoQdeviceMasterWins},
	} {
		if f.on {
			in.Flags |= f.flag
		}
	}
	return in, cswire.OK
}

// SetExpected validates new expected votes and multicasts them: refused
// below the current total, or when it would make a quorate cluster lose
// quorum.
func (c *Core) SetExpected(v uint32) cswire.Error {
	saved := c.allowDownscale
	c.allowDownscale = false
	q, total := c.calculate(true, v)
	c.allowDownscale = saved
	if v < total || (c.quorate && q > total) {
		return cswire.ErrInvalidParam
	}
	c.setExpectedAll(v)
	if err := c.env.Mcast(Exec{Kind: ExecReconfigure, Param: ParamExpectedVotes, NodeID: c.us.id, Value: v}); err != nil {
		return cswire.ErrNoResources
	}
	return cswire.OK
}

// SetVotes validates a node's new votes and multicasts them.
func (c *Core) SetVotes(id, votes uint32) cswire.Error {
	n := c.find(id)
	if n == nil {
		return cswire.ErrNameNotFound
	}
	saved := n.votes
	n.votes = votes
	q, total := c.calculate(true, 0)
	n.votes = saved
	if q < total/2 || q > total {
		return cswire.ErrInvalidParam
	}
	if err := c.env.Mcast(Exec{Kind: ExecReconfigure, Param: ParamNodeVotes, NodeID: id, Value: votes}); err != nil {
		return cswire.ErrNoResources
	}
	return cswire.OK
}

// SendCurrent sends a new tracker the current nodelist and quorum
// notifications (trackstart with CS_TRACK_CURRENT or CHANGES).
func (c *Core) SendCurrent(conn any, context uint64) {
	c.env.NotifyNodelist(conn, context, c.ring, slices.Clone(c.members))
	c.env.NotifyQuorum(conn, context, c.quorate, c.nodeStates())
}

// QdeviceRegister starts a device's registration. pending is true when
// the answer comes later, through Env.QdeviceRegistered.
func (c *Core) QdeviceRegister(conn any, name string) (code cswire.Error, pending bool) {
	if !c.qdeviceCanOperate {
		c.log.Info("registration of the quorum device is disabled by an incorrect configuration; see the logs")
		return cswire.ErrAccess, false
	}
	if c.us.flags&FlagQdeviceRegistered != 0 {
		if name == c.qdeviceName {
			return cswire.OK, false
		}
		c.log.Warn("a quorum device with another name tries to re-register", "new", name, "old", c.qdeviceName)
		return cswire.ErrExist, false
	}
	if c.qdeviceRegConn != nil {
		return cswire.ErrTryAgain, false
	}
	c.qdeviceRegConn = conn
	if err := c.env.Mcast(Exec{Kind: ExecQdeviceReg, Op: QdeviceOpRegister, Name: name}); err != nil {
		c.qdeviceRegConn = nil
		return cswire.ErrTryAgain, false
	}
	return cswire.OK, true
}

// QdeviceCancel forgets a pending registration whose client went away.
func (c *Core) QdeviceCancel(conn any) {
	if c.qdeviceRegConn == conn {
		c.qdeviceRegConn = nil
	}
}

// QdeviceUnregister removes the registered device.
func (c *Core) QdeviceUnregister(name string) cswire.Error {
	if c.us.flags&FlagQdeviceRegistered == 0 {
		return cswire.ErrNotExist
	}
	if name != c.qdeviceName {
		return cswire.ErrInvalidParam
	}
	if c.qdeviceTimerSet {
		c.env.StopTimer(TimerQdevice)
		c.qdeviceTimerSet = false
		c.syncWaitForPoll = false
	}
	c.us.flags &^= FlagQdeviceRegistered | FlagQdeviceAlive | FlagQdeviceCastVote | FlagQdeviceMasterWins
	c.sendNodeinfo(c.us.id)
	if err := c.env.Mcast(Exec{Kind: ExecQdeviceReg, Op: QdeviceOpUnregister, Name: name}); err != nil {
		c.log.Warn("qdevice unregistration not sent", "err", err)
	}
	return cswire.OK
}

// QdeviceUpdate renames the registered device.
func (c *Core) QdeviceUpdate(oldName, newName string) cswire.Error {
	if c.us.flags&FlagQdeviceRegistered == 0 {
		return cswire.ErrNotExist
	}
	if oldName != c.qdeviceName {
		return cswire.ErrInvalidParam
	}
	if err := c.env.Mcast(Exec{Kind: ExecQdeviceReconfigure, Name: oldName, NewName: newName}); err != nil {
		return cswire.ErrNoResources
	}
	return cswire.OK
}

// QdevicePoll is the device's heartbeat: alive, and whether it casts its
// vote, for the view ring (a poll for another view is refused).
func (c *Core) QdevicePoll(name string, castVote bool, ring RingID) cswire.Error {
	if !c.qdeviceCanOperate {
		return cswire.ErrAccess
	}
	if c.us.flags&FlagQdeviceRegistered == 0 {
		return cswire.ErrNotExist
	}
	if ring != c.ring {
		c.log.Debug("quorum device poll for another ring ignored", "poll", ring, "ring", c.ring)
		return cswire.ErrMessageError
	}
	if name != c.qdeviceName {
		return cswire.ErrInvalidParam
	}
	if c.qdeviceTimerSet {
		c.env.StopTimer(TimerQdevice)
		c.qdeviceTimerSet = false
	}
	old := c.us.flags
	c.us.flags |= FlagQdeviceAlive
	if castVote {
		c.us.flags |= FlagQdeviceCastVote
	} else {
		c.us.flags &^= FlagQdeviceCastVote
	}
	if c.us.flags != old {
		c.sendNodeinfo(c.us.id)
	}
	c.env.StartTimer(TimerQdevice, c.qdeviceTimeout)
	c.qdeviceTimerSet = true
	c.syncWaitForPoll = false
	return cswire.OK
}

// QdeviceMasterWins sets the device's master_wins mode.
func (c *Core) QdeviceMasterWins(name string, allow bool) cswire.Error {
	if !c.qdeviceCanOperate {
		return cswire.ErrAccess
	}
	if c.us.flags&FlagQdeviceRegistered == 0 {
		return cswire.ErrNotExist
	}
	if name != c.qdeviceName {
		return cswire.ErrInvalidParam
	}
	old := c.us.flags
	if allow {
		c.us.flags |= FlagQdeviceMasterWins
	} else {
		c.us.flags &^= FlagQdeviceMasterWins
	}
	if c.us.flags != old {
		c.sendNodeinfo(c.us.id)
	}
	c.updateQdeviceMasterWins(allow)
	return cswire.OK
}

func b2u(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}
