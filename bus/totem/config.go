// Package totem is corobus's totem: membership (heartbeat failure detector,
// view agreement, ring ids), totally ordered multicast (a sequencer that
// orders message ids while payloads travel once), and virtual synchrony
// (recovery of the old ring's messages, then a transitional and a regular
// configuration, in totemsrp's order), all over core NATS on the bus routes.
//
// One Node runs inside each bus process. Other processes of the node talk to
// it through Client, over the node's bus.
package totem

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
)

// DefaultHandoffRun is Config.HandoffRun's default: a run long enough
// that nodes taking turns do not move the ordering back and forth, short
// enough that a lone sender orders its own messages after a few
// milliseconds.
const DefaultHandoffRun = 32

// Config configures a Node. Build it with DefaultConfig or FromConfig and
// adjust fields; New validates it.
type Config struct {
	// NodeID is this node's id (nodelist.node.N.nodeid).
	NodeID uint32
	// Subjects builds the subjects the node uses.
	Subjects bus.Subjects
	// Token is totem.token: a node not heard from for this long is gone.
	Token time.Duration
	// Join is totem.join: how long the reachable set must stay unchanged
	// before the coordinator proposes a view (it lets a burst of joins or
	// failures settle into one view change instead of several).
	Join time.Duration
	// Consensus is totem.consensus: how long a proposal waits for every
	// member's acknowledgement, and a member for the commit, before the
	// agreement starts over.
	Consensus time.Duration
	// Heartbeat is the heartbeat period; zero derives Token/5, so that four
	// consecutive heartbeats may be lost before a node is declared gone.
	Heartbeat time.Duration
	// RestHeartbeat is the heartbeat period of a ring at rest (nothing in
	// flight, every position stable, the reachable set the ring); zero
	// derives Token/3. Peers judge it by the same totem.token: a
	// heartbeat may still be 2/3 of the token late (4/5 at the busy
	// period) before its sender is gone, for 3 heartbeats a second
	// instead of 5 on every node of an idle cluster.
	RestHeartbeat time.Duration
	// Window bounds this node's own messages submitted but not yet
	// delivered; Mcast answers ErrTryAgain beyond it (corosync's
	// CS_ERR_TRY_AGAIN on a full queue).
	Window int
	// StateDir keeps ringid_<node>, the highest ring sequence this node has
	// seen, so that a restarted node never reuses a ring id. Empty: kept in
	// memory only (tests).
	StateDir string
	// Addr is this node's address, reported in membership events
	// (runtime.members.<id>.ip).
	Addr string
	// ConfigVersion is this node's totem.config_version (0 when unset):
	// heartbeats carry it, and membership events report each member's
	// (runtime.members.<id>.config_version), as corosync's cmap sync
	// records every member's.
	ConfigVersion uint64
	// Expected are the node ids of the nodelist. A node that has never
	// been in a ring waits until it hears all of them, or at most
	// totem.consensus, before forming its first one, so that nodes
	// started together form one view rather than a singleton each and
	// then a merge. Empty: no wait.
	Expected []uint32
	// HandoffRun: once the sequencer has ordered this many messages in a
	// row from one other node, it hands the ordering to that node, whose
	// own messages then need no round trip to be ordered (docs/totem.md,
	// "Sequencer handoff"). Zero: 32; negative: never.
	HandoffRun int
	// Logger receives the TOTEM subsystem's records.
	Logger *slog.Logger

	// announce, when set, is the protocol version this node's heartbeats
	// carry instead of ProtocolVersion: only tests set it (export_test.go),
	// to run a node of another build in one process. The node still
	// refuses peers of another version than ProtocolVersion, so among
	// peers of this build it plays a build that refuses nobody, as the
	// builds before version 1.
	announce *uint32
}

// Timings are the totem timeouts a running node can change
// (Node.SetTimings), as corosync re-reads totem.token, totem.join and
// totem.consensus when they change in cmap or in a reload.
type Timings struct {
	Token, Join, Consensus time.Duration
}

