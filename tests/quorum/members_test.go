package quorum

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestRuntimeMembersMatchCorosync: `corosync-cmapctl runtime.members.` on
// two nodes with totem.config_version 7 prints the same on corobus as on
// a real corosync, each node's config_version included (corosync's cmap
// sync records every member's; corobus listed ip, join_count and status
// only).
//
// The corosync half runs in TestOnCorosync (corosyncRuntimeMembers).
func TestRuntimeMembersMatchCorosync(t *testing.T) {
	t.Parallel() // owns its namespaces, processes and state: see the package comment
	requireTools(t)
	netcluster.RequireBackend(t, netcluster.Corosync)
	want := corosyncRef[string](t, "RuntimeMembersMatchCorosync")
	got := runtimeMembers(t, netcluster.Corobus, want)
	if got != want {
		t.Errorf("corosync-cmapctl runtime.members. differs\n--- corosync\n%s+++ corobus\n%s", want, got)
	}
}

// corosyncRuntimeMembers is what `corosync-cmapctl runtime.members.`
// prints on two corosync nodes, node 2's config_version in it.
func corosyncRuntimeMembers(t *testing.T) string {
	want := runtimeMembers(t, netcluster.Corosync, "")
	if !strings.Contains(want, "runtime.members.2.config_version (u64) = 7\n") {
		t.Fatalf("corosync's runtime.members lacks node 2's config_version 7:\n%s", want)
	}
	return want
}

// runtimeMembers starts two nodes of backend and returns what
// `corosync-cmapctl runtime.members.` prints on node 1 once both nodes
// are joined there, or once it prints want (corobus writes the keys
// through objdb, a moment after the view).
func runtimeMembers(t *testing.T, backend netcluster.Backend, want string) string {
	c := netcluster.Start(t, netcluster.Options{Nodes: 2, Backend: backend, Keys: map[string]string{"totem.config_version": "7"}})
	keepLogs(t, c)
	n1 := c.Node(1)
	deadline := time.Now().Add(settle)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := n1.Run(ctx, "corosync-cmapctl", "runtime.members.")
		cancel()
		done := err == nil && strings.Count(out, "(str) = joined") == 2
		if want != "" {
			done = err == nil && out == want
		}
		if done || time.Now().After(deadline) {
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		time.Sleep(300 * time.Millisecond)
	}
}
