package totem_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// TestConfigVersionFirstViewOnly: totem.config_version as corosync
// compares it. A node whose version is older than a member's, in its first
// view with others, is reported (`…event.<node>.older_config`); a node
// that has been in a view with others never is, whoever joins later; an
// unset version (0) never is, and raises nobody's highest. A version
// changed while running (SetConfigVersion, a reload) reaches every
// member's runtime.members (`…event.<node>.config_version`) and stops
// nobody.
func TestConfigVersionFirstViewOnly(t *testing.T) {
	c := harness.New(t, harness.Options{N: 3, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond,
		ConfigVersions: map[int]uint64{1: 2, 2: 2, 3: 2}})
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	obs := c.Client(1)
	var mu sync.Mutex
	var older []string
	versions := map[string]uint64{} // "<reporting node>/<member>": version
	sub, err := obs.Subscribe(strings.TrimSuffix(c.Subjects.TotemEvent(0, "x"), ".0.x")+".*.*", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(m.Subject, ".older_config"):
			var o struct {
				Node uint32 `json:"node"`
				totem.OlderConfig
			}
			_ = json.Unmarshal(m.Data, &o)
			older = append(older, jsonOf(o))
		case strings.HasSuffix(m.Subject, ".config_version"):
			var ev totem.MemberEvent
			_ = json.Unmarshal(m.Data, &ev)
			f := strings.Split(m.Subject, ".")
			versions[f[len(f)-2]+"/"+jsonOf(ev.Node)] = ev.ConfigVersion
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}
	// settled waits for every node's status over the bus: the events a
	// node published before it answered have reached the observer (one
	// publisher's messages keep their order to one subscriber).
	settled := func() {
		t.Helper()
		for _, id := range c.Up() {
			if _, err := obs.Request(c.Subjects.TotemStatus(uint32(id)), nil, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	report := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), older...)
	}

	// Node 3 restarted with version 1 among 2s: out of date.
	c.Kill(3)
	c.WaitView([]int{1, 2}, 10*time.Second)
	c.SetConfigVersion(3, 1)
	c.Start(3)
	ring := c.WaitView([]int{1, 2, 3}, 10*time.Second)
	settled()
	want := `{"node":3,"mine":1,"highest":2,"from":1,"ring":` + jsonOf(ring) + `}`
	if got := report(); len(got) != 1 || got[0] != want {
		t.Fatalf("older_config reports %v, want [%s]", got, want)
	}

	// Node 3 again with version 9: newer than 1 and 2, which have met
	// others before: nobody is reported.
	c.Kill(3)
	c.WaitView([]int{1, 2}, 10*time.Second)
	c.SetConfigVersion(3, 9)
	c.Start(3)
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	settled()
	if got := report(); len(got) != 1 {
		t.Fatalf("older_config reports %v after a newer node joined nodes that had met others: want only node 3's first", got)
	}

	// Unset: node 3 with 0 is never out of date.
	c.Kill(3)
	c.WaitView([]int{1, 2}, 10*time.Second)
	c.SetConfigVersion(3, 0)
	c.Start(3)
	c.WaitView([]int{1, 2, 3}, 10*time.Second)
	settled()
	if got := report(); len(got) != 1 {
		t.Fatalf("older_config reports %v after an unset node joined: want only node 3's first", got)
	}

	// Node 1 runs version 5 from now on: every member records it, nobody
	// is reported.
	five := uint64(5)
	req, _ := json.Marshal(totem.TimingsRequest{Token: 300, Join: 30, Consensus: 400, ConfigVersion: &five})
	if _, err := obs.Request(c.Subjects.TotemTimings(1), req, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		done := versions["1/1"] == 5 && versions["2/1"] == 5 && versions["3/1"] == 5
		snapshot := jsonOf(versions)
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1's new config_version 5 not reported by every member: %s", snapshot)
		}
		time.Sleep(20 * time.Millisecond)
	}
	settled()
	if got := report(); len(got) != 1 {
		t.Fatalf("older_config reports %v after node 1's new version: want only node 3's first", got)
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
