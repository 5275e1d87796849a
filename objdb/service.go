package objdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config/keys"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/services/cswire"
)

// API operations, the last token of their subjects.
const (
	OpGet          = "get"
	OpSet          = "set"
	OpDelete       = "delete"
	OpDeletePrefix = "delete_prefix"
	OpAdjust       = "adjust"
	OpList         = "list"
	// OpSettle answers once the node's keeper has applied the writes the
	// serving process took before it, with their Position in the
	// HdrPosition header: what a service calls before it answers a
	// request that wrote (docs/objdb.md, "Read your writes through the
	// gateway").
	OpSettle = "settle"
)

// HdrPosition carries a Position (its String): on the settle reply, and
// on a component's answer to a request that wrote (services/ipc/session).
const HdrPosition = "Corobus-Objdb-Position"

// ListEntry is one key of a list reply (JSON).
type ListEntry struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value string `json:"value"` // as corosync-cmapctl prints it
	Data  []byte `json:"data"`  // raw bytes (base64 in JSON)
	Scope Scope  `json:"scope"`
}

// ReadOnly reports whether clients may not write key: the keys corosync's
// cmap refuses (its read-only prefixes, and the configuration keys it
// marks read-only). It builds the key index each time; a hot path keeps a
// ReadOnlyKeys.
func ReadOnly(key string) bool { return NewReadOnlyKeys().Has(key) }

// ReadOnlyKeys answers ReadOnly from a key index built once (the zero
// value answers too, without the index).
type ReadOnlyKeys struct{ index *keys.Index }

// NewReadOnlyKeys indexes the configuration schema's read-only keys.
func NewReadOnlyKeys() ReadOnlyKeys { return ReadOnlyKeys{keys.NewIndex()} }

// Has reports whether clients may not write key.
func (r ReadOnlyKeys) Has(key string) bool {
	// corosync's read-only prefixes (exec/main.c), and each copy's own
	// state.
	if IsCopyKey(key) || keys.HasReadOnlyPrefix(key) {
		return true
	}
	if r.index == nil { // the zero value: correct, slow
		k, ok := keys.Lookup(key)
		return ok && k.ReadOnly
	}
	k, ok := r.index.Lookup(key)
	return ok && k.ReadOnly
}

// loadable drops the keys that hold secrets (totem.key, bus.token) from a
// configuration before objdb loads it: what objdb holds, every admitted
// cmap client and every node can read.
func loadable(flat map[string]string) map[string]string {
	for k := range flat {
		if sk, ok := keys.Lookup(k); ok && sk.Secret {
			delete(flat, k)
		}
	}
	return flat
}

// TypeOf is the type a configuration key is stored as.
func TypeOf(key string) Type {
	if k, ok := keys.Lookup(key); ok {
		if t, err := ParseType(string(k.Type)); err == nil {
			return t
		}
	}
	return String
}

// Layer is `corobus objdb`.
func Layer() layer.Layer {
	return layer.Layer{Name: "objdb", Subsys: "OBJDB", Summary: "the object database: typed keys in replicated JetStream KV", Run: Run,
		Grant: func(a bus.Access) bus.Grant {
			return bus.Merge(a.Process(layer.ServiceName("objdb")), a.ObjdbServer(), a.ObjdbStore(true), a.TotemTimings())
		}}
}

// Replicas is the bucket's replication: objdb.replicas, or 3 on a cluster
// of three or more nodes and 1 below.
func Replicas(env layer.Env) (int, error) {
	r, err := env.Config.Uint("objdb.replicas", 0)
	if err != nil {
		return 0, err
	}
	if r > 0 {
		return int(r), nil
	}
	nodes, err := env.Config.Nodes()
	if err != nil {
		return 0, err
	}
	if len(nodes) >= 3 {
		return 3, nil
	}
	return 1, nil
}

// OpenFor opens the store of a layer's node, binding to the bucket (the
// node's keeper creates it; bus.Access.ObjdbStore(false) is the grant of
// such a store). Its feeds count as lost after totem.token of silence, the
// failure detector's time.
func OpenFor(ctx context.Context, env layer.Env) (*Store, error) {
	return open(ctx, env, false)
}

// open opens the node's store; the objdb layer's is the owner's: it may
// create the bucket and write read-only keys.
func open(ctx context.Context, env layer.Env, owner bool) (*Store, error) {
	replicas, err := Replicas(env)
	if err != nil {
		return nil, err
	}
	token, err := env.Config.Uint("totem.token", 1000)
	if err != nil {
		return nil, err
	}
	return OpenStore(ctx, env.Conn, StoreConfig{
		Bucket:      BucketName(env.Config.ClusterName()),
		Replicas:    replicas,
		Node:        env.Node.ID,
		Subjects:    env.Subjects,
		Log:         env.Log,
		FeedTimeout: time.Duration(token) * time.Millisecond,
		Bind:        !owner,
		StateDir:    env.Config.StateDir(),
		Internal:    owner,
	})
}

