// Package session carries corosync client connections from the IPC gateway
// to the service components over the bus.
//
// A libqb connection is stateful (cmap iterators and track handles, CPG
// joins), so every request of one connection must reach the same instance
// of a component, even when several instances share the component's
// subject. The protocol:
//
//  1. Open: the gateway calls the component's function "open" through the
//     loader (any instance may take it) with the connection's credentials
//     in headers. The instance that answers names its own session subject
//     in the JSON reply (OpenReply), or refuses with a cs_error_t.
//  2. Requests: the gateway sends each raw libqb request message (header
//     included) to the session subject, with the connection id in the
//     Corobus-Conn header; the reply is the raw libqb response message.
//     Requests of one connection are handled in order, one at a time, as
//     libqb clients expect; different connections run in parallel.
//     A request the gateway sends without a reply subject is
//     asynchronous (CPG's multicast): handled in order with the others,
//     answered by nothing.
//  3. Events: the instance publishes raw libqb event messages (track
//     notifications, CPG deliveries) on the events subject the gateway
//     gave at open. An empty message with the Corobus-Flow header sets the
//     connection's request flow control instead (libqb.Conn.SetFlowControl
//     levels: "0", "1", "2").
//  4. Close: the gateway publishes to the session subject + ".close".
//  5. Liveness: the gateway publishes on its alive subject every
//     AliveInterval while it has connections (sessions); an instance drops
//     the sessions of a gateway not heard for GatewayTimeout (a gateway
//     that crashed cannot say close), and forgets a gateway silent that
//     long. A gateway without connections and an instance without
//     sessions send and look at nothing.
//  6. Probe, the other way: every 5 s (ipc.DefaultProbeInterval, on the
//     wall clock's multiples of it) the gateway asks each instance it has
//     sessions on, on its session subject with the
//     Corobus-Probe header, which of its connection ids it no longer
//     knows (Probe). No responder, twice in a row, means the instance
//     is gone (killed, crashed, restarted: a restarted instance has a new
//     session subject; one miss may be an instance reconnecting to a
//     restarted bus). The gateway then ends those clients' connections, as
//     corosync's clients see theirs end when corosync dies: a client
//     that only waits for events (Pacemaker's quorum and cfg tracking)
//     sends no request that would find out, and would otherwise wait
//     forever on an instance that no longer exists.
package session

import (
	"time"

	"github.com/corobus/corobus/services/cswire"
)

// Header names of the session protocol.
const (
	HdrConn    = "Corobus-Conn"    // connection id, unique per gateway
	HdrGateway = "Corobus-Gateway" // the gateway's alive subject
	HdrPID     = "Corobus-Pid"     // client credentials (SO_PEERCRED)
	HdrUID     = "Corobus-Uid"
	HdrGID     = "Corobus-Gid"
	HdrEvents  = "Corobus-Events" // where the component publishes events
	HdrFlow    = "Corobus-Flow"   // on an event: the request flow-control level
	HdrProbe   = "Corobus-Probe"  // on a request: a probe (Probe), not a client's request
)

// OpenReply answers an open: the instance's session subject, or the
// cs_error_t the connection is refused with.
type OpenReply struct {
	Session string       `json:"session,omitempty"`
	Error   cswire.Error `json:"error,omitempty"`
	Why     string       `json:"why,omitempty"`
}

// Timing of gateway liveness.
const (
	AliveInterval  = time.Second
	GatewayTimeout = 5 * time.Second
)

// CloseSubject is where a gateway says a connection ended.
func CloseSubject(session string) string { return session + ".close" }

// EventSink takes a connection's event messages (track notifications,
// confchgs, deliveries): a *Conn on the bus, or a test's recorder.
type EventSink interface {
	SendEvent(msg []byte) error
}
