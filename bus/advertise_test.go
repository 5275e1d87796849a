package bus_test

import (
	"testing"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// A client of a node's bus is told of no other node's client URL: a
// node's layers (and corosync's clients through its gateway) stay on
// their own node's bus, as libcpg stays on its own corosync, and reconnect
// only there. nats-server advertises the cluster's client URLs to every
// client unless its routes are configured not to (bus.StartServer's
// Cluster.NoAdvertise).
func TestClientsAreToldOfNoOtherNode(t *testing.T) {
	c := bustest.StartCluster(t, 3)
	for id := 1; id <= 3; id++ {
		// Over TCP, as a layer dials its bus (bus.Dial), after every
		// route is up: the server's INFO then names every URL it would
		// advertise.
		nc, err := bus.Dial(c.AdminURL(id, ""), "advertise-test", 0)
		if err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
		if got := nc.DiscoveredServers(); len(got) != 0 {
			t.Errorf("a client of node %d was told of %v", id, got)
		}
		nc.Close()
	}
}
