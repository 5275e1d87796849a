package votequorum

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Settings are the configuration keys votequorum reads (votequorum(5)),
// taken from a node's flat key map: the configuration file at start, the
// node's objdb keys at run time.
type Settings struct {
	// Provider is quorum.provider; votequorum runs only for
	// "corosync_votequorum".
	Provider string
	// ExpectedVotes is quorum.expected_votes (0: unset).
	ExpectedVotes uint32
	// Votes is quorum.votes, this node's votes without a nodelist
	// (0: unset, 1 is assumed).
	Votes uint32
	// HaveNodelist: the nodelist lists this node (nodelist.local_node_pos).
	HaveNodelist bool
	// NodeVotes is this node's nodelist.node.N.quorum_votes (default 1);
	// NodeCount the nodelist's length; NodelistExpected the sum of every
	// node's votes.
	NodeVotes, NodeCount, NodelistExpected uint32
	TwoNode                                bool
	// WaitForAll is quorum.wait_for_all; WaitForAllSet tells whether the
	// file says it (unset, it follows two_node).
	WaitForAll, WaitForAllSet bool
	LastManStanding           bool
	LastManStandingWindow     time.Duration
	AutoTieBreaker            bool
	// AutoTieBreakerNode is quorum.auto_tie_breaker_node: "lowest",
	// "highest" or a list of node ids ("" unset).
	AutoTieBreakerNode    string
	AllowDownscale        bool
	ExpectedVotesTracking bool
	// QdeviceModel is quorum.device.model: a device is configured when it
	// is not empty.
	QdeviceModel string
	// QdeviceVotes is quorum.device.votes; -1 when unset.
	QdeviceVotes                       int64
	QdeviceTimeout, QdeviceSyncTimeout time.Duration
	// CancelWaitForAll is quorum.cancel_wait_for_all, the run-time switch
	// that ends waiting for all nodes.
	CancelWaitForAll bool
}

// Provider names.
const ProviderVotequorum = "corosync_votequorum"

// Defaults of votequorum(5).
const (
	DefaultLMSWindow          = 10 * time.Second
	DefaultQdeviceTimeout     = 10 * time.Second
	DefaultQdeviceSyncTimeout = 30 * time.Second
)

// ParseSettings reads votequorum's keys from flat (key → value as text,
// as config.Config.Flat and objdb listings give them). localPos is this
// node's position in the nodelist, or -1 when it is not in one. A value
// that does not parse is an error naming the key.
func ParseSettings(flat map[string]string, localPos int) (Settings, error) {
	s := Settings{Provider: flat["quorum.provider"], QdeviceVotes: -1, LastManStandingWindow: DefaultLMSWindow,
		QdeviceTimeout: DefaultQdeviceTimeout, QdeviceSyncTimeout: DefaultQdeviceSyncTimeout}
	var err error
	u32 := func(key string, dst *uint32) {
		if v, ok := flat[key]; ok && err == nil {
			var n uint64
			n, err = strconv.ParseUint(strings.TrimSpace(v), 0, 32)
			if err != nil {
				err = fmt.Errorf("%s: expected an unsigned 32-bit integer, found %q", key, v)
			}
			*dst = uint32(n)
		}
	}
	flag := func(key string, dst *bool) bool {
		v, ok := flat[key]
		if !ok || err != nil {
			return false
		}
		n, perr := strconv.ParseUint(strings.TrimSpace(v), 0, 8)
		if perr != nil {
			err = fmt.Errorf("%s: expected 0 or 1, found %q", key, v)
			return false
		}
		*dst = n != 0
		return true
	}
	ms := func(key string, dst *time.Duration) {
		var n uint32
		if _, ok := flat[key]; ok {
			u32(key, &n)
			*dst = time.Duration(n) * time.Millisecond
		}
	}
	u32("quorum.expected_votes", &s.ExpectedVotes)
	u32("quorum.votes", &s.Votes)
	flag("quorum.two_node", &s.TwoNode)
	s.WaitForAllSet = flag("quorum.wait_for_all", &s.WaitForAll)
	flag("quorum.last_man_standing", &s.LastManStanding)
	ms("quorum.last_man_standing_window", &s.LastManStandingWindow)
	flag("quorum.auto_tie_breaker", &s.AutoTieBreaker)
	s.AutoTieBreakerNode = flat["quorum.auto_tie_breaker_node"]
	flag("quorum.allow_downscale", &s.AllowDownscale)
	flag("quorum.expected_votes_tracking", &s.ExpectedVotesTracking)
	flag("quorum.cancel_wait_for_all", &s.CancelWaitForAll)
	s.QdeviceModel = flat["quorum.device.model"]
	if v, ok := flat["quorum.device.votes"]; ok && err == nil {
		n, perr := strconv.ParseUint(strings.TrimSpace(v), 0, 32)
		if perr != nil {
			err = fmt.Errorf("quorum.device.votes: expected an unsigned 32-bit integer, found %q", v)
		}
		s.QdeviceVotes = int64(n)
	}
	ms("quorum.device.timeout", &s.QdeviceTimeout)
	ms("quorum.device.sync_timeout", &s.QdeviceSyncTimeout)
	if err != nil {
		return s, err
	}
	if localPos < 0 {
		return s, nil
	}
	// The nodelist: every node counts, with its quorum_votes or 1.
	positions := map[int]bool{}
	for k := range flat {
		rest, ok := strings.CutPrefix(k, "nodelist.node.")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, perr := strconv.Atoi(n); perr == nil {
			positions[i] = true
		}
	}
	for _, i := range slices.Sorted(func(yield func(int) bool) {
		for p := range positions {
			if !yield(p) {
				return
			}
		}
	}) {
		votes := uint32(1)
		u32(fmt.Sprintf("nodelist.node.%d.quorum_votes", i), &votes)
		s.NodeCount++
		s.NodelistExpected += votes
		if i == localPos {
			s.NodeVotes = votes
			s.HaveNodelist = true
		}
	}
	return s, err
}
