package totem_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// A node's totem.token, join and consensus change while it runs (what
// corosync does when cmap or a reload changes them), through the bus's
// timings subject. A node whose token was raised beats more slowly; its
// peers, still on the short token, must wait for it rather than take it
// for gone: the ring stays as it was over several of its slow periods.
// A combination New would refuse is refused and changes nothing.
func TestTimingsChangeWhileRunning(t *testing.T) {
	const short = 300 * time.Millisecond
	c := harness.New(t, harness.Options{N: 3, Token: short, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	ring := c.WaitView([]int{1, 2, 3}, 10*time.Second)
	set := func(token, join, consensus uint64) totem.TimingsReply {
		t.Helper()
		req, _ := json.Marshal(totem.TimingsRequest{Token: token, Join: join, Consensus: consensus})
		msg, err := c.Client(2).Request(c.Subjects.TotemTimings(2), req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep totem.TimingsReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}

	if rep := set(3000, 30, 3600); !rep.OK {
		t.Fatalf("raising node 2's token: %+v", rep)
	}
	want := totem.Timings{Token: 3 * time.Second, Join: 30 * time.Millisecond, Consensus: 3600 * time.Millisecond}
	if got := c.Node(2).Totem.Timings(); got != want {
		t.Fatalf("node 2 runs %+v, want %+v", got, want)
	}
	// Node 2 now beats once a second at rest (token/3), more than three
	// of its peers' tokens apart. Watched for 2.5 s: no view change.
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got, err := c.ViewOf([]int{1, 2, 3}); err != nil || got != ring {
			t.Fatalf("the ring changed after node 2's token was raised: %s, %v (was %s)", got, err, ring)
		}
	}

	rep := set(3000, 30, 1000)
	if rep.OK || rep.Error == "" {
		t.Fatalf("consensus below half the token was taken: %+v", rep)
	}
	if got := c.Node(2).Totem.Timings(); got != want {
		t.Errorf("a refused change moved node 2 to %+v", got)
	}

	if rep := set(300, 30, 400); !rep.OK {
		t.Fatalf("lowering node 2's token again: %+v", rep)
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got, err := c.ViewOf([]int{1, 2, 3}); err != nil || got != ring {
			t.Fatalf("the ring changed after node 2's token was lowered: %s, %v (was %s)", got, err, ring)
		}
	}
	// The failure detector still works on the short token.
	c.Kill(3)
	c.WaitView([]int{1, 2}, 10*time.Second)
}
