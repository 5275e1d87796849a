package bus

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Status is a node's bus state as `corobus status` shows it and as the bus
// serves it on Subjects.BusStatus.
type Status struct {
	Node       uint32    `json:"node"`
	Server     string    `json:"server"`
	Cluster    string    `json:"cluster"`
	ClientURL  string    `json:"client_url"`
	Started    time.Time `json:"started"`
	JetStream  bool      `json:"jetstream"`
	MetaLeader string    `json:"meta_leader,omitempty"`
	Routes     []Route   `json:"routes"`
	Peers      []Peer    `json:"peers,omitempty"`
	// PeersFrom is whose view Peers are: the meta leader's (the only one
	// that knows every peer's state), or empty when this server is not
	// the leader and its peers' states are "unknown".
	PeersFrom   string `json:"peers_from,omitempty"`
	Connections int    `json:"connections"`
}

// Route is one connected route to another node's bus.
type Route struct {
	Server string `json:"server"`
	Addr   string `json:"addr"`
}

// Peer is one member of the JetStream meta group, as the meta leader sees
// it.
type Peer struct {
	Server string `json:"server"`
	// State is current, behind (missing entries the leader has), offline
	// (the leader has no route to it, has not heard from it for
	// OfflineAfter, or says offline), or unknown (no leader to ask).
	State string `json:"state"`
	// Current and Offline say the same as State, for readers of the
	// older two flags: both false when the state is behind or unknown.
	Current bool `json:"current"`
	Offline bool `json:"offline"`
	// LastSeenMS is how long ago the leader last heard from it.
	LastSeenMS int64  `json:"last_seen_ms,omitempty"`
	Lag        uint64 `json:"lag,omitempty"`
}

// Peer states.
const (
	PeerCurrent = "current"
	PeerBehind  = "behind"
	PeerOffline = "offline"
	PeerUnknown = "unknown"
)

// OfflineAfter is how long the meta leader may go without hearing from a
// peer before status calls it offline: the leader heartbeats its
// followers every second and each answers, so three silent seconds mean
// the peer (or the way to it) is gone. nats-server itself marks a peer
// offline only after its server info stops (minutes), and "not current"
// after ten seconds.
const OfflineAfter = 3 * time.Second

// peerState is a peer's state from the leader's view of it.
func peerState(current, offline bool, lastSeen time.Duration) string {
	switch {
	case offline || lastSeen > OfflineAfter:
		return PeerOffline
	case !current:
		return PeerBehind
	}
	return PeerCurrent
}

// Status reads the server's current state.
func (s *Server) Status() (Status, error) {
	st := Status{
		Node:      s.cfg.NodeID,
		Server:    ServerName(s.cfg.NodeID),
		Cluster:   s.cfg.ClusterName,
		ClientURL: s.ns.ClientURL(),
		Started:   s.started,
		JetStream: s.ns.JetStreamEnabled(),
	}
	st.Connections = s.ns.NumClients()
	rz, err := s.ns.Routez(nil)
	if err != nil {
		return st, fmt.Errorf("reading routes: %w", err)
	}
	seen := map[string]bool{}
	for _, r := range rz.Routes {
		// With pooled routes one peer has several connections; show it once.
		if seen[r.RemoteName] {
			continue
		}
		seen[r.RemoteName] = true
		st.Routes = append(st.Routes, Route{Server: r.RemoteName, Addr: fmt.Sprintf("%s:%d", r.IP, r.Port)})
	}
	slices.SortFunc(st.Routes, func(a, b Route) int { return compareStrings(a.Server, b.Server) })
	if jz, err := s.ns.Jsz(&server.JSzOptions{}); err == nil && jz.Meta != nil {
		st.MetaLeader = jz.Meta.Leader
		// Only the leader knows how far each peer has come and when it
		// last answered; a follower knows the leader and nothing of the
		// other followers (nats-server reports them "not current" for
		// ever), so its view says "unknown" and the caller asks the
		// leader (LeaderPeers).
		leader := st.MetaLeader == st.Server
		// A peer the leader has no route to is offline whatever the
		// leader's raft remembers of it (a leader elected after the peer
		// died has never heard from it at all, and calls it merely "not
		// current").
		routed := map[string]bool{st.Server: true}
		for _, r := range st.Routes {
			routed[r.Server] = true
		}
		state := func(name string, current, offline bool, seen time.Duration) string {
			if !leader {
				return PeerUnknown
			}
			return peerState(current, offline || !routed[name], seen)
		}
		st.Peers = append(st.Peers, withState(Peer{Server: st.Server}, state(st.Server, true, false, 0)))
		for _, p := range jz.Meta.Replicas {
			st.Peers = append(st.Peers, withState(Peer{Server: p.Name, LastSeenMS: p.Active.Milliseconds(), Lag: p.Lag},
				state(p.Name, p.Current, p.Offline, p.Active)))
		}
		slices.SortFunc(st.Peers, func(a, b Peer) int { return compareStrings(a.Server, b.Server) })
		if leader {
			st.PeersFrom = st.Server
		}
	} else if jz != nil && jz.Meta == nil && len(s.cfg.Routes) == 0 {
		// A one-node bus runs JetStream without a meta group: it leads
		// itself.
		st.MetaLeader = st.Server
	}
	return st, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// StatusEndpoint adds the bus status endpoint to the bus process's micro
// service.
func StatusEndpoint(svc micro.Service, s *Server, subjects Subjects) error {
	return svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) {
		st, err := s.Status()
		if err != nil {
			_ = r.Error("500", err.Error(), nil)
			return
		}
		_ = r.RespondJSON(st)
	}), micro.WithEndpointSubject(subjects.BusStatus(s.cfg.NodeID)))
}

func withState(p Peer, state string) Peer {
	p.State, p.Current, p.Offline = state, state == PeerCurrent, state == PeerOffline
	return p
}

// LeaderPeers returns the meta group's peers as the meta leader sees them
// (asking the leader's bus when st is another server's status) and whose
// view that is; with no leader known or reachable, every peer is
// "unknown": nobody can say.
func LeaderPeers(nc *nats.Conn, subjects Subjects, st Status, timeout time.Duration) ([]Peer, string) {
	if st.PeersFrom != "" || len(st.Peers) == 0 {
		return st.Peers, st.PeersFrom
	}
	unknown := func() ([]Peer, string) {
		out := slices.Clone(st.Peers)
		for i := range out {
			out[i] = withState(out[i], PeerUnknown)
		}
		return out, ""
	}
	id, ok := NodeOfServer(st.MetaLeader)
	if !ok {
		return unknown()
	}
	lst, err := FetchStatus(nc, subjects, id, timeout)
	if err != nil || lst.PeersFrom != st.MetaLeader {
		return unknown()
	}
	return lst.Peers, lst.PeersFrom
}

// NodeOfServer is the node id of a bus server's name (ServerName).
func NodeOfServer(name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, "node")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 32)
	return uint32(n), err == nil && n > 0
}

// FetchStatus asks a node's bus for its status.
func FetchStatus(nc *nats.Conn, subjects Subjects, node uint32, timeout time.Duration) (Status, error) {
	msg, err := nc.Request(subjects.BusStatus(node), nil, timeout)
	if err != nil {
		return Status{}, fmt.Errorf("asking node %d's bus for its status: %w", node, err)
	}
	if e := msg.Header.Get(micro.ErrorHeader); e != "" {
		return Status{}, fmt.Errorf("node %d's bus: %s", node, e)
	}
	var st Status
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		return Status{}, fmt.Errorf("decoding node %d's bus status: %w", node, err)
	}
	return st, nil
}