// Run serves objdb for this node until ctx ends: it loads the node's
// configuration into its namespace, then answers the API in a queue group
// shared with every other objdb process of the node.
func Run(ctx context.Context, env layer.Env) error {
	st, err := open(ctx, env, true)
	if err != nil {
		return err
	}
	defer st.Close()
	// A node started on a full disk serves reads: it says once why its
	// writes will fail rather than failing its start.
	if why, full := NoSpace(env.Config.StateDir(), nil); full {
		env.Log.Warn("objdb: " + why + ": reads are served; writes of cluster keys fail (CS_ERR_NO_SPACE) and node keys are kept in memory until space is freed")
	}
	// As corosync: the keys the file says, nothing more; the values in
	// effect for absent keys go under runtime.config.
	explicit := loadable(env.Config.Explicit())
	if err := st.LoadConfig(ctx, explicit, TypeOf); err != nil {
		return err
	}
	if gone, err := st.PruneConfig(ctx, explicit); err != nil {
		return err
	} else if len(gone) > 0 {
		env.Log.Info("removed keys the configuration no longer has", "keys", gone)
	}
	if err := followTimings(ctx, st, env.Conn, env.Subjects, env.Node.ID, env.Log); err != nil {
		return err
	}
	pos := uint64(env.Node.Index)
	if err := st.SetLocal(ctx, "nodelist.local_node_pos", Value{Type: Uint32, Data: putInt(Uint32, pos)}); err != nil {
		return err
	}
	svc, err := layer.NewService(env, "objdb", "corobus object database", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the objdb service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := AddEndpoints(svc, st, env); err != nil {
		return err
	}
	env.Log.Info("objdb serving", "bucket", BucketName(env.Config.ClusterName()), "keys", len(st.List("")))
	<-ctx.Done()
	return nil
}

// AddEndpoints serves the API of st on the node's objdb subjects: the
// public API, which refuses writes to read-only keys as corosync's cmap
// refuses them, and the internal write path (bus.Subjects.ObjdbInternalAPI),
// which does not; the bus lets only the layers that maintain read-only keys
// publish to it.
func AddEndpoints(svc micro.Service, st *Store, env layer.Env) error {
	node := env.Node.ID
	ro := NewReadOnlyKeys()
	get := func(r micro.Request) {
		v, err := st.Get(r.Headers().Get(HdrKey))
		if err != nil {
			respondErr(r, err)
			return
		}
		_ = r.Respond(v.Data, micro.WithHeaders(micro.Headers{HdrType: []string{strconv.Itoa(int(v.Type))}}))
	}
	list := func(r micro.Request) {
		entries := st.List(r.Headers().Get(HdrKey))
		out := make([]ListEntry, len(entries))
		for i, e := range entries {
			out[i] = ListEntry{Key: e.Key, Type: e.Value.Type.String(), Value: e.Value.String(), Data: e.Value.Data, Scope: e.Scope}
		}
		_ = r.RespondJSON(out)
	}
	settle := func(r micro.Request) {
		p, err := st.Settle(context.Background())
		if err != nil {
			respondErr(r, err)
			return
		}
		_ = r.Respond(nil, micro.WithHeaders(micro.Headers{HdrPosition: []string{p.String()}}))
	}
	for _, op := range []string{OpGet, OpList, OpSet, OpDelete, OpDeletePrefix, OpAdjust, OpSettle} {
		var public, internal micro.HandlerFunc
		switch op {
		case OpGet:
			public = get
		case OpList:
			public = list
		case OpSettle:
			public = settle
		default:
			public, internal = writeHandler(st, op, false, ro), writeHandler(st, op, true, ro)
		}
		if err := svc.AddEndpoint(op, public, micro.WithEndpointSubject(env.Subjects.ObjdbAPI(node, op))); err != nil {
			return fmt.Errorf("adding objdb endpoint %s: %w", op, err)
		}
		if internal != nil {
			if err := svc.AddEndpoint("internal_"+op, internal, micro.WithEndpointSubject(env.Subjects.ObjdbInternalAPI(node, op))); err != nil {
				return fmt.Errorf("adding objdb endpoint internal %s: %w", op, err)
			}
		}
	}
	return nil
}

// writeHandler serves one write operation; internal ones may change
// read-only keys.
func writeHandler(st *Store, op string, internal bool, ro ReadOnlyKeys) micro.HandlerFunc {
	refuse := func(r micro.Request, key string) bool {
		if !internal && ro.Has(key) {
			respondErr(r, fmt.Errorf("key %s is read-only: %w", key, ErrAccess))
			return true
		}
		return false
	}
	return func(r micro.Request) {
		key := r.Headers().Get(HdrKey)
		switch op {
		case OpSet:
			t, err := strconv.Atoi(r.Headers().Get(HdrType))
			if err != nil {
				respondErr(r, fmt.Errorf("missing or bad %s header: %w", HdrType, ErrInvalidParam))
				return
			}
			if refuse(r, key) {
				return
			}
			respondErr(r, st.Set(context.Background(), key, Value{Type: Type(t), Data: r.Data()}))
		case OpDelete:
			if refuse(r, key) {
				return
			}
			respondErr(r, st.Delete(context.Background(), key))
		case OpDeletePrefix:
			for _, e := range st.List(key) {
				if refuse(r, e.Key) {
					return
				}
			}
			n, err := st.DeletePrefix(context.Background(), key)
			if err != nil {
				respondErr(r, err)
				return
			}
			_ = r.Respond([]byte(strconv.Itoa(n)))
		case OpAdjust:
			step, err := strconv.ParseInt(string(r.Data()), 10, 64)
			if err != nil {
				respondErr(r, fmt.Errorf("step %q: %w", r.Data(), ErrInvalidParam))
				return
			}
			if refuse(r, key) {
				return
			}
			v, err := st.Adjust(context.Background(), key, step)
			if err != nil {
				respondErr(r, err)
				return
			}
			_ = r.Respond(v.Data, micro.WithHeaders(micro.Headers{HdrType: []string{strconv.Itoa(int(v.Type))}}))
		}
	}
}

// respondErr answers with success (nil) or the error, its cs_error_t number
// as the micro error code.
func respondErr(r micro.Request, err error) {
	if err == nil {
		_ = r.Respond(nil)
		return
	}
	code := cswire.Code(err)
	var e cswire.Error
	if !errors.As(err, &e) {
		code = cswire.ErrLibrary
	}
	_ = r.Error(strconv.Itoa(int(code)), err.Error(), nil)
}
