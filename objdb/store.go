package objdb

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus"
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// Bucket is the JetStream KV bucket; Replicas its replication factor
	// (1 on one node, 3 on three or more).
	Bucket   string
	Replicas int
	// Node is whose view of the database this store gives: the cluster
	// keys plus node Node's own keys.
	Node     uint32
	Subjects bus.Subjects
	Log      *slog.Logger
	// WriteTimeout bounds a write; a write JetStream cannot get a quorum
	// for fails after it with ErrTryAgain.
	WriteTimeout time.Duration
}

// BucketName is the objdb bucket of a cluster.
func BucketName(cluster string) string {
	b := []byte("objdb_" + cluster)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Entry is one key of a listing.
type Entry struct {
	Key   string
	Value Value
	Scope Scope
}

// EventKind is what happened to a tracked key; the numbers are libcmap's
// CMAP_TRACK_* flags.
type EventKind int32

// Event kinds.
const (
	EventDelete EventKind = 1
	EventModify EventKind = 2
	EventAdd    EventKind = 4
)

func (k EventKind) String() string {
	switch k {
	case EventAdd:
		return "create"
	case EventModify:
		return "modify"
	case EventDelete:
		return "delete"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of a tracked key. Old is nil for an add, New for a
// delete.
type Event struct {
	Kind     EventKind
	Key      string
	Old, New *Value
}

// Store is one node's view of objdb: a watched local copy of the bucket's
// cluster keys and of this node's keys. Reads are served from the copy;
// writes go to JetStream and return once the copy has them (so a reader on
// this node sees its own writes).
type Store struct {
	cfg StoreConfig
	nc  *nats.Conn
	kv  jetstream.KeyValue
	log *slog.Logger

	mu      sync.Mutex
	changed *sync.Cond
	shared  map[string]Value
	local   map[string]Value
	rev     uint64
	tracks  map[int]*tracker
	nextT   int

	stop    context.CancelFunc
	stopped chan struct{}
}

type tracker struct {
	key    string
	prefix bool
	events chan Event
	done   chan struct{}
}

// OpenStore creates (or binds to) the bucket and loads the local copy. On a
// cluster whose JetStream has no quorum yet it keeps trying until ctx ends.
func OpenStore(ctx context.Context, nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("objdb: JetStream: %w", err)
	}
	var kv jetstream.KeyValue
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err = js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "corobus object database",
			History:     1,
			Replicas:    cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
		cancel()
		if err == nil {
			break
		}
		cfg.Log.Warn("objdb bucket not available yet; retrying", "bucket", cfg.Bucket, "replicas", cfg.Replicas, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("objdb: creating bucket %s (R%d): %w", cfg.Bucket, cfg.Replicas, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	s := &Store{cfg: cfg, nc: nc, kv: kv, log: cfg.Log, shared: map[string]Value{}, local: map[string]Value{},
		tracks: map[int]*tracker{}, stopped: make(chan struct{})}
	s.changed = sync.NewCond(&s.mu)
	wctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	w, err := kv.WatchFiltered(wctx, []string{clusterScope() + ".>", nodeScope(cfg.Node) + ".>"})
	if err != nil {
		stop()
		return nil, fmt.Errorf("objdb: watching bucket %s: %w", cfg.Bucket, err)
	}
	initial := make(chan struct{})
	go s.watch(w, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("objdb: loading the local copy: %w", ctx.Err())
	}
	return s, nil
}

// Close stops the watcher and every tracker.
func (s *Store) Close() {
	s.stop()
	<-s.stopped
	s.mu.Lock()
	for id, t := range s.tracks {
		close(t.done)
		delete(s.tracks, id)
	}
	s.mu.Unlock()
}

// Node is whose view this is.
func (s *Store) Node() uint32 { return s.cfg.Node }

func (s *Store) watch(w jetstream.KeyWatcher, initial chan struct{}) {
	defer close(s.stopped)
	defer func() { _ = w.Stop() }()
	loading := true
	for e := range w.Updates() {
		if e == nil {
			if loading {
				loading = false
				close(initial)
			}
			continue
		}
		s.apply(e, !loading)
	}
}

// apply folds one KV entry into the copy and tells trackers what changed
// in this node's view.
func (s *Store) apply(e jetstream.KeyValueEntry, notify bool) {
	scope, key, err := splitKVKey(e.Key())
	if err != nil {
		s.log.Warn("objdb: ignoring an undecodable key", "kv_key", e.Key(), "err", err)
		return
	}
	var v Value
	put := e.Operation() == jetstream.KeyValuePut
	if put {
		if v, err = decodeValue(e.Value()); err != nil {
			s.log.Warn("objdb: ignoring an undecodable value", "key", key, "err", err)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, hadOld := s.viewLocked(key)
	m := s.shared
	if scope != clusterScope() {
		m = s.local
	}
	if put {
		m[key] = v
	} else {
		delete(m, key)
	}
	if r := e.Revision(); r > s.rev {
		s.rev = r
	}
	s.changed.Broadcast()
	if !notify {
		return
	}
	cur, hasCur := s.viewLocked(key)
	var ev Event
	switch {
	case !hadOld && hasCur:
		ev = Event{Kind: EventAdd, Key: key, New: &cur}
	case hadOld && !hasCur:
		ev = Event{Kind: EventDelete, Key: key, Old: &old}
	case hadOld && hasCur && (old.Type != cur.Type || string(old.Data) != string(cur.Data)):
		ev = Event{Kind: EventModify, Key: key, Old: &old, New: &cur}
	default:
		return // this node's view did not change (a shadowed cluster key)
	}
	for _, t := range s.tracks {
		if t.matches(key) {
			select {
			case t.events <- ev:
			case <-t.done:
			}
		}
	}
}

func (t *tracker) matches(key string) bool {
	if t.prefix {
		return strings.HasPrefix(key, t.key)
	}
	return key == t.key
}

// viewLocked is this node's value of key: its own, else the cluster's.
func (s *Store) viewLocked(key string) (Value, bool) {
	if v, ok := s.local[key]; ok {
		return v, true
	}
	v, ok := s.shared[key]
	return v, ok
}

// Get reads key from the local copy.
func (s *Store) Get(key string) (Value, error) {
	if err := ValidKey(key); err != nil {
		return Value{}, err
	}
	s.mu.Lock()
	v, ok := s.viewLocked(key)
	s.mu.Unlock()
	if !ok {
		return Value{}, fmt.Errorf("key %s: %w", key, ErrNotExist)
	}
	return v, nil
}

// List returns the keys starting with prefix, in key order.
func (s *Store) List(prefix string) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0)
	for k, v := range s.shared {
		if _, shadowed := s.local[k]; !shadowed && strings.HasPrefix(k, prefix) {
			out = append(out, Entry{Key: k, Value: v, Scope: ScopeCluster})
		}
	}
	for k, v := range s.local {
		if strings.HasPrefix(k, prefix) {
			out = append(out, Entry{Key: k, Value: v, Scope: ScopeNode})
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// scopeFor decides where a write goes: a key this node already keeps, or
// one under a node-local prefix, is the node's; anything else is the
// cluster's.
func (s *Store) scopeFor(key string) (string, Scope) {
	s.mu.Lock()
	_, local := s.local[key]
	s.mu.Unlock()
	if !local {
		for _, p := range nodeLocalPrefixes() {
			if strings.HasPrefix(key, p) {
				local = true
				break
			}
		}
	}
	if local {
		return nodeScope(s.cfg.Node), ScopeNode
	}
	return clusterScope(), ScopeCluster
}

// Set writes key. It returns once the write is replicated (acknowledged by
// JetStream) and in this node's copy.
func (s *Store) Set(ctx context.Context, key string, v Value) error {
	return s.setScoped(ctx, key, v, "")
}

// SetLocal writes a key into this node's own namespace, whatever its name.
func (s *Store) SetLocal(ctx context.Context, key string, v Value) error {
	return s.setScoped(ctx, key, v, nodeScope(s.cfg.Node))
}

func (s *Store) setScoped(ctx context.Context, key string, v Value, scope string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := v.Check(); err != nil {
		return fmt.Errorf("key %s: %w", key, err)
	}
	v = v.normalized()
	sc := ScopeNode
	if scope == "" {
		scope, sc = s.scopeFor(key)
	}
	s.mu.Lock()
	old, hadOld := s.viewLocked(key)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	rev, err := s.kv.Put(ctx, kvKey(scope, key), v.encode())
	if err != nil {
		return writeError(key, err)
	}
	s.waitRev(ctx, rev)
	kind := EventAdd
	if hadOld {
		kind = EventModify
	}
	s.publish(Event{Kind: kind, Key: key, Old: ptrIf(old, hadOld), New: &v}, sc)
	return nil
}

func ptrIf(v Value, ok bool) *Value {
	if !ok {
		return nil
	}
	return &v
}

// Delete removes key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	old, ok := s.viewLocked(key)
	_, local := s.local[key]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("key %s: %w", key, ErrNotExist)
	}
	scope, sc := clusterScope(), ScopeCluster
	if local {
		scope, sc = nodeScope(s.cfg.Node), ScopeNode
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if err := s.kv.Delete(ctx, kvKey(scope, key)); err != nil {
		return writeError(key, err)
	}
	// A delete's revision is not returned: wait for the key to leave the
	// copy instead.
	s.mu.Lock()
	for {
		m := s.shared
		if local {
			m = s.local
		}
		if _, still := m[key]; !still || ctx.Err() != nil {
			break
		}
		s.waitLocked(ctx)
	}
	s.mu.Unlock()
	s.publish(Event{Kind: EventDelete, Key: key, Old: &old}, sc)
	return nil
}

// DeletePrefix removes every key under prefix (corosync-cmapctl -D) and
// returns how many went.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	n := 0
	for _, e := range s.List(prefix) {
		if err := s.Delete(ctx, e.Key); err != nil && !errors.Is(err, ErrNotExist) {
			return n, err
		}
		n++
	}
	return n, nil
}

// Adjust adds step to an integer key atomically: a compare-and-set on the
// key's revision, retried when another writer (on any node) got there
// first, so that no increment is ever lost.
func (s *Store) Adjust(ctx context.Context, key string, step int64) (Value, error) {
	if err := ValidKey(key); err != nil {
		return Value{}, err
	}
	scope, sc := s.scopeFor(key)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	k := kvKey(scope, key)
	for {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Value{}, fmt.Errorf("key %s: %w", key, ErrNotExist)
		}
		if err != nil {
			return Value{}, writeError(key, err)
		}
		old, err := decodeValue(e.Value())
		if err != nil {
			return Value{}, fmt.Errorf("key %s: %w", key, err)
		}
		nv, err := old.adjust(step)
		if err != nil {
			return Value{}, fmt.Errorf("key %s: %w", key, err)
		}
		rev, err := s.kv.Update(ctx, k, nv.encode(), e.Revision())
		if err == nil {
			s.waitRev(ctx, rev)
			s.publish(Event{Kind: EventModify, Key: key, Old: &old, New: &nv}, sc)
			return nv, nil
		}
		if !isWrongRevision(err) {
			return Value{}, writeError(key, err)
		}
		if ctx.Err() != nil {
			return Value{}, writeError(key, ctx.Err())
		}
	}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// writeError says why a write failed; one that JetStream could not get
// replicated is a TRY_AGAIN: the data is unchanged and the caller may retry
// once the cluster has a quorum again.
func writeError(key string, err error) error {
	return fmt.Errorf("objdb: write of %s not acknowledged by a JetStream quorum (partitioned or too few nodes?): %v: %w", key, err, ErrTryAgain)
}

// waitRev waits until the copy has caught up with a write's revision.
func (s *Store) waitRev(ctx context.Context, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.rev < rev && ctx.Err() == nil {
		s.waitLocked(ctx)
	}
}

// waitLocked waits for the next change, or for ctx to end.
func (s *Store) waitLocked(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.changed.Broadcast()
		s.mu.Unlock()
	})
	s.changed.Wait()
	stop()
}

// Track delivers changes of key (of every key under it when prefix) to fn,
// in order, from a goroutine of its own, until stop is called.
func (s *Store) Track(key string, prefix bool, fn func(Event)) (stop func()) {
	t := &tracker{key: key, prefix: prefix, events: make(chan Event, 256), done: make(chan struct{})}
	s.mu.Lock()
	id := s.nextT
	s.nextT++
	s.tracks[id] = t
	s.mu.Unlock()
	go func() {
		for {
			select {
			case ev := <-t.events:
				fn(ev)
			case <-t.done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if _, ok := s.tracks[id]; ok {
				delete(s.tracks, id)
				close(t.done)
			}
			s.mu.Unlock()
		})
	}
}

// Change-event headers on <prefix>.objdb.changed.<key>.
const (
	HdrKey     = "Corobus-Key"
	HdrOp      = "Corobus-Op"
	HdrType    = "Corobus-Type"
	HdrNode    = "Corobus-Node"
	HdrScope   = "Corobus-Scope"
	HdrOldType = "Corobus-Old-Type"
	HdrOld     = "Corobus-Old" // base64 of the old value's bytes
)

// publish announces a change the way anyone can follow with a plain NATS
// subscription. The writer publishes it (not every node's watcher), so
// each change is announced once.
func (s *Store) publish(ev Event, scope Scope) {
	if s.cfg.Subjects.Prefix() == "" {
		return
	}
	m := nats.NewMsg(s.cfg.Subjects.ObjdbChanged(EncodeKey(ev.Key)))
	m.Header.Set(HdrKey, ev.Key)
	m.Header.Set(HdrOp, ev.Kind.String())
	m.Header.Set(HdrNode, strconv.FormatUint(uint64(s.cfg.Node), 10))
	m.Header.Set(HdrScope, string(scope))
	if ev.New != nil {
		m.Header.Set(HdrType, ev.New.Type.String())
		m.Data = ev.New.Data
	}
	if ev.Old != nil {
		m.Header.Set(HdrOldType, ev.Old.Type.String())
		m.Header.Set(HdrOld, base64.StdEncoding.EncodeToString(ev.Old.Data))
	}
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Debug("objdb: change event not published", "key", ev.Key, "err", err)
	}
}

// LoadConfig writes a node's configuration into its own namespace, typed
// by the key schema (typeOf), as corosync loads corosync.conf into cmap at
// start. Keys already holding the same value are left alone so that a
// restart does not wake every tracker.
func (s *Store) LoadConfig(ctx context.Context, flat map[string]string, typeOf func(key string) Type) error {
	for _, k := range slices.Sorted(maps.Keys(flat)) {
		t := typeOf(k)
		v, err := ParseValue(t, flat[k])
		if err != nil {
			// The loader validated the file; a value that still does not
			// parse is kept as the string it is.
			v, _ = ParseValue(String, flat[k])
		}
		if err := ValidKey(k); err != nil {
			s.log.Warn("objdb: configuration key not loadable", "key", k, "err", err)
			continue
		}
		s.mu.Lock()
		cur, ok := s.local[k]
		s.mu.Unlock()
		if ok && cur.Type == v.Type && string(cur.Data) == string(v.Data) {
			continue
		}
		if err := s.SetLocal(ctx, k, v); err != nil {
			return fmt.Errorf("loading the configuration into objdb: %w", err)
		}
	}
	return nil
}
