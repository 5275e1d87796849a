package harness

import (
	"testing"
	"time"
)

// views is how many regular configurations node id has installed.
func views(c *Cluster, id int) uint64 {
	nd := c.Node(id)
	if nd == nil {
		return 0
	}
	return nd.Totem.Status().Views
}

// TestColdStartSettlesInOneOrTwoViews: nodes started one after another,
// each well within totem.consensus of the first, form their first ring
// together — not a singleton each and a merge per node that comes.
func TestColdStartSettlesInOneOrTwoViews(t *testing.T) {
	// A consensus far longer than the nodes take to start, even on a
	// loaded machine: the premise is "started together", not a race.
	c := New(t, Options{N: 3, Token: time.Second, Join: testJoin, Consensus: 10 * time.Second, Logger: testLogger(t)})
	c.WaitView(all(3), 10*time.Second)
	for run := range 3 {
		for id := 1; id <= 3; id++ {
			c.Kill(id)
		}
		// Started a few join periods apart: enough for a singleton to
		// form, were a node not waiting for the nodelist.
		for id := 1; id <= 3; id++ {
			c.Start(id)
			time.Sleep(3 * testJoin)
		}
		c.WaitView(all(3), 10*time.Second)
		for id := 1; id <= 3; id++ {
			if v := views(c, id); v > 2 {
				t.Errorf("run %d: node %d went through %d views to reach the first full one", run, id, v)
			}
		}
	}
}

// TestOneLinkDownDoesNotChurn: with the route between 1 and 3 down (2
// still reaches both), the nodes settle in views of nodes that all hear
// each other instead of installing the same members again and again; the
// link back, all three merge.
func TestOneLinkDownDoesNotChurn(t *testing.T) {
	// corosync's default token: a loaded machine must not pass for a
	// failure while the views are counted.
	token := time.Second
	c := New(t, Options{N: 3, Token: token, Join: testJoin, Consensus: token * 12 / 10, Logger: testLogger(t)})
	c.WaitView(all(3), 10*time.Second)
	c.Block(1, 3)
	r12 := c.WaitView([]int{1, 2}, 10*time.Second)
	before := []uint64{views(c, 1), views(c, 2)}
	// Eight failure-detector periods: a churning node reinstalls its
	// view several times a second.
	time.Sleep(8 * token)
	after := []uint64{views(c, 1), views(c, 2)}
	if after[0] != before[0] || after[1] != before[1] {
		t.Errorf("views of nodes 1 and 2 went from %v to %v with one link down", before, after)
	}
	if r, err := c.ViewOf([]int{1, 2}); err != nil || r != r12 {
		t.Errorf("{1,2} left ring %s: %v %v", r12, r, err)
	}
	c.Heal()
	c.WaitView(all(3), 10*time.Second)
	l := startLoad(c, 2*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	l.Stop()
	if err := quiesce(c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := Check(c.Rec.Streams(), true); err != nil {
		t.Fatalf("checker: %v\n%s", err, Dump(c.Rec.Streams(), 10))
	}
	t.Logf("views: node 1 %d, node 2 %d, node 3 %d", views(c, 1), views(c, 2), views(c, 3))
}