// TimingsOf reads the timings from a node's keys with corosync's
// defaults: token 1 s, join 50 ms, consensus 1.2 × token when absent.
// get returns a key's value in ms, and whether the key is there.
func TimingsOf(get func(key string) (ms uint64, ok bool, err error)) (Timings, error) {
	t := Timings{Token: time.Second, Join: 50 * time.Millisecond}
	for _, k := range []struct {
		key string
		to  *time.Duration
	}{{"totem.token", &t.Token}, {"totem.join", &t.Join}, {"totem.consensus", &t.Consensus}} {
		ms, ok, err := get(k.key)
		if err != nil {
			return Timings{}, fmt.Errorf("%s: %w", k.key, err)
		}
		if ok {
			*k.to = time.Duration(ms) * time.Millisecond
		}
	}
	if t.Consensus == 0 {
		t.Consensus = t.Token * 12 / 10
	}
	return t, nil
}

// DefaultConfig returns corosync's defaults for node id.
func DefaultConfig(id uint32, subjects bus.Subjects) Config {
	return Config{
		NodeID:    id,
		Subjects:  subjects,
		Token:     1000 * time.Millisecond,
		Join:      50 * time.Millisecond,
		Consensus: 1200 * time.Millisecond,
		Window:    8192,
	}
}

// FromConfig reads totem.token, totem.join and totem.consensus from a node
// configuration and checks them together (Validate), so that a node
// refuses a bad combination before it starts anything.
func FromConfig(cfg *config.Config, subjects bus.Subjects) (Config, error) {
	local, err := cfg.LocalNode()
	if err != nil {
		return Config{}, err
	}
	c := DefaultConfig(local.ID, subjects)
	if c.Token, err = cfg.Millis("totem.token", c.Token); err != nil {
		return Config{}, err
	}
	if c.Join, err = cfg.Millis("totem.join", c.Join); err != nil {
		return Config{}, err
	}
	// corosync derives consensus as 1.2 × token when it is not set.
	if c.Consensus, err = cfg.Millis("totem.consensus", c.Token*12/10); err != nil {
		return Config{}, err
	}
	c.StateDir = cfg.StateDir()
	c.Addr = local.Addr
	if c.ConfigVersion, err = cfg.Uint("totem.config_version", 0); err != nil {
		return Config{}, err
	}
	nodes, err := cfg.Nodes()
	if err != nil {
		return Config{}, err
	}
	for _, nd := range nodes {
		c.Expected = append(c.Expected, nd.ID)
	}
	// A copy: the derived fields stay zero, derived again by New from
	// whatever the caller sets after.
	check := c
	if err := check.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the settings and fills the zero ones that have a
// default (Join, Heartbeat, RestHeartbeat, Window, Logger). New calls it.
func (c *Config) Validate() error {
	if c.NodeID == 0 {
		return errors.New("totem: node id 0 is reserved")
	}
	if c.Subjects.Prefix() == "" {
		return errors.New("totem: no subjects")
	}
	if c.Token < 10*time.Millisecond {
		return fmt.Errorf("totem.token %s: at least 10ms", c.Token)
	}
	if c.Join <= 0 {
		c.Join = 50 * time.Millisecond
	}
	if c.Consensus < c.Token/2 {
		return fmt.Errorf("totem.consensus %s: at least half of totem.token %s", c.Consensus, c.Token)
	}
	if c.HandoffRun == 0 {
		c.HandoffRun = DefaultHandoffRun
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = c.Token / 5
	}
	if c.Heartbeat >= c.Token {
		return fmt.Errorf("totem: heartbeat %s must be shorter than totem.token %s", c.Heartbeat, c.Token)
	}
	if c.RestHeartbeat <= 0 {
		c.RestHeartbeat = max(c.Token/3, c.Heartbeat)
	}
	if c.RestHeartbeat < c.Heartbeat || c.RestHeartbeat >= c.Token {
		return fmt.Errorf("totem: rest heartbeat %s must be between the heartbeat %s and totem.token %s", c.RestHeartbeat, c.Heartbeat, c.Token)
	}
	if c.Window <= 0 {
		c.Window = 8192
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
