package bus

import (
	"strconv"
	"strings"

	"github.com/corobus/corobus/config/keys"
)

// The grants of the protocols corobus's processes speak, built from the
// same Subjects methods the protocols use. A layer's or component's role
// is the Merge of the blocks it uses (layer.Layer.Grant); docs/security.md
// lists them.

// node is the node id as a subject token. Wildcard subjects are joined
// here rather than built by the Subjects methods, which sanitize their
// arguments (a "*" becomes "_").
func (a Access) node() string { return strconv.FormatUint(uint64(a.Node), 10) }

// Process is what every process of a node does: receive its replies, answer
// micro discovery ($SRV.PING|INFO|STATS) under its service names (e.g.
// "corobus-objdb"), publish its log records, answer blackbox dumps,
// log-reopen requests and new logging sections.
func (a Access) Process(microServices ...string) Grant {
	g := Grant{
		Pub:     []string{a.Subjects.Join("log", a.node(), "*")},
		Sub:     []string{InboxPrefix(a.User) + ".>", a.Subjects.Blackbox(a.Node), a.Subjects.LogReopen(a.Node), a.Subjects.LogReconfigure(a.Node)},
		Respond: true,
	}
	if len(microServices) > 0 {
		g.Sub = append(g.Sub, "$SRV.PING", "$SRV.INFO", "$SRV.STATS")
		for _, s := range microServices {
			g.Sub = append(g.Sub, "$SRV.*."+s, "$SRV.*."+s+".*")
		}
	}
	return g
}

// ObjdbServer serves the objdb API of the node, the internal write path
// included.
func (a Access) ObjdbServer() Grant {
	return Grant{Sub: []string{a.Subjects.ObjdbAPI(a.Node, "*"), a.Subjects.ObjdbInternalAPI(a.Node, "*")}}
}

// ObjdbClient calls the node's objdb API and follows its change events;
// internal adds the write path to read-only keys, for the layers that
// maintain them (svcmgr's runtime.services.*, …).
func (a Access) ObjdbClient(internal bool) Grant {
	g := Grant{
		Pub: []string{a.Subjects.ObjdbAPI(a.Node, "*")},
		Sub: []string{a.Subjects.ObjdbChanged(">")},
	}
	if internal {
		g.Pub = append(g.Pub, a.Subjects.ObjdbInternalAPI(a.Node, "*"))
	}
	return g
}

// ObjdbStore keeps a watched copy of the node's view of objdb and writes
// to it (objdb.Store): the cluster keys in the JetStream bucket, followed
// by a consumer and written directly, with their change announcements;
// the node's keys through the node's keeper (write, feed, sync); the copy
// state it answers for. owner is the objdb layer: it may create the bucket
// and write read-only keys (the keeper's internal write subject); any other
// Store binds to the bucket, and neither the bucket nor the keeper takes a
// read-only key from it, nor may it announce a change of one.
func (a Access) ObjdbStore(owner bool) Grant {
	stream := "KV_" + a.Bucket
	api := "$JS.API."
	g := Grant{
		Pub: []string{
			api + "INFO", // JetStream's account information: limits, no data
			api + "STREAM.INFO." + stream,
			api + "CONSUMER.CREATE." + stream, api + "CONSUMER.CREATE." + stream + ".>",
			api + "CONSUMER.DELETE." + stream + ".>", api + "CONSUMER.INFO." + stream + ".>",
			api + "DIRECT.GET." + stream, api + "DIRECT.GET." + stream + ".>",
			api + "STREAM.MSG.GET." + stream,
			"$JS.FC." + stream + ".>",
			// The cluster's keys; the node's own go through its keeper.
			"$KV." + a.Bucket + ".c.>",
			a.Subjects.ObjdbChanged(">"),
			a.Subjects.ObjdbKeys(a.Node, "sync"),
		},
		Sub: []string{a.Subjects.ObjdbKeys(a.Node, "feed"), a.Subjects.ObjdbCopies(a.Node)},
	}
	if owner {
		g.Pub = append(g.Pub, api+"STREAM.CREATE."+stream, api+"STREAM.UPDATE."+stream, a.Subjects.ObjdbKeys(a.Node, "write_internal"))
		return g
	}
	g.Pub = append(g.Pub, a.Subjects.ObjdbKeys(a.Node, "write"))
	for _, p := range readOnlyPatterns() {
		g.DenyPub = append(g.DenyPub, "$KV."+a.Bucket+".*."+p, a.Subjects.ObjdbChanged(p))
	}
	return g
}

