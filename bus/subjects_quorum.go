package bus

// Subjects of the quorum, votequorum and cfg services, and of the node
// control they use.

// QuorumState is where node's votequorum publishes its quorum view (JSON
// votequorum.State) at the end of every synchronization and on every change
// of quorum; the quorum service and any observer follow it.
func (s Subjects) QuorumState(node uint32) string {
	return s.Join("quorum", nodeToken(node), "state")
}

// QuorumStateGet answers the current view (request/reply).
func (s Subjects) QuorumStateGet(node uint32) string {
	return s.Join("quorum", nodeToken(node), "state", "get")
}

// QuorumRefresh asks node's votequorum to re-read its configuration keys
// now (the cfg service's reload asks it before it answers, as corosync's
// votequorum re-reads within the reload); the reply comes once applied.
func (s Subjects) QuorumRefresh(node uint32) string {
	return s.Join("quorum", nodeToken(node), "refresh")
}

// CfgEvent is where node's cfg service publishes what it did: kind is
// "shutdown" (the negotiation's steps), "kill" or "reload".
func (s Subjects) CfgEvent(node uint32, kind string) string {
	return s.Join("cfg", nodeToken(node), SanitizeToken(kind))
}

// CfgEvents matches every cfg event of every node.
func (s Subjects) CfgEvents() string { return s.Join("cfg", "*", ">") }

// CfgPeers is where node's cfg instances (more than one while a new
// one replaces the old, or when the layer is scaled) run one shutdown
// negotiation together: every instance of the node subscribes, and the
// one a client asked asks the others there to ask their own registered
// clients. Not under "cfg." on purpose: CfgEvents' followers (`corobus cfg
// --events`) see the negotiation's steps, not its internal messages.
func (s Subjects) CfgPeers(node uint32) string {
	return s.Join("cfgpeers", nodeToken(node))
}

// CfgPeer is where node's cfg instance instance answers a ping: while a
// shutdown negotiation runs, its instances ask each other there whether
// they are still alive (no responder: the instance is gone, and its
// clients with it).
func (s Subjects) CfgPeer(node uint32, instance string) string {
	return s.Join("cfgpeers", nodeToken(node), SanitizeToken(instance))
}

// NodeShutdown is served by the process that supervises node's layers
// (`corobus up`): a request asks it to stop the node as SIGTERM would.
func (s Subjects) NodeShutdown(node uint32) string {
	return s.Join("node", nodeToken(node), "shutdown")
}

// LogReopen asks every layer process of node to reopen its log file
// (scatter-gather: each answers once it has).
func (s Subjects) LogReopen(node uint32) string {
	return s.Join("logfiles", nodeToken(node), "reopen")
}

// LogReconfigure gives every layer process of node a new logging section
// (a reload changed it); scatter-gather: each answers once it applied it.
func (s Subjects) LogReconfigure(node uint32) string {
	return s.Join("logfiles", nodeToken(node), "reconfigure")
}
