package quorum

import (
	"sync"
	"testing"

	"github.com/corobus/corobus/tests/netcluster"
)

// A scenario run on real corosync nodes is either a reference that a
// corobus test compares its own run with (the tools' transcripts, the
// clients' callbacks, runtime.members) or the same assertions run on both
// engines (totem.config_version). Its corosync half runs in
// TestOnCorosync, in go test's serial phase; its corobus half is a
// parallel test of its own, among the package's other corobus scenarios.
//
// Before, each such test ran both halves one after the other in the
// serial phase, and every other test waited for them: the serial phase
// was most of the package's time, most of it corobus clusters waiting.
// corosync still never runs beside the corobus scenarios (SCHED_RR 99 would
// starve their deadlines: see the package comment), but its scenarios run
// beside each other: each in its own namespaces, mostly waiting too.

// corosyncScenario is the corosync half of a scenario. ref is what the
// corobus half compares with (nil for scenarios that compare nothing).
type corosyncScenario struct {
	name string
	run  func(t *testing.T) (ref any)
}

// corosyncScenarios are TestOnCorosync's subtests, named after the corobus
// tests that are their other half.
func corosyncScenarios() []corosyncScenario {
	return []corosyncScenario{
		{"RuntimeMembersMatchCorosync", func(t *testing.T) any { return corosyncRuntimeMembers(t) }},
		{"ConfigVersionOlderNodeStops", func(t *testing.T) any {
			configVersionOlderNodeStops(t, netcluster.Corosync)
			return nil
		}},
		{"ConfigVersionLoneOlderNodeStops", func(t *testing.T) any {
			configVersionLoneOlderNodeStops(t, netcluster.Corosync)
			return nil
		}},
		{"ConfigVersionColdStart", func(t *testing.T) any {
			configVersionColdStart(t, netcluster.Corosync)
			return nil
		}},
		{"LastManStandingRejoinMatchesCorosync", func(t *testing.T) any { return corosyncRejoin(t) }},
		{"ToolsMatchCorosyncThreeNodes", func(t *testing.T) any {
			return toolsTranscript(t, netcluster.Corosync)
		}},
		{"VerbsMatchTheirTools", func(t *testing.T) any {
			return verbsTranscript(t, netcluster.Corosync, verbLines(t))
		}},
	}
}

// TestOnCorosync runs the corosync half of every scenario that has one,
// the scenarios at once. It is a serial test, so it ends before any
// parallel test of the package starts: the corobus halves then read what
// it saw (corosyncRef).
func TestOnCorosync(t *testing.T) {
	requireTools(t)
	netcluster.RequireBackend(t, netcluster.Corosync)
	for _, s := range corosyncScenarios() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel() // corosync beside corosync: each in namespaces of its own
			var out any
			// Deferred, so that a scenario that fails (t.Fatal) is
			// recorded as failed and its corobus half does not run it again.
			defer func() { corosyncRefs.put(s.name, out, !t.Failed()) }()
			out = s.run(t)
		})
	}
}

// corosyncRefs holds what TestOnCorosync's scenarios saw, for the corobus
// halves. It is package state because go test's serial phase is the one
// thing that runs before every parallel test and hands nothing to them.
var corosyncRefs = &refStore{m: map[string]refResult{}}

type refStore struct {
	mu sync.Mutex
	m  map[string]refResult
}

type refResult struct {
	out any
	ok  bool
}

func (r *refStore) put(name string, out any, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[name] = refResult{out: out, ok: ok}
}

// take returns and forgets a scenario's result (each of -count's rounds
// runs TestOnCorosync again).
func (r *refStore) take(name string) (refResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, found := r.m[name]
	delete(r.m, name)
	return res, found
}

// corosyncRef returns what the corosync half of scenario name saw: the run
// of TestOnCorosync in this test binary, or, when -run left that out, a run
// of the corobus test's own. A corobus test whose corosync half failed
// there is skipped: that failure is the package's.
func corosyncRef[T any](t *testing.T, name string) T {
	t.Helper()
	res, found := corosyncRefs.take(name)
	if !found {
		for _, s := range corosyncScenarios() {
			if s.name == name {
				res = refResult{out: s.run(t), ok: true}
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no corosync scenario %q", name)
	}
	if !res.ok {
		t.Skipf("TestOnCorosync/%s failed: nothing to compare with", name)
	}
	ref, ok := res.out.(T)
	if !ok {
		t.Fatalf("corosync scenario %q saw a %T, not a %T", name, res.out, ref)
	}
	return ref
}