// readOnlyPatterns are the read-only objdb keys (keys.ReadOnly) as subject
// patterns: a read-only prefix "system." becomes "system.>", a pattern
// token with a wildcard in it ("ring*_addr") a whole-token wildcard.
func readOnlyPatterns() []string {
	var out []string
	for _, p := range keys.ReadOnlyPrefixes() {
		if t, ok := strings.CutSuffix(p, "."); ok {
			out = append(out, t+".>")
		} else {
			out = append(out, p)
		}
	}
	for _, k := range keys.All() {
		if !k.ReadOnly {
			continue
		}
		toks := strings.Split(k.Pattern, ".")
		for i, t := range toks {
			if strings.Contains(t, "*") {
				toks[i] = "*"
			}
		}
		out = append(out, strings.Join(toks, "."))
	}
	return uniq(out)
}

// LoaderServer is the loader layer: its API, the announcements it learns
// components from, the holds of its clients, the changes it publishes and
// the retire requests it sends.
func (a Access) LoaderServer() Grant {
	return Grant{
		Sub: []string{a.Subjects.Join("lcr", a.node(), "api", "*"), a.Subjects.LcrAnnounceAll(), a.Subjects.LcrHold(a.Node)},
		Pub: []string{a.Subjects.Join("lcr", a.node(), "changed", "*"), a.Subjects.Join("lcr", "control", "*"), a.Subjects.LcrAsk()},
	}
}

// LoaderClient references components through the node's loader
// (loader.Client): the loader's API and holds, its change notifications.
// Calling a component is a grant of its own (ComponentCaller).
func (a Access) LoaderClient() Grant {
	return Grant{
		Pub: []string{a.Subjects.Join("lcr", a.node(), "api", "*"), a.Subjects.LcrHold(a.Node)},
		Sub: []string{a.Subjects.Join("lcr", a.node(), "changed", "*")},
	}
}

// ComponentCaller calls the functions of the named components, in any
// namespace and version; no names: every component. Opening a client
// session is such a call, with the client's credentials in its headers,
// which the component trusts: only the IPC gateway calls every component.
func (a Access) ComponentCaller(names ...string) Grant {
	if len(names) == 0 {
		return Grant{Pub: []string{a.Subjects.Join("svc", ">")}}
	}
	var g Grant
	for _, n := range names {
		g.Pub = append(g.Pub, a.Subjects.Join("svc", "*", SanitizeToken(n), "*", ">"))
	}
	return g
}

// Component serves component name (loader.Component.Serve) in the given
// namespaces (loader.LocalNamespace(node), loader.ClusterNamespace, …):
// its functions and sessions under every version, its announcements and
// the instance control requests (retire, exit) and a starting loader's
// ask to announce, and, for session
// components, the gateways' liveness and the clients' event subjects.
func (a Access) Component(name string, namespaces ...string) Grant {
	g := Grant{
		Pub: []string{a.Subjects.Join("ipc", "*", "*", "events", "*")},
		Sub: []string{a.Subjects.Join("lcr", "control", "*"), a.Subjects.LcrAsk(), a.Subjects.Join("ipc", "*", "*", "alive")},
	}
	for _, ns := range namespaces {
		g.Pub = append(g.Pub, a.Subjects.LcrAnnounce(ns, name))
		g.Sub = append(g.Sub, a.Subjects.Join(append(append([]string{"svc"}, namespaceTokens(ns)...), SanitizeToken(name), "*", ">")...))
	}
	return g
}

// TotemClient multicasts in total order through the node's bus and
// receives the deliveries of services (totem.Client: the service it
// listens to, and those it multicasts on), and asks for the node's totem
// status. The service of a multicast travels in its frame, not its
// subject: the bus cannot confine a client's multicasts to its services.
func (a Access) TotemClient(services ...string) Grant {
	g := Grant{
		Pub: []string{a.Subjects.TotemMcast(a.Node), a.Subjects.TotemStatus(a.Node), a.Subjects.TotemListen(a.Node)},
		Sub: []string{a.Subjects.TotemListenAsk(a.Node)},
	}
	for _, svc := range services {
		g.Sub = append(g.Sub, a.Subjects.TotemDeliver(a.Node, svc))
	}
	return g
}

// TotemTimings sets the node's totem timings (totem.TimingsRequest) and
// hears when its totem starts again (which starts from the file): the
// objdb layer, which follows totem.token, join and consensus.
func (a Access) TotemTimings() Grant {
	return Grant{
		Pub: []string{a.Subjects.TotemTimings(a.Node)},
		Sub: []string{a.Subjects.TotemListenAsk(a.Node)},
	}
}

// SyncEngine is the sync layer: registrations, its state, and the hooks of
// every registered service.
func (a Access) SyncEngine() Grant {
	return Grant{
		Sub: []string{a.Subjects.SyncRegister(a.Node), a.Subjects.SyncStateGet(a.Node)},
		Pub: []string{a.Subjects.SyncState(a.Node), a.Subjects.Join("sync", a.node(), "hook", "*")},
	}
}

