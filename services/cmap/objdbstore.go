package cmap

import (
	"context"

	"github.com/corobus/corobus/objdb"
)

// ObjdbStore is the cmap service's Store over a node's objdb view: reads
// from the watched local copy, writes replicated, read-only keys refused as
// corosync's cmap refuses them.
type ObjdbStore struct {
	S  *objdb.Store
	RO objdb.ReadOnlyKeys
}

// NewObjdbStore is the cmap service's Store over st.
func NewObjdbStore(st *objdb.Store) ObjdbStore {
	return ObjdbStore{S: st, RO: objdb.NewReadOnlyKeys()}
}

// Get implements Store.
func (o ObjdbStore) Get(_ context.Context, key string) (Value, error) {
	v, err := o.S.Get(key)
	return Value{Type: uint8(v.Type), Data: v.Data}, err
}

// Set implements Store.
func (o ObjdbStore) Set(ctx context.Context, key string, v Value) error {
	if o.RO.Has(key) {
		return objdb.ErrAccess
	}
	return o.S.Set(ctx, key, objdb.Value{Type: objdb.Type(v.Type), Data: v.Data})
}

// Delete implements Store.
func (o ObjdbStore) Delete(ctx context.Context, key string) error {
	if o.RO.Has(key) {
		return objdb.ErrAccess
	}
	return o.S.Delete(ctx, key)
}

// Adjust implements Store.
func (o ObjdbStore) Adjust(ctx context.Context, key string, step int32) error {
	if o.RO.Has(key) {
		return objdb.ErrAccess
	}
	_, err := o.S.Adjust(ctx, key, int64(step))
	return err
}

// List implements Store.
func (o ObjdbStore) List(_ context.Context, prefix string) ([]Entry, error) {
	es := o.S.List(prefix)
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Key: e.Key, Value: Value{Type: uint8(e.Value.Type), Data: e.Value.Data}}
	}
	return out, nil
}

// Track implements Store.
func (o ObjdbStore) Track(_ context.Context, key string, prefix bool, fn func(Event)) (func(), error) {
	conv := func(v *objdb.Value) *Value {
		if v == nil {
			return nil
		}
		return &Value{Type: uint8(v.Type), Data: v.Data}
	}
	return o.S.Track(key, prefix, func(e objdb.Event) {
		fn(Event{Kind: int32(e.Kind), Key: e.Key, Old: conv(e.Old), New: conv(e.New)})
	}), nil
}
