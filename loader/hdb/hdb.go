// Package hdb is corobus's handle database, the analogue of corosync's
// hdb.h: a table of objects addressed by handles that carry a generation,
// so that a handle kept after its object is gone is refused instead of
// reaching whatever reuses the slot.
//
// A handle is (generation << 32 | index). Create stores an object with one
// reference (the creator's); Get takes another reference and Put drops one;
// Destroy marks the object for removal and drops the creator's reference.
// The destructor runs, and the slot is freed, when the last reference is
// put, so an object is never destroyed under a caller that still holds it.
package hdb

import (
	"errors"
	"fmt"
	"sync"
)

// Handle addresses one object of a DB. The zero Handle is never valid.
type Handle uint64

// Index is the slot of the handle's object.
func (h Handle) Index() uint32 { return uint32(h) }

// Generation is the slot generation the handle was issued for.
func (h Handle) Generation() uint32 { return uint32(h >> 32) }

func (h Handle) String() string { return fmt.Sprintf("%#016x", uint64(h)) }

func makeHandle(gen, index uint32) Handle { return Handle(uint64(gen)<<32 | uint64(index)) }

// Errors. Each is wrapped with the handle that caused it; test with errors.Is.
var (
	// ErrBadHandle: the handle never named an object of this database
	// (zero, forged, an index beyond the table, an empty slot).
	ErrBadHandle = errors.New("invalid handle")
	// ErrStale: the slot was reused since the handle was issued.
	ErrStale = errors.New("stale handle")
	// ErrDestroyed: the object is being destroyed; it only waits for
	// its last references to be put, and takes no new ones.
	ErrDestroyed = errors.New("handle is being destroyed")
)

type state uint8

const (
	empty state = iota
	active
	pendingRemoval
)

type entry[T any] struct {
	state state
	gen   uint32
	refs  int
	obj   T
}

// DB is a handle database of objects of type T. It is safe for concurrent
// use. The zero value is not usable: build one with New.
type DB[T any] struct {
	mu         sync.Mutex
	entries    []entry[T]
	free       []uint32
	destructor func(Handle, T)
}

// New returns an empty database. destructor (may be nil) runs once per
// object, after its last reference is put, outside the database's lock so
// that it may use the database.
func New[T any](destructor func(Handle, T)) *DB[T] {
	return &DB[T]{destructor: destructor}
}

// Create stores obj and returns its handle, holding one reference.
func (d *DB[T]) Create(obj T) Handle {
	d.mu.Lock()
	defer d.mu.Unlock()
	var idx uint32
	if n := len(d.free); n > 0 {
		idx = d.free[n-1]
		d.free = d.free[:n-1]
	} else {
		idx = uint32(len(d.entries))
		d.entries = append(d.entries, entry[T]{})
	}
	e := &d.entries[idx]
	// Generations start at 1 so that the zero handle is never valid, and
	// skip 0 on wrap-around for the same reason.
	e.gen++
	if e.gen == 0 {
		e.gen = 1
	}
	e.state, e.refs, e.obj = active, 1, obj
	return makeHandle(e.gen, idx)
}

// lookup finds h's entry; d.mu must be held.
func (d *DB[T]) lookup(h Handle) (*entry[T], error) {
	idx := h.Index()
	if h == 0 || int(idx) >= len(d.entries) {
		return nil, fmt.Errorf("handle %s: %w", h, ErrBadHandle)
	}
	e := &d.entries[idx]
	switch g := h.Generation(); {
	case g > e.gen || g == 0:
		// No handle with this generation was ever issued for the slot.
		return nil, fmt.Errorf("handle %s: %w", h, ErrBadHandle)
	case g < e.gen:
		return nil, fmt.Errorf("handle %s (slot now at generation %d): %w", h, e.gen, ErrStale)
	}
	if e.state == empty {
		// Same generation, slot freed: its object was destroyed.
		return nil, fmt.Errorf("handle %s: %w", h, ErrStale)
	}
	return e, nil
}

// Get returns h's object and takes a reference; Put it when done.
func (d *DB[T]) Get(h Handle) (T, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var zero T
	e, err := d.lookup(h)
	if err != nil {
		return zero, err
	}
	if e.state == pendingRemoval {
		return zero, fmt.Errorf("handle %s: %w", h, ErrDestroyed)
	}
	e.refs++
	return e.obj, nil
}

// Put drops a reference taken by Create or Get. At zero the destructor
// runs and the slot is freed for a later generation.
func (d *DB[T]) Put(h Handle) error {
	obj, last, err := d.put(h)
	if err != nil {
		return err
	}
	if last && d.destructor != nil {
		d.destructor(h, obj)
	}
	return nil
}

func (d *DB[T]) put(h Handle) (obj T, last bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, err := d.lookup(h)
	if err != nil {
		return obj, false, err
	}
	e.refs--
	if e.refs > 0 {
		return obj, false, nil
	}
	obj = e.obj
	var zero T
	e.state, e.refs, e.obj = empty, 0, zero
	d.free = append(d.free, h.Index())
	return obj, true, nil
}

// Destroy marks h's object for removal: Get refuses it from now on, and
// the creator's reference is dropped. The destructor runs when the last
// holder puts its reference (at once if there is none). Destroying twice
// is an error, as is destroying a stale handle.
func (d *DB[T]) Destroy(h Handle) error {
	d.mu.Lock()
	e, err := d.lookup(h)
	if err == nil && e.state == pendingRemoval {
		err = fmt.Errorf("handle %s: %w", h, ErrDestroyed)
	}
	if err == nil {
		e.state = pendingRemoval
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.Put(h)
}

// Refs is the number of references h's object has (including the
// creator's until Destroy).
func (d *DB[T]) Refs(h Handle) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, err := d.lookup(h)
	if err != nil {
		return 0, err
	}
	return e.refs, nil
}

// Len is the number of live objects (active or waiting for their last put).
func (d *DB[T]) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries) - len(d.free)
}

// Each calls fn for every active object (not those being destroyed), in
// slot order, on a snapshot taken under the lock: fn may use the database.
func (d *DB[T]) Each(fn func(Handle, T)) {
	type item struct {
		h   Handle
		obj T
	}
	d.mu.Lock()
	var items []item
	for i := range d.entries {
		if e := &d.entries[i]; e.state == active {
			items = append(items, item{makeHandle(e.gen, uint32(i)), e.obj})
		}
	}
	d.mu.Unlock()
	for _, it := range items {
		fn(it.h, it.obj)
	}
}
