package loader

import (
	"errors"
	"testing"
	"time"
)

func ann(id, ns string, version uint32, replaces ...uint32) Announcement {
	return Announcement{Name: "svc", Version: version, Namespace: ns, Instance: id, Replaces: replaces,
		Subject: "p.svc." + ns + ".svc." + string(rune('0'+version)), State: Serving, IntervalMS: 100}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name     string
		anns     []Announcement
		path     []string
		version  uint32
		wantNS   string
		wantVer  uint32
		wantInst int
		wantErr  error
	}{
		{
			name:    "first namespace of the search path wins",
			anns:    []Announcement{ann("a", "cluster", 1), ann("b", "node1", 1)},
			path:    []string{"node1", "cluster"},
			version: 1, wantNS: "node1", wantVer: 1, wantInst: 1,
		},
		{
			name:    "a later namespace when the first has none",
			anns:    []Announcement{ann("a", "cluster", 1), ann("b", "node2", 1)},
			path:    []string{"node1", "cluster"},
			version: 1, wantNS: "cluster", wantVer: 1, wantInst: 1,
		},
		{
			name:    "namespaces off the path are never searched",
			anns:    []Announcement{ann("a", "vendor.acme", 1)},
			path:    []string{"node1", "cluster"},
			version: 1, wantErr: ErrNotFound,
		},
		{
			name:    "exact version only",
			anns:    []Announcement{ann("a", "node1", 2), ann("b", "node1", 3)},
			path:    []string{"node1"},
			version: 1, wantErr: ErrNotFound,
		},
		{
			name:    "version selection among several",
			anns:    []Announcement{ann("a", "node1", 1), ann("b", "node1", 2)},
			path:    []string{"node1"},
			version: 2, wantNS: "node1", wantVer: 2, wantInst: 1,
		},
		{
			name:    "a replacement takes over the version it replaces",
			anns:    []Announcement{ann("a", "node1", 1), ann("b", "node1", 2, 1)},
			path:    []string{"node1"},
			version: 1, wantNS: "node1", wantVer: 2, wantInst: 1,
		},
		{
			name:    "the highest of several replacements",
			anns:    []Announcement{ann("a", "node1", 1), ann("b", "node1", 2, 1), ann("c", "node1", 3, 1, 2)},
			path:    []string{"node1"},
			version: 1, wantNS: "node1", wantVer: 3, wantInst: 1,
		},
		{
			name:    "a replacement elsewhere on the path does not shadow the first namespace",
			anns:    []Announcement{ann("a", "node1", 1), ann("b", "cluster", 2, 1)},
			path:    []string{"node1", "cluster"},
			version: 1, wantNS: "node1", wantVer: 1, wantInst: 1,
		},
		{
			name:    "instances of one version share it",
			anns:    []Announcement{ann("a", "node1", 1), ann("b", "node1", 1), ann("c", "node1", 1)},
			path:    []string{"node1"},
			version: 1, wantNS: "node1", wantVer: 1, wantInst: 3,
		},
		{
			name: "retiring instances are not resolved to",
			anns: []Announcement{
				func() Announcement { a := ann("a", "node1", 1); a.State = Retiring; return a }(),
				ann("b", "cluster", 1),
			},
			path:    []string{"node1", "cluster"},
			version: 1, wantNS: "cluster", wantVer: 1, wantInst: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry()
			now := time.Now()
			for _, a := range tc.anns {
				if _, err := r.Announce(a, now); err != nil {
					t.Fatal(err)
				}
			}
			got, err := r.Resolve("svc", tc.version, tc.path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Namespace != tc.wantNS || got.Version != tc.wantVer || got.Instances != tc.wantInst || got.Requested != tc.version {
				t.Fatalf("resolved to %+v, want namespace %s version %d with %d instances", got, tc.wantNS, tc.wantVer, tc.wantInst)
			}
		})
	}
}

func TestExpandSearchPath(t *testing.T) {
	tests := []struct {
		raw  string
		want []string
		bad  bool
	}{
		{raw: "", want: []string{"node3", "cluster"}},
		{raw: "local cluster", want: []string{"node3", "cluster"}},
		{raw: "vendor.acme, local", want: []string{"vendor.acme", "node3"}},
		{raw: "a..b", bad: true},
		{raw: "a.*", bad: true},
	}
	for _, tc := range tests {
		got, err := ExpandSearchPath(tc.raw, 3)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: expected an error, got %v", tc.raw, got)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: got %v, %v; want %v", tc.raw, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: got %v, want %v", tc.raw, got, tc.want)
			}
		}
	}
}

func TestLifecycle(t *testing.T) {
	r := NewRegistry()
	now := time.Now()
	path := []string{"node1"}
	if changed, _ := r.Announce(ann("a", "node1", 1), now); !changed {
		t.Fatal("a new instance is a change")
	}
	if changed, _ := r.Announce(ann("a", "node1", 1), now.Add(50*time.Millisecond)); changed {
		t.Fatal("a heartbeat is not a change")
	}
	if len(r.Superseded()) != 0 {
		t.Fatal("nothing replaces v1 yet")
	}
	if _, err := r.Announce(ann("b", "node1", 2, 1), now); err != nil {
		t.Fatal(err)
	}
	sup := r.Superseded()
	if len(sup) != 1 || sup[0].Instance != "a" || sup[0].By.Version != 2 {
		t.Fatalf("superseded = %+v, want instance a by version 2", sup)
	}
	r.Reference("h1", "svc", 1, now)
	r.Reference("h1", "svc", 1, now)
	r.Release("h1", "svc", 1, now)
	list := r.List(path)
	if len(list) != 2 || list[1].Version != 2 || list[1].Refs != 1 || list[0].Refs != 0 {
		t.Fatalf("list = %+v, want v1 with 0 refs and v2 with the 1 reference to version 1", list)
	}
	// b leaves; a stops announcing and expires.
	b := ann("b", "node1", 2, 1)
	b.State = Leaving
	if changed, _ := r.Announce(b, now); !changed {
		t.Fatal("leaving is a change")
	}
	if names := r.Expire(now.Add(expiryFactor*100*time.Millisecond + 100*time.Millisecond)); len(names) != 1 || names[0] != "svc" {
		t.Fatalf("expired %v, want [svc]", names)
	}
	if _, err := r.Resolve("svc", 1, path); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve after expiry: %v", err)
	}
	// Holders that stop restating their references expire too.
	r.Hold(HoldMsg{Holder: "h2", IntervalMS: 100, Refs: []HeldRef{{Name: "svc", Version: 1, Count: 2}}}, now)
	r.Expire(now.Add(time.Hour))
	if len(r.holders) != 0 {
		t.Fatalf("holders left after expiry: %v", r.holders)
	}
}
