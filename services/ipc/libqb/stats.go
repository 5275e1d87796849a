package libqb

import (
	"bytes"
	"os"
	"strconv"
	"sync/atomic"
)

// connCounters are a connection's counters, as libqb's
// qb_ipcs_connection_stats and corosync's connection context keep them
// (corosync-cmapctl -m stats, stats.ipcs.*). The request path only adds to
// atomics: the counters are read when someone asks (Server.Stats), never
// published.
type connCounters struct {
	requests, responses atomic.Uint64
	// dispatched are events handed to the client; sendRetries the
	// event sends that found no room in the client's socket or ring.
	dispatched, sendRetries atomic.Uint64
	// overload are requests answered CS_ERR_TRY_AGAIN without running,
	// because the service was flow-controlled (a sync running): Overloaded.
	overload atomic.Uint64
	// invalidRequest are requests of an id the service does not have,
	// answered without reaching it (RequestRange).
	invalidRequest atomic.Uint64
	// flowControl is the level shown to the client; flowControlCount
	// how many times it changed (libqb counts every change, on and off).
	flowControl      atomic.Int32
	flowControlCount atomic.Uint64
}

// ConnStats is one served connection's counters, named after corosync's
// stats.ipcs.service<N>.<pid>.<conn>.* keys.
type ConnStats struct {
	ID       uint64
	Service  string
	PID      uint32
	ProcName string // the client's command name when it connected (/proc/<pid>/stat)

	Requests, Responses, Dispatched, SendRetries uint64
	Overload, InvalidRequest                     uint64
	FlowControl                                  uint32
	FlowControlCount                             uint64
	// Queueing is whether events wait in the connection's queue, Queued
	// how many, Sent how many were sent since the queue last started or
	// emptied: corosync's queueing, queued and sent.
	Queueing     bool
	Queued, Sent uint32
}

// Stats is what the server reports of its connections: Active is the
// connections served now (corosync's stats.ipcs.global.active), Closed
// those served and closed since the server started (global.closed).
type Stats struct {
	Active, Closed uint64
	Conns          []ConnStats
}

// Overloaded counts a request the caller answered CS_ERR_TRY_AGAIN
// without running it because its service is flow-controlled (corosync's
// overload counter).
func (c *Conn) Overloaded() { c.counters.overload.Add(1) }

// Stats reports the served connections and their counters now.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		if c.served {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	st := Stats{Active: uint64(len(conns)), Closed: s.closed.Load(), Conns: make([]ConnStats, 0, len(conns))}
	for _, c := range conns {
		k := &c.counters
		cs := ConnStats{ID: c.ID, Service: c.Service, PID: c.Creds.PID, ProcName: c.procName,
			Requests: k.requests.Load(), Responses: k.responses.Load(),
			Dispatched: k.dispatched.Load(), SendRetries: k.sendRetries.Load(),
			Overload: k.overload.Load(), InvalidRequest: k.invalidRequest.Load(), FlowControl: uint32(k.flowControl.Load()), FlowControlCount: k.flowControlCount.Load()}
		cs.Queued, cs.Sent = c.events.counts()
		cs.Queueing = cs.Queued > 0
		st.Conns = append(st.Conns, cs)
	}
	return st
}

// ClearStats resets the counters, as corosync's stats.clear.ipc does:
// global.closed and every connection's counts (flow_control, a state, and
// queued, what waits, are not counts).
func (s *Server) ClearStats() {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.closed.Store(0)
	s.mu.Unlock()
	for _, c := range conns {
		k := &c.counters
		for _, n := range []*atomic.Uint64{&k.requests, &k.responses, &k.dispatched, &k.sendRetries, &k.overload, &k.invalidRequest, &k.flowControlCount} {
			n.Store(0)
		}
		c.events.clearSent()
	}
}

// procName is the command name of process pid as the kernel keeps it
// (the second field of /proc/<pid>/stat, between parentheses), at most 31
// bytes as corosync keeps it; "" when it cannot be read (the client left).
func procName(pid uint32) string {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
	if err != nil {
		return ""
	}
	// The name may hold parentheses and spaces: it ends at the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return ""
	}
	name := b[open+1 : end]
	if len(name) > 31 {
		name = name[:31]
	}
	return string(name)
}
