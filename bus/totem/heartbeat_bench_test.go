package totem

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
)

// What taking in one peer's heartbeat costs (onHeartbeat) in a cluster of
// 32 nodes: repeated (byte for byte its previous one, as at rest: not
// decoded) and new (every other one differs: decoded); and what writing
// one costs (encode: sendHeartbeat's part before the publish).
func BenchmarkOnHeartbeat(b *testing.B) {
	subj, err := bus.NewSubjects("corobus.hbbench")
	if err != nil {
		b.Fatal(err)
	}
	nd, err := New(nil, DefaultConfig(1, subj), Callbacks{})
	if err != nil {
		b.Fatal(err)
	}
	all := make([]uint32, 32)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	beat := func(delivered uint64) *nats.Msg {
		hb := Heartbeat{Node: 2, Proto: ProtocolVersion, Inc: 7, Ring: RingID{Rep: 1, Seq: 5}, State: stOperational,
			Delivered: delivered, Ordered: delivered, MaxSeq: 5, Members: all, Hears: all, Addr: "10.0.0.2", Token: 1000}
		data, err := appendHeartbeat(nil, &hb)
		if err != nil {
			b.Fatal(err)
		}
		return &nats.Msg{Data: data}
	}
	b.Run("repeated", func(b *testing.B) {
		m := beat(1)
		nd.onHeartbeat(m)
		b.ReportAllocs()
		for b.Loop() {
			nd.onHeartbeat(m)
		}
	})
	b.Run("encode", func(b *testing.B) {
		hb := Heartbeat{Node: 2, Proto: ProtocolVersion, Inc: 7, Ring: RingID{Rep: 1, Seq: 5}, State: stOperational,
			Delivered: 9, Ordered: 9, MaxSeq: 5, Members: all, Hears: all, Addr: "10.0.0.2", Token: 1000}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := appendHeartbeat(nil, &hb); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		ms := []*nats.Msg{beat(2), beat(3)}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			nd.onHeartbeat(ms[i&1])
			i++
		}
	})
}
