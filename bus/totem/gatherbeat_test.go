package totem

import (
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
)

// A gathering node beats every totem.join while a node of the nodelist is
// unheard, every Heartbeat once it hears them all, and an operational
// node every Heartbeat whatever it hears (docs/totem.md, Membership).
func TestGatherBeatsEveryJoinWhileTheNodelistIsUnheard(t *testing.T) {
	subj, err := bus.NewSubjects("corobus.gatherbeat")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(1, subj)
	cfg.Expected = []uint32{1, 2, 3}
	n, err := New(nil, cfg, Callbacks{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	tm := n.tm()
	for _, c := range []struct {
		state string
		alive []uint32
		want  time.Duration
	}{
		{stGather, []uint32{1}, tm.Join},
		{stGather, []uint32{1, 3}, tm.Join},
		{stGather, []uint32{1, 2, 3}, tm.Heartbeat},
		{stRecovery, []uint32{1, 3}, tm.Heartbeat},
		{stOperational, []uint32{1, 3}, tm.Heartbeat},
	} {
		n.state, n.aliveSet, n.members, n.lastHB = c.state, c.alive, []uint32{1, 2}, t0
		if got := n.hbDue().Sub(t0); got != c.want {
			t.Errorf("%s hearing %v: next heartbeat after %s, want %s", c.state, c.alive, got, c.want)
		}
	}
	if tm.Join >= tm.Heartbeat {
		t.Fatalf("defaults changed: join %s not shorter than the heartbeat %s, the test shows nothing", tm.Join, tm.Heartbeat)
	}
}
