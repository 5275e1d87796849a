package quorum

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// BenchmarkKillToQuorumNotification measures, on three nodes each in
// namespaces of its own, the time from SIGKILL of node 3 to the quorum
// notification (libquorum's, through our client) on each survivor, for a
// real corosync with its default totem.token (3000 ms), corosync with
// token 1000, and corobus (default token 1000): same machine, same run.
//
//	go test ./tests/quorum -run '^$' -bench KillToQuorumNotification -benchtime 3x
//
// ms/notify is the mean over kills and survivors; each kill is logged.
func BenchmarkKillToQuorumNotification(b *testing.B) {
	requireTools(b)
	path := buildClient(b)
	for _, v := range []struct {
		name    string
		backend netcluster.Backend
		token   string // "" keeps the engine's default
	}{
		{"corosync-default-token", netcluster.Corosync, ""},
		{"corosync-token-1000", netcluster.Corosync, "1000"},
		{"corobus", netcluster.Corobus, "1000"},
	} {
		b.Run(v.name, func(b *testing.B) {
			netcluster.RequireBackend(b, v.backend)
			keys := map[string]string{"totem.token": v.token} // empty removes the key
			c := netcluster.Start(b, netcluster.Options{Nodes: 3, Backend: v.backend, Keys: keys})
			n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
			waitQuorate(b, n1, n2, n3)
			clients := []*client{startClientB(b, n1, path), startClientB(b, n2, path)}
			var total time.Duration
			var count int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				killed := nowMS()
				if err := n3.Kill(); err != nil {
					b.Fatal(err)
				}
				var worst time.Duration
				for j, cl := range clients {
					at := cl.waitLineB(b, killed, "quorum quorate=1 ring=", "members=1,2\n", settle)
					d := time.Duration(at-killed) * time.Millisecond
					b.Logf("%s: kill %d: node %d told after %s", v.name, i+1, j+1, d)
					total += d
					count++
					worst = max(worst, d)
				}
				b.StopTimer()
				if err := n3.Start(); err != nil {
					b.Fatal(err)
				}
				c.WaitMembers(b, settle)
				waitQuorate(b, n1, n2, n3)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(max(count, 1)), "ms/notify")
		})
	}
}

// waitQuorate waits until corosync-quorumtool -s says quorate with three
// nodes in each node.
func waitQuorate(b testing.TB, nodes ...*netcluster.Node) {
	b.Helper()
	deadline := time.Now().Add(settle)
	for _, n := range nodes {
		for {
			st, err := status(context.Background(), n)
			if err == nil && st.quorate && st.nodes == 3 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("node %d not quorate with 3 nodes: %v\n%s", n.ID, err, st.text)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// startClientB is startClient for a benchmark.
func startClientB(b testing.TB, n *netcluster.Node, path string) *client {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{done: make(chan struct{})}
	c.cmd = n.Command(ctx, path)
	c.cmd.Env = append(c.cmd.Env, "QC_TIME=1")
	c.cmd.Stdout, c.cmd.Stderr = c, c
	if err := c.cmd.Start(); err != nil {
		cancel()
		b.Fatalf("starting the client in node %d: %v", n.ID, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	b.Cleanup(func() { cancel(); <-c.done })
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(c.text(), " ready ") {
		if time.Now().After(deadline) {
			b.Fatalf("the client in node %d did not register:\n%s", n.ID, c.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// waitLineB waits for a line after since that contains both parts and
// returns its time.
func (c *client) waitLineB(b testing.TB, since int64, part1, part2 string, timeout time.Duration) int64 {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range strings.SplitAfter(c.text(), "\n") {
			var ms int64
			if _, err := fmt.Sscan(l, &ms); err != nil || ms < since {
				continue
			}
			if strings.Contains(l, part1) && strings.Contains(l, part2) {
				return ms
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no %q…%q after %d:\n%s", part1, part2, since, c.text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
