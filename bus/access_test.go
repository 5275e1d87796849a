package bus_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/internal/testlog"
)

func matchesAny(subject string, patterns []string) bool {
	for _, p := range patterns {
		if server.SubjectMatchesFilter(subject, p) {
			return true
		}
	}
	return false
}

// TestGrantsMatchTheProtocolsSubjects: the wildcards of each grant block
// match the concrete subjects the protocol builds with Subjects (which
// sanitize their arguments, so a grant must not be built from them with a
// "*" argument), and nothing beyond the block's node.
func TestGrantsMatchTheProtocolsSubjects(t *testing.T) {
	s, err := bus.NewSubjects("corobus.c")
	if err != nil {
		t.Fatal(err)
	}
	a := bus.Access{Subjects: s, Node: 2, Bucket: bus.ObjdbBucket("c"), User: "objdb"}
	type want struct {
		pub, sub, notPub, notSub []string
	}
	for name, tc := range map[string]struct {
		g bus.Grant
		w want
	}{
		"process": {a.Process("corobus-objdb"), want{
			pub:    []string{s.Log(2, "OBJDB")},
			sub:    []string{s.Blackbox(2), s.LogReopen(2), "_INBOX.objdb.x7.y", "$SRV.PING", "$SRV.INFO.corobus-objdb", "$SRV.STATS.corobus-objdb.ID9"},
			notPub: []string{s.Log(1, "OBJDB")},
			notSub: []string{"_INBOX.loader.x", "_INBOX.x", "$SRV.INFO.corobus-loader"},
		}},
		"objdb server": {a.ObjdbServer(), want{sub: []string{s.ObjdbAPI(2, "set"), s.ObjdbInternalAPI(2, "set")}, notSub: []string{s.ObjdbAPI(1, "get")}}},
		"objdb client": {a.ObjdbClient(false), want{
			pub: []string{s.ObjdbAPI(2, "get")}, sub: []string{s.ObjdbChanged("totem.token")},
			notPub: []string{s.ObjdbInternalAPI(2, "set"), s.ObjdbAPI(1, "get")},
		}},
		"objdb internal client": {a.ObjdbClient(true), want{pub: []string{s.ObjdbInternalAPI(2, "set")}}},
		"objdb store": {a.ObjdbStore(false), want{
			pub: []string{"$KV." + a.Bucket + ".c.test.x", s.ObjdbChanged("test.x"), "$JS.API.DIRECT.GET.KV_" + a.Bucket + ".$KV." + a.Bucket + ".c.a",
				s.ObjdbKeys(2, "write"), s.ObjdbKeys(2, "sync")},
			sub: []string{s.ObjdbKeys(2, "feed"), s.ObjdbCopies(2)},
			notPub: []string{"$KV." + a.Bucket + ".n2.runtime.x", "$KV.other.c.x", "$JS.API.STREAM.DELETE.KV_" + a.Bucket, "$JS.API.STREAM.UPDATE.KV_" + a.Bucket,
				s.ObjdbKeys(2, "write_internal"), s.ObjdbKeys(1, "write"), s.ObjdbKeys(2, "feed")},
			notSub: []string{s.ObjdbKeys(2, "write"), s.ObjdbKeys(1, "feed")},
		}},
		"objdb owner store": {a.ObjdbStore(true), want{pub: []string{s.ObjdbKeys(2, "write_internal"), "$KV." + a.Bucket + ".c.totem.cluster_name"}}},
		"loader server": {a.LoaderServer(), want{
			sub: []string{s.LcrAPI(2, "reference"), s.LcrAnnounce("node2", "cmap"), s.LcrAnnounce("cluster", "cmap"), s.LcrAnnounceLegacy("cmap"), s.LcrHold(2)},
			pub: []string{s.LcrChanged(2, "cmap"), s.LcrControl("abc123")},
		}},
		"loader client": {a.LoaderClient(), want{
			pub: []string{s.LcrAPI(2, "resolve"), s.LcrHold(2)}, sub: []string{s.LcrChanged(2, "cmap")},
			notPub: []string{s.Component("node2", "cmap", 0) + ".open"},
		}},
		"component caller": {a.ComponentCaller("cfg"), want{
			pub:    []string{s.Component("node2", "cfg", 0) + ".open", s.Component("cluster", "cfg", 3) + ".session.X.close"},
			notPub: []string{s.Component("node2", "cmap", 0) + ".open"},
		}},
		"component": {a.Component("cmap", "node2"), want{
			pub:    []string{s.LcrAnnounce("node2", "cmap"), s.IPCEvents(1, "gw", "c7")},
			sub:    []string{s.Component("node2", "cmap", 0) + ".open", s.Component("node2", "cmap", 0) + ".session.ID.close", s.LcrControl("abc"), s.IPCAlive(3, "gw")},
			notPub: []string{s.LcrAnnounce("node2", "cpg"), s.LcrAnnounce("node1", "cmap"), s.LcrAnnounceLegacy("cmap")}, notSub: []string{s.Component("node2", "cpg", 0) + ".open", s.Component("node1", "cmap", 0) + ".open"},
		}},
		"component executable": {bus.ComponentExecutableRole(a, "mysvc"), want{
			pub:    []string{s.LcrAnnounce("node2", "mysvc"), s.LcrAnnounce("cluster", "mysvc"), s.LcrAnnounceLegacy("mysvc")},
			sub:    []string{s.Component("node2", "mysvc", 1) + ".echo", s.LcrAsk()},
			notPub: []string{s.LcrAnnounce("node2", "cmap"), s.LcrAnnounceLegacy("cmap"), s.LcrAnnounce("vendor.acme", "mysvc")},
		}},
		"totem client": {a.TotemClient("cpg"), want{pub: []string{s.TotemMcast(2), s.TotemStatus(2), s.TotemListen(2)}, sub: []string{s.TotemDeliver(2, "cpg"), s.TotemListenAsk(2)},
			notPub: []string{s.TotemData(), s.TotemMemb()}, notSub: []string{s.TotemDeliver(2, "sync"), s.TotemDeliver(1, "cpg")}}},
		"sync engine":     {a.SyncEngine(), want{sub: []string{s.SyncRegister(2), s.SyncStateGet(2)}, pub: []string{s.SyncState(2), s.SyncHook(2, "cpg")}}},
		"sync service":    {a.SyncService("cpg"), want{pub: []string{s.SyncRegister(2)}, sub: []string{s.SyncHook(2, "cpg")}, notSub: []string{s.SyncHook(2, "quorum")}}},
		"svcmgr":          {a.SvcmgrServer(), want{sub: []string{s.SvcmgrAPI(2, "load"), s.LcrAnnounce("node2", "x"), s.LcrAnnounceLegacy("x")}, pub: []string{s.SvcmgrEvents(2), s.LcrControl("i")}}},
		"ipc gateway":     {a.IPCGateway(), want{pub: []string{s.IPCAlive(2, "gw1")}, sub: []string{s.IPCEvents(2, "gw1", "c9")}, notSub: []string{s.IPCEvents(1, "gw1", "c9")}}},
		"quorum provider": {a.QuorumProvider(), want{pub: []string{s.QuorumState(2)}, sub: []string{s.QuorumStateGet(2), s.QuorumRefresh(2)}, notPub: []string{s.QuorumState(1)}}},
		"quorum follower": {a.QuorumFollower(), want{pub: []string{s.QuorumStateGet(2)}, sub: []string{s.QuorumState(2)}, notPub: []string{s.QuorumState(2)}}},
		"cpg service":     {a.CPGService(), want{pub: []string{s.CPGConfChg(2, "g1"), s.CPGRing(2)}, sub: []string{s.CPGGroups(2)}, notPub: []string{s.CPGRing(1)}}},
		"node control":    {a.NodeControl(), want{pub: []string{s.NodeShutdown(2), s.LogReopen(2), s.QuorumRefresh(2), s.CfgEvent(2, "reload")}, notPub: []string{s.NodeShutdown(1)}}},
		"cfg peer": {a.CfgPeer(), want{pub: []string{s.CfgPeers(2), s.CfgPeer(2, "i1"), s.LcrAPI(2, "list")}, sub: []string{s.CfgPeers(2), s.CfgPeer(2, "i1")},
			notPub: []string{s.CfgPeers(1), s.CfgPeer(1, "i1"), s.LcrAPI(2, "reference")}, notSub: []string{s.CfgPeers(1), s.CfgPeer(1, "i1")}}},
		"subscriber": {bus.SubscriberRole(a), want{sub: []string{s.TotemData(), s.ObjdbChanged("a.b")}, notPub: []string{s.TotemData()}, notSub: []string{"_INBOX.objdb.x", "$KV.x.y"}}},
	} {
		for _, p := range tc.w.pub {
			if !matchesAny(p, tc.g.Pub) || matchesAny(p, tc.g.DenyPub) {
				t.Errorf("%s: may not publish %s (pub %v)", name, p, tc.g.Pub)
			}
		}
		for _, p := range tc.w.sub {
			if !matchesAny(p, tc.g.Sub) {
				t.Errorf("%s: may not subscribe %s (sub %v)", name, p, tc.g.Sub)
			}
		}
		for _, p := range tc.w.notPub {
			if matchesAny(p, tc.g.Pub) && !matchesAny(p, tc.g.DenyPub) {
				t.Errorf("%s: may publish %s", name, p)
			}
		}
		for _, p := range tc.w.notSub {
			if matchesAny(p, tc.g.Sub) {
				t.Errorf("%s: may subscribe %s", name, p)
			}
		}
	}
	// A direct writer of the bucket may not write or announce a read-only
	// key, in any scope.
	g := a.ObjdbStore(false)
	for _, k := range []string{"totem.cluster_name", "nodelist.node.0.ring0_addr", "runtime.services.cmap.0.x", "system.state_dir", "uidgid.config.uid.0", "config.reload_in_progress"} {
		for _, subj := range []string{"$KV." + a.Bucket + ".c." + k, s.ObjdbChanged(k)} {
			if !matchesAny(subj, g.DenyPub) {
				t.Errorf("objdb store: read-only %s not denied as %s", k, subj)
			}
		}
	}
	if matchesAny("$KV."+a.Bucket+".c.uidgid.uid.1000", g.DenyPub) {
		t.Error("objdb store: uidgid.uid.* is writable in corosync, but denied")
	}
	if owner := a.ObjdbStore(true); len(owner.DenyPub) != 0 {
		t.Errorf("the objdb layer may not write read-only keys: %v", owner.DenyPub)
	}
}

