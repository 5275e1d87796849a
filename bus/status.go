package bus

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Status is a node's bus state as `corobus status` shows it and as the bus
// serves it on Subjects.BusStatus.
type Status struct {
	Node        uint32    `json:"node"`
	Server      string    `json:"server"`
	Cluster     string    `json:"cluster"`
	ClientURL   string    `json:"client_url"`
	Started     time.Time `json:"started"`
	JetStream   bool      `json:"jetstream"`
	MetaLeader  string    `json:"meta_leader,omitempty"`
	Routes      []Route   `json:"routes"`
	Peers       []Peer    `json:"peers,omitempty"`
	Connections int       `json:"connections"`
}

// Route is one connected route to another node's bus.
type Route struct {
	Server string `json:"server"`
	Addr   string `json:"addr"`
}

// Peer is one member of the JetStream meta group, as this node sees it.
type Peer struct {
	Server  string `json:"server"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
}

// State is the peer's state in one word, as status prints it: current,
// behind or offline.
func (p Peer) State() string {
	switch {
	case p.Offline:
		return "offline"
	case !p.Current:
		return "behind"
	}
	return "current"
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
		st.Peers = append(st.Peers, Peer{Server: st.Server, Current: true})
		for _, p := range jz.Meta.Replicas {
			st.Peers = append(st.Peers, Peer{Server: p.Name, Current: p.Current, Offline: p.Offline})
		}
		slices.SortFunc(st.Peers, func(a, b Peer) int { return compareStrings(a.Server, b.Server) })
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
