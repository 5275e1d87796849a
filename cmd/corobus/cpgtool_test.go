package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/totem/harness"
	"github.com/corobus/corobus/services/cpg"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// corosync-cpgtool opens its cfg handle (for the members' addresses) right
// after its cpg handle, before printing anything, -n included, and exits 1
// with "Could not initialize corosync configuration API" when it cannot.
// Until 3 Dec corobus cpg carried on and listed the members without their
// addresses, status 0.
func TestCpgWithoutTheCfgServiceFails(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	// Node 1 of cluster "test" (runVerb's): totem, its sync engine and a
	// cpg service; no cfg service.
	h := harness.New(t, harness.Options{N: 1, Name: "test", Token: time.Second})
	h.WaitView([]int{1}, 15*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	engine := syncsvc.New(h.Client(1), syncsvc.Options{Node: 1, Subjects: h.Subjects})
	svc := cpg.New(cpg.Options{Node: 1, Subjects: h.Subjects})
	nc := h.Client(1)
	wg.Add(2)
	go func() { defer wg.Done(); _ = engine.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := cpg.ServeWith(ctx, nc, h.Subjects, 1, svc, nil); err != nil && ctx.Err() == nil {
			t.Errorf("cpg service: %v", err)
		}
	}()
	url := h.Node(1).Server.ClientURL()
	// Once cpg has synchronized, the tool gets past cpg_initialize.
	waitUntil(t, "the cpg service to take connections", func() bool {
		_, _, stderr := runVerb(url, "cpg", "-n")
		return !strings.Contains(stderr, "Could not initialize corosync cpg API")
	})
	for _, args := range [][]string{nil, {"-n"}, {"-d", ","}} {
		code, stdout, stderr := runVerb(url, "cpg", args...)
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "Could not initialize corosync configuration API: ") {
			t.Errorf("cpg %q without a cfg service: status %d, stdout %q, stderr %q; want 1, nothing, corosync-cpgtool's message",
				args, code, stdout, stderr)
		}
	}
}
