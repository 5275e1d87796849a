package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// errSink collects a connection's asynchronous errors.
type errSink struct {
	mu   sync.Mutex
	errs []error
}

func (e *errSink) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		e.mu.Lock()
		e.errs = append(e.errs, err)
		e.mu.Unlock()
	})
}

// refused reports whether the bus refused a publish to subject.
func (e *errSink) refused(subject string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.errs {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// TestEachLayerIsConfinedToItsGrant is least privilege on the bus, layer by
// layer, with the node's real registry of users: each user publishes one
// subject its grant allows (accepted) and one that would let it do harm
// outside its job (refused by the bus, naming the subject). The read-only
// totem.cluster_name — which issue 17's rogue set through a header — stays
// as it was whatever cmap and the gateway try.
func TestEachLayerIsConfinedToItsGrant(t *testing.T) {
	// A real objdb, as its own user, and the node's keeper (in the bus
	// process, as the administrator), so that writes are judged on data.
	n := startObjdbNode(t)
	cl, s, users, cfg, local, ctx, admin := n.cl, n.s, n.users, n.cfg, n.local, n.ctx, n.admin
	bucket := bus.ObjdbBucket("test")

	kv := func(key string) string { return "$KV." + bucket + ".c." + key }
	cases := map[string]struct{ allowed, refused string }{
		"objdb":  {allowed: s.ObjdbChanged("test.x"), refused: s.TotemMcast(1)},
		"loader": {allowed: s.LcrChanged(1, "cmap"), refused: s.ObjdbAPI(1, objdb.OpSet)},
		"svcmgr": {allowed: s.SvcmgrEvents(1), refused: s.Component("node1", "cmap", 0) + ".open"},
		"sync":   {allowed: s.SyncState(1), refused: s.ObjdbInternalAPI(1, objdb.OpSet)},
		"ipc":    {allowed: s.ObjdbAPI(1, objdb.OpGet), refused: s.ObjdbInternalAPI(1, objdb.OpSet)},
		"cmap":   {allowed: kv("test.x"), refused: kv("totem.cluster_name")},
		// The quorum service follows the provider's view; forging it is
		// the provider's alone.
		"quorum":     {allowed: s.QuorumStateGet(1), refused: s.QuorumState(1)},
		"votequorum": {allowed: s.QuorumState(1), refused: s.NodeShutdown(1)},
		"cfg":        {allowed: s.CfgEvent(1, "reload"), refused: s.Component("node1", "cmap", 0) + ".open"},
		"cpg":        {allowed: s.CPGRing(1), refused: s.QuorumState(1)},
		// Fixed users.
		bus.UserSubscriber:         {refused: s.ObjdbAPI(1, objdb.OpSet)},
		bus.ComponentUser("mysvc"): {allowed: s.LcrAnnounce("node1", "mysvc"), refused: s.LcrAnnounce("node1", "cmap")},
	}
	for _, u := range users.Names() {
		if _, ok := cases[u]; !ok {
			t.Errorf("bus user %s has no case here: add what it may publish and one harmful subject it may not", u)
		}
	}
	for user, tc := range cases {
		t.Run(user, func(t *testing.T) {
			var sink errSink
			nc := cl.ConnAs(1, user, sink.option())
			if tc.allowed != "" {
				if err := nc.Publish(tc.allowed, []byte("{}")); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Publish(tc.refused, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, user+"'s publish to "+tc.refused+" to be refused", func() bool { return sink.refused(tc.refused) })
			if tc.allowed != "" && sink.refused(tc.allowed) {
				t.Errorf("%s may not publish %s, which its grant allows", user, tc.allowed)
			}
		})
	}

	// What issue 17's rogue did to the read-only cluster name, tried by the
	// components that face clients: refused by objdb (public API), or by
	// the bus (the internal path, the bucket directly).
	for _, user := range []string{"cmap", "ipc"} {
		var sink errSink
		nc := cl.ConnAs(1, user, sink.option())
		c := client.New(nc, s, 1)
		short, stop := context.WithTimeout(ctx, 2*time.Second)
		err := c.Set(short, "totem.cluster_name", objdb.Value{Type: objdb.String, Data: []byte("evil\x00")})
		stop()
		switch user {
		case "ipc": // may call the API, which refuses the key
			if !errors.Is(err, objdb.ErrAccess) {
				t.Errorf("%s set totem.cluster_name through the API: %v, want CS_ERR_ACCESS", user, err)
			}
		case "cmap": // writes the bucket itself: the API is not its to call
			waitUntil(t, "cmap's API call to be refused", func() bool { return sink.refused(s.ObjdbAPI(1, objdb.OpSet)) })
		}
		c.Internal = true
		short, stop = context.WithTimeout(ctx, 2*time.Second)
		_ = c.Set(short, "totem.cluster_name", objdb.Value{Type: objdb.String, Data: []byte("evil\x00")})
		stop()
		waitUntil(t, user+"'s internal write to be refused", func() bool { return sink.refused(s.ObjdbInternalAPI(1, objdb.OpSet)) })
	}
	// cmap's own copy of the node's view: its write of the read-only
	// node key goes to the keeper, which refuses it; the copy drops it.
	st, err := objdb.OpenFor(ctx, layer.Env{Config: cfg, Node: local, Conn: cl.ConnAs(1, "cmap"), Subjects: s, Log: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Set(ctx, "totem.cluster_name", objdb.Value{Type: objdb.String, Data: []byte("evil\x00")}); err != nil {
		t.Logf("cmap's store set: %v", err)
	}
	waitUntil(t, "the keeper to refuse cmap's write of totem.cluster_name", func() bool {
		v, err := st.Get("totem.cluster_name")
		return err == nil && v.String() == "test"
	})
	if v, err := admin.Get(ctx, "totem.cluster_name"); err != nil || v.String() != "test" {
		t.Errorf("totem.cluster_name is %v (%v) after the attempts", v, err)
	}
	// The server saw every refusal, with the user and the subject.
	viol := cl.Nodes[0].Server.Violations()
	for user, tc := range cases {
		found := false
		for _, v := range viol {
			found = found || v.User == user && v.Subject == tc.refused
		}
		if !found {
			t.Errorf("the bus did not record %s's refused publish to %s: %+v", user, tc.refused, viol)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
