package bus

import (
	"strconv"
	"strings"
)

// LcrAnnounce is where a component instance publishes its announcement
// (and, periodically, its heartbeat): JSON loader.Announcement.
func (s Subjects) LcrAnnounce(name string) string {
	return s.Join("lcr", "announce", SanitizeToken(name))
}

// LcrAnnounceAll matches every component's announcements.
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
	toks := strings.Split(namespace, ".")
	for i, t := range toks {
		toks[i] = SanitizeToken(t)
	}
	return s.Join(append([]string{"svc"}, append(toks, SanitizeToken(name), strconv.FormatUint(uint64(version), 10))...)...)
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

// IPCEvents is where components publish the raw libqb event messages of
// one client connection of a gateway instance; conn "*" matches them all.
func (s Subjects) IPCEvents(node uint32, gateway, conn string) string {
	if conn != "*" {
		conn = SanitizeToken(conn)
	}
	return s.Join("ipc", strconv.FormatUint(uint64(node), 10), SanitizeToken(gateway), "events", conn)
}
