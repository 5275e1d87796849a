package harness

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus/totem"
)

// Test timeouts: short, so that schedules are quick.
const (
	testToken     = 200 * time.Millisecond
	testJoin      = 30 * time.Millisecond
	testConsensus = 300 * time.Millisecond
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TOTEM_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newCluster(t testing.TB, n int) *Cluster {
	return New(t, Options{N: n, Token: testToken, Join: testJoin, Consensus: testConsensus, Logger: testLogger(t)})
}

// load multicasts tagged messages from every running node until stop.
type load struct {
	c    *Cluster
	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(c *Cluster, every time.Duration) *load {
	l := &load{c: c, stop: make(chan struct{})}
	for id := 1; id <= c.opts.N; id++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			k := 0
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-t.C:
				}
				nd := c.Node(id)
				if nd == nil {
					continue
				}
				k++
				tag := fmt.Sprintf("n%d.s%d.%d", id, nd.Stream, k)
				// Record before sending: the delivery may come first.
				c.Rec.Sent(nd.Stream, tag)
				if err := nd.Totem.Mcast("test", []byte(tag)); err != nil {
					c.Rec.Unsend(nd.Stream, tag)
				}
			}
		}()
	}
	return l
}

func (l *load) Stop() { close(l.stop); l.wg.Wait() }

