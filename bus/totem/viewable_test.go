package totem

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// viewableByPairs is the viewable set as docs/totem.md states it, asked
// pair by pair: this node, then each reachable node in id order that
// hears, and is heard by, every node already taken.
func viewableByPairs(n *Node, alive []uint32, hbs map[uint32]*Heartbeat) []uint32 {
	out := []uint32{n.cfg.NodeID}
	for _, id := range alive {
		if id == n.cfg.NodeID {
			continue
		}
		ok := true
		for _, m := range out {
			if !n.hears(id, m, alive, hbs) || !n.hears(m, id, alive, hbs) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// randomHearing is a reachable set of up to 40 nodes (this node always in
// it) and their heartbeats: each hears a random part of the nodelist (ids
// reachable or not), in order or not, and some say nothing (an older
// node: hears all).
func randomHearing(r *rand.Rand, self uint32) ([]uint32, map[uint32]*Heartbeat) {
	nodes := 1 + r.IntN(40)
	alive := []uint32{self}
	hbs := map[uint32]*Heartbeat{}
	for id := uint32(1); id <= uint32(nodes)+5; id++ {
		if id == self || r.IntN(4) == 0 {
			continue
		}
		alive = append(alive, id)
		hb := &Heartbeat{Node: id}
		if r.IntN(8) != 0 {
			hb.Hears = []uint32{}
			for h := uint32(1); h <= uint32(nodes)+8; h++ {
				if r.IntN(10) < 8 {
					hb.Hears = append(hb.Hears, h)
				}
			}
			if r.IntN(6) == 0 { // not sorted, as no node sends it
				r.Shuffle(len(hb.Hears), func(i, j int) { hb.Hears[i], hb.Hears[j] = hb.Hears[j], hb.Hears[i] })
			}
		}
		hbs[id] = hb
	}
	slices.Sort(alive)
	return alive, hbs
}

// viewable reads who hears whom once into a matrix; it must pick what
// the pair-by-pair reading picks, whatever the hearing, this node first
// in the reachable set or not, and with its buffers reused from a larger
// call before.
func TestViewableIsThePairwiseOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		self := uint32(1 + r.IntN(6))
		n := &Node{cfg: Config{NodeID: self}}
		alive, hbs := randomHearing(r, self)
		want := viewableByPairs(n, alive, hbs)
		for range 2 { // the second call on the first's buffers
			if got := n.viewable(alive, hbs); !slices.Equal(got, want) {
				t.Fatalf("case %d: node %d, reachable %v: viewable %v, pairwise %v", i, self, alive, got, want)
			}
		}
		// A smaller set on the same node's buffers.
		small, smallHbs := randomHearing(r, self)
		if got, want := n.viewable(small, smallHbs), viewableByPairs(n, small, smallHbs); !slices.Equal(got, want) {
			t.Fatalf("case %d (reused): node %d, reachable %v: viewable %v, pairwise %v", i, self, small, got, want)
		}
	}
}

// A reachable set without this node (alive's always has it) is read as
// if it had it, as the pairwise reading does.
func TestViewableWithoutThisNode(t *testing.T) {
	n := &Node{cfg: Config{NodeID: 3}}
	alive := []uint32{1, 2, 4}
	hbs := map[uint32]*Heartbeat{
		1: {Node: 1, Hears: []uint32{1, 2, 3}},
		2: {Node: 2, Hears: []uint32{1, 2, 3, 4}},
		4: {Node: 4, Hears: []uint32{2, 3, 4}},
	}
	want := viewableByPairs(n, alive, hbs)
	if got := n.viewable(alive, hbs); !slices.Equal(got, want) {
		t.Fatalf("viewable %v, pairwise %v", got, want)
	}
	if !slices.Equal(alive, []uint32{1, 2, 4}) {
		t.Fatalf("the caller's reachable set changed: %v", alive)
	}
}

// benchGathering is node 1 of a cluster of n nodes that all hear each
// other, as while a view of all of them is being agreed.
func benchGathering(n int) *Node {
	nd := &Node{cfg: Config{NodeID: 1}, peers: map[uint32]*peer{}}
	nd.timing.Store(&liveTimings{Timings: Timings{Token: time.Second}})
	all := make([]uint32, n)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	now := time.Now()
	for _, id := range all[1:] {
		nd.peers[id] = &peer{at: now, hb: Heartbeat{Node: id, Hears: all, Members: all}}
	}
	return nd
}

// What a tick of a gathering node spends on the reachable set and the
// viewable set (run at every heartbeat that brings news and every
// totem.join/2).
func BenchmarkAliveViewable(b *testing.B) {
	for _, n := range []int{3, 16, 32} {
		b.Run("nodes="+strconv.Itoa(n), func(b *testing.B) {
			nd := benchGathering(n)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				alive, hbs := nd.alive(now)
				if v := nd.viewable(alive, hbs); len(v) != n {
					b.Fatalf("viewable %v", v)
				}
			}
		})
	}
}
