package bus

import (
	"strconv"
	"strings"
)

// LcrAnnounce is where a component instance serving in namespace
// publishes its announcement (and, periodically, its heartbeat): JSON
// loader.Announcement. The namespace is in the subject so that a loader
// or service manager subscribes to the namespaces it needs only
// (LcrAnnounceNamespace): NATS routes forward a message only to servers
// with interest in it, so a node's own components' heartbeats never
// leave it unless another node searches its namespace.
func (s Subjects) LcrAnnounce(namespace, name string) string {
	return s.Join(append(append([]string{"lcr", "announce"}, namespaceTokens(namespace)...), SanitizeToken(name))...)
}

// LcrAnnounceNamespace matches the announcements of every component of
// one namespace (and of no other: a namespace is a fixed number of
// tokens, and the name one more).
func (s Subjects) LcrAnnounceNamespace(namespace string) string {
	return s.Join(append(append([]string{"lcr", "announce"}, namespaceTokens(namespace)...), "*")...)
}

// LcrAnnounceLegacy is where a component written before the namespace
// went into the subject announces: still accepted by every loader and
// service manager (which then receive them from every node, as before).
func (s Subjects) LcrAnnounceLegacy(name string) string {
	return s.Join("lcr", "announce", SanitizeToken(name))
}

// LcrAnnounceLegacyAll matches every legacy announcement and no
// namespaced one (those have at least two tokens after "announce").
func (s Subjects) LcrAnnounceLegacyAll() string { return s.Join("lcr", "announce", "*") }

// LcrAnnounceAll matches every component's announcements, in every
// namespace: for grants and observers.
func (s Subjects) LcrAnnounceAll() string { return s.Join("lcr", "announce", ">") }

// LcrAsk is where a loader that starts asks every component instance to
// announce itself now rather than at its next heartbeat (seconds away).
func (s Subjects) LcrAsk() string { return s.Join("lcr", "ask") }

// LcrAPI is the request subject of one loader operation (reference,
// resolve, release, list) for the search path of node: served by that
// node's loader processes in a queue group.
func (s Subjects) LcrAPI(node uint32, op string) string {
	return s.Join("lcr", strconv.FormatUint(uint64(node), 10), "api", SanitizeToken(op))
}

// LcrChanged is published by node's loader when what a component name
// resolves to may have changed; clients holding handles re-resolve.
func (s Subjects) LcrChanged(node uint32, name string) string {
	return s.Join("lcr", strconv.FormatUint(uint64(node), 10), "changed", SanitizeToken(name))
}

// LcrHold is where a client periodically restates the references it holds
// through node's loader, so that references of a client that died expire
// and a restarted loader relearns them.
func (s Subjects) LcrHold(node uint32) string {
	return s.Join("lcr", strconv.FormatUint(uint64(node), 10), "hold")
}

// LcrControl is one component instance's control subject (retire, exit).
func (s Subjects) LcrControl(instance string) string {
	return s.Join("lcr", "control", SanitizeToken(instance))
}

// Component is the conventional subject a component serves: one more
// token, the function, follows it. namespace may hold several dotted
// tokens ("node1", "cluster", "vendor.acme").
func (s Subjects) Component(namespace, name string, version uint32) string {
	return s.Join(append(append([]string{"svc"}, namespaceTokens(namespace)...), SanitizeToken(name), strconv.FormatUint(uint64(version), 10))...)
}

// namespaceTokens is a component namespace as subject tokens, each
// sanitized: "vendor.acme" is two tokens.
func namespaceTokens(namespace string) []string {
	toks := strings.Split(namespace, ".")
	for i, t := range toks {
		toks[i] = SanitizeToken(t)
	}
	return toks
}

// SvcmgrAPI is the request subject of one service-manager operation (load,
// unload, list) on node.
func (s Subjects) SvcmgrAPI(node uint32, op string) string {
	return s.Join("svcmgr", strconv.FormatUint(uint64(node), 10), "api", SanitizeToken(op))
}

// SvcmgrEvents is where node's service manager announces each service it
// loads or unloads (JSON svcmgr.Event).
func (s Subjects) SvcmgrEvents(node uint32) string {
	return s.Join("svcmgr", strconv.FormatUint(uint64(node), 10), "events")
}

// IPCAlive is where an IPC gateway instance says, every second, that it is
// alive; components drop the sessions of a gateway silent for 5 s.
func (s Subjects) IPCAlive(node uint32, gateway string) string {
	return s.Join("ipc", strconv.FormatUint(uint64(node), 10), SanitizeToken(gateway), "alive")
}

// IPCStats is answered by a node's IPC gateway: the request's data is a
// key prefix, the reply its part of cmap's stats map (stats.ipcs.*) under
// that prefix, computed at the request — how a cmap instance outside the
// gateway's process serves `corosync-cmapctl -m stats`.
func (s Subjects) IPCStats(node uint32) string {
	return s.Join("ipc", strconv.FormatUint(uint64(node), 10), "stats")
}

// IPCStatsClear is answered by a node's IPC gateway: it resets its
// connections' counters and stats.ipcs.global.closed (cmap's
// stats.clear.ipc, stats.clear.all); the empty reply says it is done.
func (s Subjects) IPCStatsClear(node uint32) string {
	return s.Join("ipc", strconv.FormatUint(uint64(node), 10), "stats", "clear")
}

// IPCEvents is where components publish the raw libqb event messages of
// one client connection of a gateway instance; conn "*" matches them all.
func (s Subjects) IPCEvents(node uint32, gateway, conn string) string {
	if conn != "*" {
		conn = SanitizeToken(conn)
	}
	return s.Join("ipc", strconv.FormatUint(uint64(node), 10), SanitizeToken(gateway), "events", conn)
}
