package keys

import "testing"

// The index answers as Lookup does, for every pattern and for keys that
// match none.
func TestIndexAgreesWithLookup(t *testing.T) {
	x := NewIndex()
	probe := []string{"no.such.key", "totem", "", "totem.token.x", "nodelist.node.0.ring0_addr", "nodelist.node.12.ring3_addr",
		"nodelist.node.x.ring0_addr", "logging.logger_subsys.0.subsys", "uidgid.uid.1000", "quorum.device.net.host"}
	for _, k := range All() {
		probe = append(probe, k.Pattern)
	}
	for _, key := range probe {
		want, wok := Lookup(key)
		got, gok := x.Lookup(key)
		if wok != gok || want.Pattern != got.Pattern {
			t.Errorf("%q: index %q %v, Lookup %q %v", key, got.Pattern, gok, want.Pattern, wok)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	x := NewIndex()
	for _, key := range []string{"runtime.bench.k", "totem.token", "nodelist.node.2.ring0_addr"} {
		b.Run("table/"+key, func(b *testing.B) {
			for b.Loop() {
				Lookup(key)
			}
		})
		b.Run("index/"+key, func(b *testing.B) {
			for b.Loop() {
				x.Lookup(key)
			}
		})
	}
}