// quiesce waits until every running node has delivered all it sent.
func quiesce(c *Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		busy := ""
		for _, id := range c.Up() {
			if nd := c.Node(id); nd != nil {
				if st := nd.Totem.Status(); st.Pending > 0 || st.State != "operational" || st.Delivered < st.Ordered {
					busy = fmt.Sprintf("node %d: %s pending %d delivered %d ordered %d", id, st.State, st.Pending, st.Delivered, st.Ordered)
				}
			}
		}
		if busy == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not quiescent after %s: %s", timeout, busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// events collects membership events from a plain NATS subscriber.
type events struct {
	mu  sync.Mutex
	got []string
}

func watch(t *testing.T, nc *nats.Conn, subject string) *events {
	ev := &events{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		ev.mu.Lock()
		ev.got = append(ev.got, m.Subject+" "+string(m.Data))
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ev
}

// waitEvent polls for an event on subject whose JSON has the given ring.
func (ev *events) wait(t *testing.T, subject string, ring totem.RingID, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ev.mu.Lock()
		for _, g := range ev.got {
			var s string
			var body map[string]any
			if _, err := fmt.Sscan(g, &s); err != nil || s != subject {
				continue
			}
			if err := json.Unmarshal([]byte(g[len(s)+1:]), &body); err != nil {
				continue
			}
			r, _ := body["ring"].(map[string]any)
			if r != nil && uint32(r["rep"].(float64)) == ring.Rep && uint64(r["seq"].(float64)) == ring.Seq {
				ev.mu.Unlock()
				return body
			}
		}
		ev.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no event on %s for ring %s within %s", subject, ring, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKillOneNode(t *testing.T) {
	c := newCluster(t, 3)
	ring := c.WaitView(all(3), 10*time.Second)
	obs := watch(t, c.Client(1), c.Subjects.TotemEvents())
	l := startLoad(c, 2*time.Millisecond)
	time.Sleep(50 * time.Millisecond) // some traffic in the first ring
	killed := time.Now()
	c.Kill(3)
	// The survivors must install {1,2} within token + join + a heartbeat
	// period and a proposal round; the bound here is generous for -race
	// on a loaded machine; the measured time is logged.
	ring2 := c.WaitView([]int{1, 2}, 10*time.Second)
	took := time.Since(killed)
	t.Logf("view {1,2} ring %s installed %s after the kill (token %s, join %s)", ring2, took, testToken, testJoin)
	if ring2.Seq <= ring.Seq {
		t.Fatalf("ring sequence did not grow: %s then %s", ring, ring2)
	}
	l.Stop()
	if err := quiesce(c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	body := obs.wait(t, c.Subjects.TotemEvent(1, "view"), ring2, 5*time.Second)
	t.Logf("plain subscriber saw %v", body)
	obs.wait(t, c.Subjects.TotemEvent(1, "left"), ring2, 5*time.Second)
	checkRecorded(t, c)
}

func TestPartitionAndHeal(t *testing.T) {
	c := newCluster(t, 3)
	c.WaitView(all(3), 10*time.Second)
	obs := watch(t, c.Client(1), c.Subjects.TotemEvents())
	obs3 := watch(t, c.Client(3), c.Subjects.TotemEvents())
	l := startLoad(c, 2*time.Millisecond)
	c.Partition([]int{1, 2}, []int{3})
	r12 := c.WaitView([]int{1, 2}, 10*time.Second)
	r3 := c.WaitView([]int{3}, 10*time.Second)
	t.Logf("partition: {1,2} in ring %s, {3} in ring %s", r12, r3)
	obs.wait(t, c.Subjects.TotemEvent(1, "view"), r12, 5*time.Second)
	obs3.wait(t, c.Subjects.TotemEvent(3, "view"), r3, 5*time.Second)
	healed := time.Now()
	c.Heal()
	r := c.WaitView(all(3), 10*time.Second)
	t.Logf("healed: one ring %s after %s", r, time.Since(healed))
	obs.wait(t, c.Subjects.TotemEvent(1, "view"), r, 5*time.Second)
	obs.wait(t, c.Subjects.TotemEvent(1, "joined"), r, 5*time.Second)
	l.Stop()
	if err := quiesce(c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	checkRecorded(t, c)
}

// TestSequencerHandoff: a run of messages from one node moves the
// ordering there (every node's status names it), the ring keeps its
// guarantees while every node sends and the sequencer moves with each
// run, and the sequencer that took over being killed leaves the
// survivors agreeing on what they delivered.
func TestSequencerHandoff(t *testing.T) {
	c := New(t, Options{N: 3, Token: testToken, Join: testJoin, Consensus: testConsensus, HandoffRun: 8, Logger: testLogger(t)})
	c.WaitView(all(3), 10*time.Second)
	sent := 0
	send := func(id, k int) {
		nd := c.Node(id)
		for range k {
			sent++
			tag := fmt.Sprintf("n%d.s%d.run%d", id, nd.Stream, sent)
			c.Rec.Sent(nd.Stream, tag)
			for nd.Totem.Mcast("test", []byte(tag)) != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}
	sequencer := func(want uint32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok := true
			var got []uint32
			for _, id := range c.Up() {
				st := c.Node(id).Totem.Status()
				got = append(got, st.Sequencer)
				ok = ok && st.Sequencer == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("sequencer by node %v, want %d everywhere", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sequencer(1)
	send(3, 50)
	sequencer(3)
	send(2, 50)
	sequencer(2)
	l := startLoad(c, 2*time.Millisecond)
	send(3, 200)
	l.Stop()
	send(3, 50)
	sequencer(3)
	// Nodes 1 and 2 send (startLoad again would repeat its tags) while
	// the sequencer that took over is killed.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			send(1, 1)
			send(2, 1)
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	c.Kill(3)
	c.WaitView([]int{1, 2}, 10*time.Second)
	close(stop)
	<-done
	if err := quiesce(c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	checkRecorded(t, c)
}

// checkRecorded runs the checker over everything the cluster's recorder
// holds, and says how much it checked.
func checkRecorded(t *testing.T, c *Cluster) {
	t.Helper()
	if err := Check(c.Rec.Streams(), true); err != nil {
		t.Fatalf("checker: %v\n%s", err, Dump(c.Rec.Streams(), 10))
	}
	msgs, confs := c.Rec.Counts()
	t.Logf("checked %d deliveries and %d configuration changes", msgs, confs)
}
