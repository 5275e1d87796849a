package netcluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCorobusColdStartMajority: a fresh three-node cluster of which only
// two nodes are ever started serves cluster keys, as corosync starts and
// is quorate with two of three. Each started node's corosync clients set
// a cluster key and read the other's; the third node, started last, finds
// both. The times from start to the first answer and to the first cluster
// write are logged (measurements, not assertions).
func TestCorobusColdStartMajority(t *testing.T) {
	t.Parallel() // its cluster is its own: see TestMain
	c := Start(t, Options{Nodes: 3, NoStart: true})
	started := []*Node{c.Node(1), c.Node(2)}
	t0 := time.Now()
	for _, n := range started {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var timings []string
	for _, n := range started {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("runtime.members.%d.status", n.ID)
			waitIn(t, n, 2*time.Minute, "cmap answers "+key, "corosync-cmapctl", "-g", key)
			answered := time.Since(t0)
			set := fmt.Sprintf("test.coldstart.node%d", n.ID)
			waitIn(t, n, 2*time.Minute, "a cluster key set", "corosync-cmapctl", "-s", set, "str", "hi")
			mu.Lock()
			timings = append(timings, fmt.Sprintf("node %d: start → cmap answers %.1f s, → cluster key written %.1f s",
				n.ID, answered.Seconds(), time.Since(t0).Seconds()))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("TIMINGS (two of three started): %s", strings.Join(timings, "; "))
	for _, n := range c.Nodes {
		if n.ID == 3 {
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range started {
			key := fmt.Sprintf("test.coldstart.node%d", m.ID)
			waitIn(t, n, 2*time.Minute, "node "+fmt.Sprint(m.ID)+"'s cluster key", "corosync-cmapctl", "-g", key)
		}
	}
}

// waitIn runs a command in node n until it succeeds (its output is not
// judged: corosync-cmapctl exits non-zero on any error).
func waitIn(t *testing.T, n *Node, timeout time.Duration, what string, name string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := n.Run(ctx, name, args...)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("node %d: %s: not within %s: %v\n%s", n.ID, what, timeout, err, n.LogTail(60))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
