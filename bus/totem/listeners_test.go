package totem

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// A service no client names any more leaves the node's listeners, whether
// its last client left (a leave request) or died (its server's disconnect
// event): its configuration changes stop going to a deliver subject nobody
// reads, and the node keeps no entry per service ever named.
func TestUnnamedServiceLeavesTheListeners(t *testing.T) {
	c := bustest.StartCluster(t, 1)
	subj, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(c.Conn(1), DefaultConfig(1, subj), Callbacks{})
	if err != nil {
		t.Fatal(err)
	}
	listen := func(r listenRequest) {
		b, _ := json.Marshal(r)
		n.onListen(&nats.Msg{Subject: "listen", Data: b})
	}
	named := func(service string) bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		_, l := n.listeners[service]
		_, o := n.listenOrigins[service]
		if l != o {
			t.Fatalf("%s: in the listeners %v, in their origins %v", service, l, o)
		}
		return l
	}
	listen(listenRequest{Service: "alpha", Origin: 7, Server: "S1", CID: 11})
	listen(listenRequest{Service: "alpha", Origin: 8, Server: "S1", CID: 12})
	listen(listenRequest{Service: "beta", Origin: 9, Server: "S1", CID: 13})
	if !named("alpha") || !named("beta") {
		t.Fatal("the services named are not listeners")
	}
	listen(listenRequest{Service: "alpha", Origin: 7, Leave: true})
	if !named("alpha") {
		t.Fatal("alpha left the listeners while a client still names it")
	}
	listen(listenRequest{Service: "alpha", Origin: 8, Leave: true})
	if named("alpha") {
		t.Error("alpha stayed a listener after its last client left")
	}
	// beta's only client dies: its connection's disconnect event.
	ev, _ := json.Marshal(map[string]any{"server": map[string]any{"id": "S1"}, "client": map[string]any{"id": 13}})
	n.onDisconnect(&nats.Msg{Subject: bus.DisconnectEvents, Data: ev})
	if named("beta") {
		t.Error("beta stayed a listener after its last client's connection closed")
	}
	// A later client names it again.
	listen(listenRequest{Service: "beta", Origin: 10, Server: "S1", CID: 14})
	if !named("beta") {
		t.Error("beta named again is not a listener")
	}
}