// SyncService registers service with the node's sync engine and serves its
// hooks (sync.Serve).
func (a Access) SyncService(service string) Grant {
	return Grant{
		Pub: []string{a.Subjects.SyncRegister(a.Node)},
		Sub: []string{a.Subjects.SyncHook(a.Node, service)},
	}
}

// SyncFollower follows the node's sync state (the "sync in progress" flag).
func (a Access) SyncFollower() Grant {
	return Grant{
		Pub: []string{a.Subjects.SyncStateGet(a.Node)},
		Sub: []string{a.Subjects.SyncState(a.Node)},
	}
}

// SvcmgrServer serves the service manager's API, publishes its events,
// follows component announcements (asking for them when it starts) and
// asks instances to exit.
func (a Access) SvcmgrServer() Grant {
	return Grant{
		Sub: []string{a.Subjects.Join("svcmgr", a.node(), "api", "*"), a.Subjects.LcrAnnounceAll()},
		Pub: []string{a.Subjects.SvcmgrEvents(a.Node), a.Subjects.Join("lcr", "control", "*"), a.Subjects.LcrAsk()},
	}
}

// IPCGateway is the gateway side of client sessions: its liveness, the
// events components send to its clients, and its connections' stats.
func (a Access) IPCGateway() Grant {
	return Grant{
		Pub: []string{a.Subjects.Join("ipc", a.node(), "*", "alive")},
		Sub: []string{a.Subjects.Join("ipc", a.node(), "*", "events", "*"), a.Subjects.IPCStats(a.Node), a.Subjects.IPCStatsClear(a.Node)},
	}
}

// QuorumProvider publishes the node's quorum view, answers for it, and
// re-reads its configuration when asked (votequorum).
func (a Access) QuorumProvider() Grant {
	return Grant{
		Pub: []string{a.Subjects.QuorumState(a.Node)},
		Sub: []string{a.Subjects.QuorumStateGet(a.Node), a.Subjects.QuorumRefresh(a.Node)},
	}
}

// QuorumFollower follows the node's quorum view (the quorum service).
func (a Access) QuorumFollower() Grant {
	return Grant{
		Pub: []string{a.Subjects.QuorumStateGet(a.Node)},
		Sub: []string{a.Subjects.QuorumState(a.Node)},
	}
}

// NodeControl acts on the whole node (cfg): asks its supervisor to stop
// it, its processes to reopen their logs or apply a new logging section,
// its quorum provider to re-read
// the configuration, and announces what it did.
func (a Access) NodeControl() Grant {
	return Grant{Pub: []string{a.Subjects.NodeShutdown(a.Node), a.Subjects.LogReopen(a.Node), a.Subjects.LogReconfigure(a.Node),
		a.Subjects.QuorumRefresh(a.Node), a.Subjects.Join("cfg", a.node(), "*")}}
}

// CfgPeer is one of node's cfg instances in a shutdown negotiation that
// covers them all: it lists the others through the node's loader and asks
// them, and answers their asks, on Subjects.CfgPeers; it pings them, and
// answers their pings, on Subjects.CfgPeer.
func (a Access) CfgPeer() Grant {
	return Grant{
		Pub: []string{a.Subjects.LcrAPI(a.Node, "list"), a.Subjects.CfgPeers(a.Node), a.Subjects.Join("cfgpeers", a.node(), "*")},
		Sub: []string{a.Subjects.CfgPeers(a.Node), a.Subjects.Join("cfgpeers", a.node(), "*")},
	}
}

// CPGService publishes the node's CPG events (a group's configuration
// changes, the ring) and answers for the node's groups (the cpg service).
func (a Access) CPGService() Grant {
	return Grant{
		Pub: []string{a.Subjects.Join("cpg", a.node(), "confchg", "*"), a.Subjects.CPGRing(a.Node)},
		Sub: []string{a.Subjects.CPGGroups(a.Node)},
	}
}

// SubscriberRole may subscribe to every subject of the cluster and publish
// nothing — not even an answer to a request it overhears.
func SubscriberRole(a Access) Grant {
	return Grant{Sub: []string{a.Subjects.All()}}
}

// ComponentExecutableRole is the role of a component executable that the
// service manager starts from loader.component_dir (user component.<name>):
// it serves component name in single-token namespaces and may use the
// loader. A component that needs more (objdb, totem, sync) is declared as a
// built-in service with its own grant.
func ComponentExecutableRole(a Access, name string) Grant {
	g := a.Component(name)
	g.Sub = append(g.Sub, a.Subjects.Join("svc", "*", SanitizeToken(name), "*", ">"))
	// Its announcements in any one-token namespace (the one svcmgr
	// passes it, or its own), and on the legacy subject of a component
	// written before the namespace went into it.
	g.Pub = append(g.Pub, a.Subjects.Join("lcr", "announce", "*", SanitizeToken(name)), a.Subjects.LcrAnnounceLegacy(name))
	return Merge(a.Process(), g, a.LoaderClient())
}
