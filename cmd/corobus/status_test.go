package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
)

// `corobus status --node 7`, node 7 not being in the cluster, said only
// "asking node 7's bus for its status: nats: no responders available for
// request" until 3 Dec: it now says which node does not answer and what
// to check, a node the nodelist lacks or one whose bus is down.
func TestStatusSaysWhichNodeDoesNotAnswer(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	cl := bustest.StartCluster(t, 1)
	s, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	// Node 1's bus answers its status, as the bus process does.
	svc, err := micro.AddService(cl.Conn(1), micro.Config{Name: "corobus-bus", Version: "0.0.0",
		Metadata: map[string]string{layer.MetaCluster: "test", layer.MetaNode: "1", layer.MetaLayer: "bus", layer.MetaPID: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	if err := bus.StatusEndpoint(svc, cl.Nodes[0].Server, s); err != nil {
		t.Fatal(err)
	}
	// The endpoint's subscription reaches the server before the verb
	// asks: without the flush the verb's request could come first and
	// find no responder (seen in 1 of 3 runs of the package under load).
	if err := cl.Conn(1).Flush(); err != nil {
		t.Fatal(err)
	}
	url := cl.AdminURL(1, "")
	if code, out, errOut := runVerb(url, "status"); code != 0 || !strings.HasPrefix(out, "Node 1 ") {
		t.Fatalf("status of node 1: status %d\n%s%s", code, out, errOut)
	}

	// Not in the nodelist (the embedded default's: node 1).
	code, _, errOut := runVerb(url, "status", "--node", "7")
	want := "corobus status: node 7 is not answering: it is not in the nodelist of the embedded default configuration (nodes 1); " +
		"give --node one of them, or -c the configuration of node 7's cluster ("
	if code == 0 || !strings.HasPrefix(errOut, want) {
		t.Errorf("status --node 7: status %d, stderr %q; want it to start %q", code, errOut, want)
	}
	// In the nodelist, its bus down.
	code, _, errOut = runVerb(url, "status", "--node", "2", "-o", "nodelist.node.1.nodeid=2", "-o", "nodelist.node.1.ring0_addr=192.0.2.2")
	want = "corobus status: node 2 is not answering: its bus is not running (is `corobus up` running on node 2?) "
	if code == 0 || !strings.HasPrefix(errOut, want) {
		t.Errorf("status --node 2 (in the nodelist, down): status %d, stderr %q; want it to start %q", code, errOut, want)
	}
}

// A layer that answers discovery late — a process the machine's load
// delays past the 300 ms the status used to wait — is still listed when
// the status knows it runs: the node's bus, which has just answered the
// status request, is waited for. Until 3 Dec a status taken 15 s after
// `corobus up` on a machine at load 10 listed 3 of the node's 9 layers
// (cfg, quorum, votequorum), without its bus, objdb, loader, svcmgr, sync
// and ipc. Here the bus's discovery answer comes after 600 ms.
func TestStatusWaitsForALateBus(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	cl := bustest.StartCluster(t, 1)
	s, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	// The status endpoint, on a service that is not a corobus layer.
	svc, err := micro.AddService(cl.Conn(1), micro.Config{Name: "statusonly", Version: "0.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	if err := bus.StatusEndpoint(svc, cl.Nodes[0].Server, s); err != nil {
		t.Fatal(err)
	}
	// The bus layer's discovery answer, late.
	info, err := json.Marshal(micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: "corobus-bus", ID: "late", Version: "0.0.0",
		Metadata: map[string]string{layer.MetaCluster: "test", layer.MetaNode: "1", layer.MetaLayer: "bus", layer.MetaPID: "4242"}}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cl.Conn(1).Subscribe("$SRV.INFO", func(m *nats.Msg) {
		go func() {
			time.Sleep(600 * time.Millisecond) // the load that delays the process
			_ = m.Respond(info)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := cl.Conn(1).Flush(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runVerb(cl.AdminURL(1, ""), "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	var st NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Layers) != 1 || st.Layers[0].Layer != "bus" || st.Layers[0].PID != 4242 {
		t.Errorf("layers %+v, want the bus (pid 4242), which answered discovery after 600 ms", st.Layers)
	}
}

// An objdb copy that answers late is waited for when the node runs an
// objdb layer, which always holds one: until 3 Dec the status took copies
// until none came for 300 ms, and on a loaded machine listed none. Here
// the objdb layer answers discovery at once and its copy after 600 ms.
func TestStatusWaitsForALateObjdbCopy(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	cl := bustest.StartCluster(t, 1)
	s, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		name, pid string
	}{{"bus", "1"}, {"objdb", "77"}} {
		svc, err := micro.AddService(cl.Conn(1), micro.Config{Name: "corobus-" + l.name, Version: "0.0.0",
			Metadata: map[string]string{layer.MetaCluster: "test", layer.MetaNode: "1", layer.MetaLayer: l.name, layer.MetaPID: l.pid}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = svc.Stop() }()
		if l.name == "bus" {
			if err := bus.StatusEndpoint(svc, cl.Nodes[0].Server, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	copyState, err := json.Marshal(objdb.CopyStatus{Name: "corobus-objdb", PID: 77, Node: 1, State: "current"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cl.Conn(1).Subscribe(s.ObjdbCopies(1), func(m *nats.Msg) {
		go func() {
			time.Sleep(600 * time.Millisecond) // the load that delays the process
			_ = m.Respond(copyState)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := cl.Conn(1).Flush(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runVerb(cl.AdminURL(1, ""), "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	var st NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Copies) != 1 || st.Copies[0].PID != 77 {
		t.Errorf("objdb copies %+v, want objdb's (pid 77), which answered after 600 ms", st.Copies)
	}
}
