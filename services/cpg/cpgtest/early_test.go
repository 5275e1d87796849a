package cpgtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestEarlyClientWaitsForTheStartup starts a libcpg client (cpgearly)
// before its node, three starts in a row: the client connects the moment
// the node lets it, then leaves a group it never joined for three
// seconds, and every leave must be answered CS_ERR_NOT_EXIST. corosync
// takes no connection before its first synchronization is done, so its
// clients never see the start-up's synchronization; a corobus node's
// services register with the sync engine one after the other, each
// running the ring's round again, and a client that got in on the first
// of them was answered CS_ERR_TRY_AGAIN while the others registered
// (TestFeatures' cpg_leave, once, under load). The gateway now holds
// connections until the node's start-up is done (docs/architecture.md).
// On corosync it passes too (the reference: a client started before the
// engine).
func TestEarlyClientWaitsForTheStartup(t *testing.T) {
	prog := BuildC(t, "cpgearly")
	for _, c := range []struct {
		name string
		opts netcluster.Options
	}{
		{"corosync", netcluster.Options{Backend: netcluster.Corosync}},
		{"corobus", netcluster.Options{}},
		{"corobus, cpg in its own process", netcluster.Options{Keys: map[string]string{"ipc.colocate": "cmap"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			parallelUnlessCorosync(t, c.opts.Backend)
			c.opts.Nodes, c.opts.NoStart = 1, true
			cl := netcluster.Start(t, c.opts)
			n := cl.Node(1)
			for i := 1; i <= 3; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				cmd := n.Command(ctx, prog, "3")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					cancel()
					t.Fatal(err)
				}
				if err := n.Start(); err != nil {
					cancel()
					t.Fatal(err)
				}
				err := cmd.Wait()
				cancel()
				if err != nil || !strings.Contains(out.String(), "PASSED") {
					t.Fatalf("start %d: cpgearly: %v\n%s\n--- node log:\n%s", i, err, out.String(), n.LogTail(40))
				}
				t.Logf("start %d:\n%s", i, out.String())
				if err := n.Stop(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
