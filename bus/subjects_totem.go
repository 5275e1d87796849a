package bus

// Subjects of the totem layer (membership, ordered multicast, virtual
// synchrony) and of the sync engine. docs/totem.md describes every payload.

// TotemHeartbeat carries every node's heartbeats (totem.Heartbeat: a JSON
// envelope of node, version and a binary body since totem protocol
// version 2); the failure detector listens here.
func (s Subjects) TotemHeartbeat() string { return s.Join("totem", "hb") }

// TotemMemb carries the view agreement: proposals, acknowledgements and
// commits (JSON totem.MembMsg).
func (s Subjects) TotemMemb() string { return s.Join("totem", "memb") }

// TotemAck is where node's proposals ask the acknowledgements to go
// (the proposal's reply subject): only the proposer reads an ack, so it
// is not fanned out to every node as TotemMemb is (JSON totem.MembMsg).
func (s Subjects) TotemAck(node uint32) string {
	return s.Join("totem", nodeToken(node), "ack")
}

// TotemData carries ordered-multicast payloads, once, from the sender's bus
// to every node (binary data frame).
func (s Subjects) TotemData() string { return s.Join("totem", "data") }

// TotemOrder carries the sequencer's order records: batches of message ids
// with their positions in the ring's total order (binary).
func (s Subjects) TotemOrder() string { return s.Join("totem", "order") }

// TotemFetch is served by each node's bus: a request for ordered messages of
// a ring (retransmission and view-change recovery).
func (s Subjects) TotemFetch(node uint32) string {
	return s.Join("totem", nodeToken(node), "fetch")
}

// TotemMcast is where processes of a node submit messages to be multicast
// in total order (binary submit frame).
func (s Subjects) TotemMcast(node uint32) string {
	return s.Join("totem", nodeToken(node), "mcast")
}

// TotemDeliver is where a node's bus publishes, in the total order, every
// message delivered for service (binary deliver frame).
func (s Subjects) TotemDeliver(node uint32, service string) string {
	return s.Join("totem", nodeToken(node), "deliver", SanitizeToken(service))
}

// TotemDeliverConfChg is where a node's bus publishes configuration
// changes, ordered with the messages of TotemDeliver (one publisher, so a
// subscriber of TotemDeliverAll sees both in one order).
func (s Subjects) TotemDeliverConfChg(node uint32) string {
	return s.Join("totem", nodeToken(node), "deliver", "_confchg")
}

// TotemListen is served by a node's bus: a client names the service whose
// deliveries it receives (JSON {"service"}), and from then on the node's
// configuration changes are also published on that service's TotemDeliver
// subject, in order with its messages, as deliver frames with a zero
// message id.
func (s Subjects) TotemListen(node uint32) string {
	return s.Join("totem", nodeToken(node), "listen")
}

// TotemListenAsk is where a node's bus, when its totem starts, asks the
// clients of a (possibly restarted) bus to name their services again.
func (s Subjects) TotemListenAsk(node uint32) string {
	return s.Join("totem", nodeToken(node), "listen", "ask")
}

// TotemDeliverAll matches every delivery and configuration change of a node.
func (s Subjects) TotemDeliverAll(node uint32) string {
	return s.Join("totem", nodeToken(node), "deliver", ">")
}

// TotemStatus is served by each node's bus: ring id, members, state.
func (s Subjects) TotemStatus(node uint32) string {
	return s.Join("totem", nodeToken(node), "status")
}

// TotemStatsClear is served by each node's bus: it resets the counters
// of totem.Status's srp (cmap's stats.clear.totem, stats.clear.all); the
// empty reply says it is done.
func (s Subjects) TotemStatsClear(node uint32) string {
	return s.Join("totem", nodeToken(node), "stats", "clear")
}

// TotemTimings is served by each node's bus: the node's totem runs the
// totem.token, join and consensus of the request from now on (JSON
// totem.TimingsRequest); the objdb layer sends it when those keys change.
func (s Subjects) TotemTimings(node uint32) string {
	return s.Join("totem", nodeToken(node), "timings")
}

// TotemEvent is where a node publishes its membership events: kind is
// "view" (regular configuration installed), "trans" (transitional
// configuration), "joined" or "left" (one per node).
func (s Subjects) TotemEvent(node uint32, kind string) string {
	return s.Join("totem", "event", nodeToken(node), SanitizeToken(kind))
}

// TotemEvents matches every membership event of every node.
func (s Subjects) TotemEvents() string { return s.Join("totem", "event", ">") }

// SyncRegister is served by a node's sync engine: services register their
// sync hooks there (JSON sync.Registration).
func (s Subjects) SyncRegister(node uint32) string {
	return s.Join("sync", nodeToken(node), "register")
}

// SyncHook is served by a registered service on node: the sync engine's
// init/process/activate/abort calls (JSON sync.HookRequest).
func (s Subjects) SyncHook(node uint32, service string) string {
	return s.Join("sync", nodeToken(node), "hook", SanitizeToken(service))
}

// SyncState is where a node's sync engine publishes the "sync in progress"
// flag on every change (JSON sync.State).
func (s Subjects) SyncState(node uint32) string {
	return s.Join("sync", nodeToken(node), "state")
}

// SyncStateGet is served by a node's sync engine: the current sync state
// (the retained value of SyncState).
func (s Subjects) SyncStateGet(node uint32) string {
	return s.Join("sync", nodeToken(node), "state", "get")
}
