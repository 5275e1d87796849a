package hdb_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/corobus/corobus/loader/hdb"
)

func TestSemantics(t *testing.T) {
	type step struct {
		op      string // create, get, put, destroy, refs
		handle  string // name of the handle the step uses or creates
		wantErr error
		refs    int // for refs
	}
	tests := []struct {
		name       string
		steps      []step
		destroyed  []string // objects whose destructor ran, in order
		forgeIndex bool
	}{
		{
			name:      "create then destroy runs the destructor",
			steps:     []step{{op: "create", handle: "a"}, {op: "destroy", handle: "a"}},
			destroyed: []string{"a"},
		},
		{
			name: "destroy waits for the last put",
			steps: []step{
				{op: "create", handle: "a"},
				{op: "get", handle: "a"},
				{op: "get", handle: "a"},
				{op: "refs", handle: "a", refs: 3},
				{op: "destroy", handle: "a"},
				{op: "refs", handle: "a", refs: 2},
				{op: "get", handle: "a", wantErr: hdb.ErrDestroyed},
				{op: "put", handle: "a"},
				{op: "put", handle: "a"},
				{op: "get", handle: "a", wantErr: hdb.ErrStale},
			},
			destroyed: []string{"a"},
		},
		{
			name: "a reused slot refuses the old handle",
			steps: []step{
				{op: "create", handle: "a"},
				{op: "destroy", handle: "a"},
				{op: "create", handle: "b"}, // same slot, next generation
				{op: "get", handle: "a", wantErr: hdb.ErrStale},
				{op: "put", handle: "a", wantErr: hdb.ErrStale},
				{op: "destroy", handle: "a", wantErr: hdb.ErrStale},
				{op: "get", handle: "b"},
				{op: "put", handle: "b"},
			},
			destroyed: []string{"a"},
		},
		{
			name: "double destroy is refused",
			steps: []step{
				{op: "create", handle: "a"},
				{op: "get", handle: "a"},
				{op: "destroy", handle: "a"},
				{op: "destroy", handle: "a", wantErr: hdb.ErrDestroyed},
				{op: "put", handle: "a"},
			},
			destroyed: []string{"a"},
		},
		{
			name: "forged handles are refused",
			steps: []step{
				{op: "create", handle: "a"},
				{op: "get", handle: "zero", wantErr: hdb.ErrBadHandle},
				{op: "get", handle: "beyond", wantErr: hdb.ErrBadHandle},
				{op: "get", handle: "future", wantErr: hdb.ErrBadHandle},
				{op: "put", handle: "future", wantErr: hdb.ErrBadHandle},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var destroyed []string
			db := hdb.New(func(_ hdb.Handle, name string) { destroyed = append(destroyed, name) })
			handles := map[string]hdb.Handle{}
			for i, s := range tc.steps {
				h := handles[s.handle]
				switch s.handle {
				case "beyond":
					h = hdb.Handle(1<<32 | 1000)
				case "future":
					h = handles["a"] + 5<<32
				}
				var err error
				switch s.op {
				case "create":
					handles[s.handle] = db.Create(s.handle)
				case "get":
					var got string
					got, err = db.Get(h)
					if err == nil && got != s.handle {
						t.Fatalf("step %d: get returned %q, want %q", i, got, s.handle)
					}
				case "put":
					err = db.Put(h)
				case "destroy":
					err = db.Destroy(h)
				case "refs":
					var n int
					n, err = db.Refs(h)
					if err == nil && n != s.refs {
						t.Fatalf("step %d: refs = %d, want %d", i, n, s.refs)
					}
				}
				if !errors.Is(err, s.wantErr) || (err != nil) != (s.wantErr != nil) {
					t.Fatalf("step %d (%s %s): err = %v, want %v", i, s.op, s.handle, err, s.wantErr)
				}
			}
			if len(destroyed) != len(tc.destroyed) {
				t.Fatalf("destructor ran for %v, want %v", destroyed, tc.destroyed)
			}
			for i := range destroyed {
				if destroyed[i] != tc.destroyed[i] {
					t.Fatalf("destructor ran for %v, want %v", destroyed, tc.destroyed)
				}
			}
		})
	}
}

func TestHandleLayout(t *testing.T) {
	db := hdb.New[int](nil)
	h := db.Create(1)
	if h.Index() != 0 || h.Generation() != 1 {
		t.Fatalf("first handle = index %d generation %d, want 0 and 1", h.Index(), h.Generation())
	}
	_ = db.Destroy(h)
	h2 := db.Create(2)
	if h2.Index() != 0 || h2.Generation() != 2 {
		t.Fatalf("reused handle = index %d generation %d, want 0 and 2", h2.Index(), h2.Generation())
	}
	if db.Len() != 1 {
		t.Fatalf("Len = %d, want 1", db.Len())
	}
	var seen []int
	db.Each(func(_ hdb.Handle, v int) { seen = append(seen, v) })
	if len(seen) != 1 || seen[0] != 2 {
		t.Fatalf("Each saw %v, want [2]", seen)
	}
}

// TestConcurrent hammers get/put against destroy: the destructor must run
// exactly once per object, never while a Get holder has not put yet.
func TestConcurrent(t *testing.T) {
	type obj struct {
		inUse atomic.Int32
		dead  atomic.Bool
	}
	var destructions atomic.Int32
	var violation atomic.Bool
	db := hdb.New(func(_ hdb.Handle, o *obj) {
		if o.inUse.Load() != 0 || o.dead.Swap(true) {
			violation.Store(true)
		}
		destructions.Add(1)
	})
	const objects, workers, rounds = 50, 8, 200
	for range objects {
		h := db.Create(&obj{})
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					o, err := db.Get(h)
					if err != nil {
						if !errors.Is(err, hdb.ErrDestroyed) && !errors.Is(err, hdb.ErrStale) {
							violation.Store(true)
						}
						return
					}
					o.inUse.Add(1)
					if o.dead.Load() {
						violation.Store(true)
					}
					o.inUse.Add(-1)
					if err := db.Put(h); err != nil {
						violation.Store(true)
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Destroy(h); err != nil {
				violation.Store(true)
			}
		}()
		wg.Wait()
	}
	if violation.Load() {
		t.Fatal("an object was used after destruction, destroyed twice, or a call failed unexpectedly")
	}
	if got := destructions.Load(); got != objects {
		t.Fatalf("destructor ran %d times, want %d", got, objects)
	}
	if db.Len() != 0 {
		t.Fatalf("Len = %d after destroying everything", db.Len())
	}
}
