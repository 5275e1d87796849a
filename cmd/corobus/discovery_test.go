package main

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/layer"
)

// TestServiceProcessesAnswerDiscovery: docs/subjects.md promises that
// every layer process answers $SRV.PING, INFO and STATS as
// corobus-<layer>, and `corobus --help` counts `service <name>` among the
// layer processes. Each built-in service runs here as its own bus user,
// with the node's real grants, on a bus with nothing else: what it
// serves later waits for the layers it needs, its discovery record must
// not.
func TestServiceProcessesAnswerDiscovery(t *testing.T) {
	b := startTestBus(t)
	a, cl := b.a, b.cl
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, l := range a.builtinServices() {
		env := b.env(t, l.Name)
		env.Log = env.Log.With("layer", l.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Run(ctx, env); err != nil && ctx.Err() == nil {
				t.Errorf("service %s: %v", l.Name, err)
			}
		}()
	}

	admin := cl.Conn(1)
	for _, subject := range []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS"} {
		waitAnswered(t, admin, subject, a.builtinServices())
	}
	// And by name, as `nats micro ping corobus-cfg` asks.
	for _, l := range a.builtinServices() {
		waitAnswered(t, admin, "$SRV.PING."+layer.ServiceName(l.Name), []layer.Layer{l})
	}
}

// waitAnswered asks subject until every layer of want answered it, and
// fails the test, naming those that did not, after 20 s.
func waitAnswered(t *testing.T, nc *nats.Conn, subject string, want []layer.Layer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := answered(t, nc, subject, want)
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no answer from %v", subject, missing)
		}
	}
}

// discoveryWait is how long answered collects answers: a scatter-gather
// has no count to wait for.
const discoveryWait = 300 * time.Millisecond

// answered asks subject and returns the layers of want that did not answer
// it as corobus-<layer> of node 1 of cluster test.
func answered(t *testing.T, nc *nats.Conn, subject string, want []layer.Layer) []string {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		m, err := sub.NextMsg(discoveryWait)
		if err != nil {
			break
		}
		var id micro.Info // PING, INFO and STATS all carry the identity
		if json.Unmarshal(m.Data, &id) != nil {
			continue
		}
		md := id.Metadata
		if md[layer.MetaCluster] == "test" && md[layer.MetaNode] == "1" && id.Name == layer.ServiceName(md[layer.MetaLayer]) {
			seen[md[layer.MetaLayer]] = true
		}
	}
	var missing []string
	for _, l := range want {
		if !seen[l.Name] {
			missing = append(missing, l.Name)
		}
	}
	return missing
}