func TestUserPasswordsAndURLs(t *testing.T) {
	if bus.UserPassword("t1", "objdb") == bus.UserPassword("t2", "objdb") || bus.UserPassword("t1", "objdb") == bus.UserPassword("t1", "loader") {
		t.Error("passwords do not depend on both the token and the user")
	}
	for in, want := range map[string]string{
		"nats://tok@127.0.0.1:5400":   "nats://objdb:" + bus.UserPassword("tok", "objdb") + "@127.0.0.1:5400",
		"nats://u:p@127.0.0.1:5400":   "nats://u:p@127.0.0.1:5400",
		"nats://127.0.0.1:5400":       "nats://127.0.0.1:5400",
		"nats://tok@node1:5400,node2": "",
	} {
		got, err := bus.AsUser(in, "objdb")
		if want == "" {
			continue // a list of servers: whatever url.Parse makes of it
		}
		if err != nil || got != want {
			t.Errorf("AsUser(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	u := bus.NewUsers()
	for _, bad := range []string{"", "admin", "component.x", "a b", "a>"} {
		if err := u.Add(bad, bus.SubscriberRole); err == nil {
			t.Errorf("user %q accepted", bad)
		}
	}
	if err := u.Add("x", nil); err == nil {
		t.Error("a user without a grant accepted")
	}
	if err := u.Add("x", bus.SubscriberRole); err != nil {
		t.Fatal(err)
	}
	if err := u.Add("x", bus.SubscriberRole); err == nil {
		t.Error("a user declared twice")
	}
	if _, ok := u.Lookup("component.mysvc"); !ok {
		t.Error("no template for component executables")
	}
	for _, bad := range []string{"component.", "component.a.b", "nobody"} {
		if _, ok := u.Lookup(bad); ok {
			t.Errorf("user %q found", bad)
		}
	}
}

// TestClientsAuthenticate: every client of a bus authenticates, in-process
// ones included: the token (administrator), or a declared user with its
// derived password. Refusals are counted and logged.
func TestClientsAuthenticate(t *testing.T) {
	var logs testlog.Buffer
	c := bustest.StartClusterWith(t, 1, bustest.Options{Logger: debugLogger(&logs)})
	srv := c.Nodes[0].Server
	url := srv.ClientURL()
	tcpURL := func(u string) string { return strings.Replace(url, "nats://", "nats://"+u+"@", 1) }
	for name, u := range map[string]string{
		"no credentials": url,
		"wrong token":    tcpURL("nottoken"),
		"unknown user":   tcpURL("mallory:" + bus.UserPassword("x", "mallory")),
		"wrong password": tcpURL("subscriber:guess"),
	} {
		_, err := bus.Dial(u, "test", 0)
		if !errors.Is(err, bus.ErrCredentials) {
			t.Errorf("%s: %v, want ErrCredentials", name, err)
		}
	}
	if n := srv.Refused(); n != 4 {
		t.Errorf("%d refusals counted, want 4", n)
	}
	for _, want := range []string{`reason="no credentials"`, `reason="wrong token"`, `reason="unknown user" user=mallory`, `reason="wrong password" user=subscriber`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %s:\n%s", want, logs.String())
		}
	}
	for _, u := range []string{srv.AdminURL(), srv.UserURL(bus.UserSubscriber), srv.UserURL(bus.ComponentUser("mysvc"))} {
		nc, err := bus.Dial(u, "test", 0)
		if err != nil {
			t.Errorf("%s: %v", u, err)
			continue
		}
		nc.Close()
	}
	if _, err := srv.ConnectAs("mallory", "test", nats.Timeout(time.Second)); err == nil {
		t.Error("an undeclared user connected in-process")
	}
}

// TestSubscriberOnlyReads: the subscriber sees the cluster's traffic and
// can neither publish nor answer a request it overhears.
func TestSubscriberOnlyReads(t *testing.T) {
	c := bustest.StartClusterWith(t, 1, bustest.Options{})
	errs := make(chan error, 16)
	sub := c.ConnAs(1, bus.UserSubscriber, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	admin := c.Conn(1)
	seen := make(chan *nats.Msg, 16)
	if _, err := sub.Subscribe("corobus.test.>", func(m *nats.Msg) { seen <- m }); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Request("corobus.test.question", []byte("?"), 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("a request the subscriber overheard: %v, want a timeout (nobody may answer)", err)
	}
	m := <-seen
	_ = m.Respond([]byte("forged answer"))
	_ = sub.Publish("corobus.test.objdb.1.api.set", []byte("x"))
	_ = sub.Flush()
	deadline := time.After(10 * time.Second)
	for got := 0; got < 2; {
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("unexpected error %v", err)
			}
			got++
		case <-deadline:
			t.Fatalf("the subscriber's answer and publish were not refused")
		}
	}
	if v := c.Nodes[0].Server.Violations(); len(v) != 2 || v[0].User != bus.UserSubscriber {
		t.Errorf("violations %+v, want the subscriber's two", v)
	}
}
