package objdb

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// feedState is whether one feed of a copy is current.
type feedState struct {
	current bool
	since   time.Time
	reason  string // why it is not current
	warned  bool   // it was logged as behind
}

// FeedStatus is one feed of a copy, as status shows it.
type FeedStatus struct {
	Current bool      `json:"current"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason,omitempty"`
}

// CopyStatus is the state of one Store's copy: whether each of its feeds
// is current, how far each has come, and how many of its node-key writes
// the keeper has yet to confirm.
type CopyStatus struct {
	Name     string     `json:"name"`
	PID      int        `json:"pid"`
	Node     uint32     `json:"node"`
	State    string     `json:"state"` // current or behind
	Reason   string     `json:"reason,omitempty"`
	Cluster  FeedStatus `json:"cluster"`
	Revision uint64     `json:"revision"` // the last cluster revision applied
	// Via is the server of the cluster feed's consumer: the node
	// keeper's when Relayed (the copy follows its keeper's relay), else
	// the copy's own.
	Via      string     `json:"via,omitempty"`
	Relayed  bool       `json:"relayed"`
	NodeFeed FeedStatus `json:"node_feed"`
	NodeSeq  uint64     `json:"node_seq"` // the last keeper record applied
	Pending  int        `json:"pending_writes"`
	Loaded   bool       `json:"loaded"`
}

// State is the copy's state now.
func (s *Store) State() CopyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked()
}

func (s *Store) stateLocked() CopyStatus {
	st := CopyStatus{
		Name: s.cfg.Name, PID: os.Getpid(), Node: s.cfg.Node,
		Cluster:  FeedStatus{Current: s.cstate.current, Since: s.cstate.since, Reason: s.cstate.reason},
		Revision: s.crev,
		Via:      s.cserver,
		Relayed:  s.crelayed,
		NodeFeed: FeedStatus{Current: s.nstate.current, Since: s.nstate.since, Reason: s.nstate.reason},
		NodeSeq:  s.nseq,
		Pending:  len(s.pend()),
		Loaded:   s.cloaded && s.nloaded,
	}
	st.State, st.Reason = "current", ""
	var why []string
	if !s.cstate.current {
		why = append(why, s.cstate.reason)
	}
	if !s.nstate.current {
		why = append(why, s.nstate.reason)
	}
	if len(why) > 0 {
		st.State, st.Reason = "behind", strings.Join(why, "; ")
	}
	return st
}

// setFeedState records a feed's state; a change is logged and tracked
// (runtime.objdb.copy.*), so that a copy that falls behind says so.
func (s *Store) setFeedState(fs *feedState, which string, current bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs.current == current && fs.reason == reason {
		return
	}
	before := s.stateLocked()
	was := fs.current
	since := fs.since
	fs.current, fs.reason = current, reason
	if was != current {
		fs.since = time.Now()
		s.changed.Broadcast() // WaitFor looks at the node feed's state
	}
	switch {
	case was && !current:
		fs.warned = true
		s.log.Warn("objdb copy behind: serving what it has, and says so in runtime.objdb.copy.state", "copy", s.cfg.Name, "feed", which, "reason", reason)
	case !was && current && fs.warned:
		fs.warned = false
		s.log.Info("objdb copy current again", "copy", s.cfg.Name, "feed", which, "behind_for", time.Since(since).Round(time.Millisecond))
	case !was && !current:
		s.log.Debug("objdb copy still behind", "copy", s.cfg.Name, "feed", which, "reason", reason)
	}
	after := s.stateLocked()
	for _, k := range []struct {
		key  string
		a, b string
	}{{CopyKeyState, before.State, after.State}, {CopyKeyReason, before.Reason, after.Reason}} {
		if k.a != k.b {
			old, cur := stringValue(k.a), stringValue(k.b)
			s.notifyLocked(k.key, old, true, cur, true)
		}
	}
}

// The read-only keys every copy answers about itself: what a client
// reading through this copy (corosync-cmapctl through the cmap service,
// `corobus cmap` through an objdb process) can see of its freshness.
// They are not stored anywhere: each copy answers for itself.
const (
	CopyKeyPrefix   = "runtime.objdb.copy."
	CopyKeyState    = CopyKeyPrefix + "state"    // str: current or behind
	CopyKeyReason   = CopyKeyPrefix + "reason"   // str: why behind, empty when current
	CopyKeyRevision = CopyKeyPrefix + "revision" // u64: the last cluster revision applied
	CopyKeyNodeSeq  = CopyKeyPrefix + "node_seq" // u64: the last node-keeper record applied
)

// IsCopyKey reports whether key is one of a copy's keys about itself.
func IsCopyKey(key string) bool { return strings.HasPrefix(key, CopyKeyPrefix) }

func stringValue(s string) Value { return Value{Type: String, Data: append([]byte(s), 0)} }

func u64Value(n uint64) Value {
	return Value{Type: Uint64, Data: binary.LittleEndian.AppendUint64(nil, n)}
}

// copyKeyLocked answers a copy key; synthetic is false for any other key.
func (s *Store) copyKeyLocked(key string) (v Value, ok, synthetic bool) {
	if !IsCopyKey(key) {
		return Value{}, false, false
	}
	st := s.stateLocked()
	switch key {
	case CopyKeyState:
		return stringValue(st.State), true, true
	case CopyKeyReason:
		return stringValue(st.Reason), true, true
	case CopyKeyRevision:
		return u64Value(st.Revision), true, true
	case CopyKeyNodeSeq:
		return u64Value(st.NodeSeq), true, true
	}
	return Value{}, false, true
}

func (s *Store) copyEntriesLocked(prefix string) []Entry {
	var out []Entry
	for _, k := range []string{CopyKeyNodeSeq, CopyKeyReason, CopyKeyRevision, CopyKeyState} {
		if strings.HasPrefix(k, prefix) {
			v, _, _ := s.copyKeyLocked(k)
			out = append(out, Entry{Key: k, Value: v, Scope: ScopeNode})
		}
	}
	return out
}

// serveCopyStatus answers the node's copies request (scatter-gather:
// every copy of the node answers) until ctx ends.
func (s *Store) serveCopyStatus(ctx context.Context) {
	if s.cfg.Subjects.Prefix() == "" {
		return
	}
	sub, err := s.nc.Subscribe(s.cfg.Subjects.ObjdbCopies(s.cfg.Node), func(m *nats.Msg) {
		b, err := json.Marshal(s.State())
		if err == nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		s.log.Warn("objdb: copy status not served", "err", err)
		return
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
}
