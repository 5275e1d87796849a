package loader_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/loader"
)

// TestLoaderHearsItsNamespaces: a loader follows the announcements of the
// namespaces on its search path — its node's own and a shared one, served
// from any node — and not another node's own components' (whose
// announcements then never cross a route to it); it still takes the
// legacy subject, of any namespace, and refuses an announcement on a
// subject that is not its own.
func TestLoaderHearsItsNamespaces(t *testing.T) {
	_, nc, subjects := loaderNode(t, "node1", "cluster")
	anns := decoded[loader.Announcement](t, nc, subjects.LcrAnnounceAll())
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var served []chan error
	serve := func(c loader.Component, node uint32) {
		c.Version, c.Interval = 1, time.Hour
		c.Handler = func(_ context.Context, _ string, m *nats.Msg) ([]byte, error) { return m.Data, nil }
		done := make(chan error, 1)
		served = append(served, done)
		go func() { done <- c.Serve(ctx, nc, subjects, node) }()
	}
	defer func() {
		cancel()
		for _, done := range served {
			<-done
		}
	}()
	serve(loader.Component{Name: "mine"}, 1)
	serve(loader.Component{Name: "shared", Namespace: "cluster"}, 2)
	serve(loader.Component{Name: "theirs"}, 2)

	// Hand-written announcements, as a component in another language
	// would publish them.
	publish := func(subject string, a loader.Announcement) {
		t.Helper()
		a.Version, a.Instance, a.State, a.IntervalMS = 1, a.Name+"-"+a.Namespace, loader.Serving, time.Hour.Milliseconds()
		a.Subject = subjects.Component(a.Namespace, a.Name, 1)
		data, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	for seen := map[string]bool{}; len(seen) < 3; {
		select {
		case a := <-anns:
			seen[a.Name] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("the components did not all announce themselves: %v", seen)
		}
	}
	// After the components' announcements, on the connection they went
	// out on: the loader reads these after them on each subscription (and
	// would after node 2's, had it subscribed to them).
	publish(subjects.LcrAnnounce("node1", "cmap"), loader.Announcement{Name: "forged", Namespace: "node1"})
	publish(subjects.LcrAnnounce("cluster", "forged2"), loader.Announcement{Name: "forged2", Namespace: "node1"})
	publish(subjects.LcrAnnounceLegacy("old"), loader.Announcement{Name: "old", Namespace: "node3"})
	publish(subjects.LcrAnnounceLegacy("oldlocal"), loader.Announcement{Name: "oldlocal", Namespace: "node1"})
	// Last on each of the loader's subscriptions, so that once it lists
	// them it has read what came before them.
	publish(subjects.LcrAnnounce("node1", "last"), loader.Announcement{Name: "last", Namespace: "node1"})
	publish(subjects.LcrAnnounce("cluster", "last"), loader.Announcement{Name: "last", Namespace: "cluster"})

	want := []string{"last/cluster", "last/node1", "mine/node1", "old/node3", "oldlocal/node1", "shared/cluster"}
	var got []string
	waitFor(t, "the loader to list "+strings.Join(want, " "), 30*time.Second, func() bool {
		got = got[:0]
		last := 0
		for _, ci := range list(t, nc, subjects).Components {
			got = append(got, ci.Name+"/"+ci.Namespace)
			if ci.Name == "last" || ci.Name == "oldlocal" {
				last++
			}
		}
		slices.Sort(got)
		return last == 3
	})
	if !slices.Equal(got, want) {
		t.Fatalf("the loader lists %v, want %v", got, want)
	}
	// A component on the search path through the legacy subject resolves.
	c := newClient(t, nc, subjects)
	if _, err := c.Reference(context.Background(), "oldlocal", 1); err != nil {
		t.Fatalf("a legacy announcement of node1 does not resolve: %v", err)
	}
	if _, err := c.Reference(context.Background(), "theirs", 1); err == nil {
		t.Fatal("node 2's own component resolves on node 1")
	}
}
