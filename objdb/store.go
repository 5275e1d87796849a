package objdb

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/services/cswire"
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
	// FeedTimeout is how long a feed may stay silent before the copy
	// counts it lost, says it is behind and resumes it (default 1 s; a
	// layer's store uses totem.token, the failure detector's time).
	FeedTimeout time.Duration
	// ClusterWait bounds how long OpenStore waits for the bucket (JetStream
	// has no quorum: a node started while no majority of the nodelist
	// runs), and then how long for the first load of the cluster keys
	// (the bucket answers but its stream cannot be read: no meta leader
	// to make a consumer, no stream leader), before it serves this node's
	// keys without the cluster's; the cluster keys follow once they load.
	// Default DefaultClusterWait.
	ClusterWait time.Duration
	// Name says whose copy this is, in status and logs (default: the bus
	// connection's name).
	Name string
	// Bind opens the bucket rather than creating (or reconfiguring) it:
	// the stores of processes whose bus users may not change the stream.
	Bind bool
	// StateDir is the node's state directory (JetStream's store): a write
	// that fails when its filesystem is full says "no space".
	StateDir string
	// Internal lets this Store write read-only node keys (the objdb
	// layer's, which loads the configuration and serves the internal write
	// path); the keeper refuses them to the others.
	Internal bool
}

// BucketName is the objdb bucket of a cluster.
func BucketName(cluster string) string { return bus.ObjdbBucket(cluster) }

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

// Store is one node's view of objdb, a watched local copy of the cluster's
// keys and of this node's own keys, each followed through a feed:
//
//   - cluster keys through a JetStream consumer on the bucket, with idle
//     heartbeats: silent for FeedTimeout, the consumer is counted lost
//     (its server may have died) and replaced by one that starts after
//     the last revision the copy applied;
//   - node keys through the node's keeper (Keeper, in the bus process),
//     on core NATS: every applied write in the keeper's order, with gaps
//     fetched back.
//
// Reads are served from the copy. A node-key write is applied to the copy
// at once and sent to the keeper, which replicates it behind; a
// cluster-key write returns once JetStream's quorum has it. Either way this
// Store reads its own writes at once, and trackers see changes in the
// order their feed delivers them. A copy that is behind — a feed lost or
// catching up — knows it: State, a log line, status, and the read-only
// runtime.objdb.copy.* keys of its own view.
type Store struct {
	cfg      StoreConfig
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue // nil until the bucket opens (OpenStore without a JetStream quorum); then read under mu
	log      *slog.Logger
	writer   uint64 // this Store's id as a writer of node keys
	kvPrefix string // "$KV.<bucket>."
	// localPrefixes is nodeLocalPrefixes, built once: nodeScoped runs
	// for every write.
	localPrefixes []string

	mu      sync.Mutex
	changed *sync.Cond
	shared  map[string]Value // cluster keys, as the cluster feed delivered them
	local   map[string]Value // node keys, as the node feed delivered them
	// Own writes the feeds have not delivered yet: reads see them.
	sharedOver map[string]clusterOverlay
	localOver  map[string]*nodeOverlay
	crev       uint64 // the last stream revision the cluster feed applied
	wrev       uint64 // the last revision of this Store's own cluster writes (Settle)
	cloaded    bool   // the cluster feed's initial load is done
	// openedEarly: OpenStore returned before the cluster keys loaded
	// (no JetStream quorum); their load, when it comes, is logged.
	openedEarly bool
	cserver     string // the server of the cluster feed's consumer
	// relayCh is the keeper's relay frames (on the node feed), handed
	// over by followNode to followCluster.
	relayCh chan *nats.Msg
	// crelayed: the cluster keys come through the keeper's relay.
	crelayed bool
	nepoch   uint64 // the keeper's epoch the node keys came from
	nseq     uint64 // the last keeper record applied
	nloaded  bool
	// Node writes the keeper has not confirmed, in wseq order:
	// pendBuf[phead:] (pend).
	pendBuf   []pendingWrite
	phead     int
	nextWSeq  uint64
	outq      []nodeWrite // queued for the keeper, not sent yet
	sendArmed bool        // a send of outq is scheduled
	lastSend  time.Time
	sendBuf   []byte
	cstate    feedState
	nstate    feedState
	tracks    map[int]*tracker
	nextT     int

	stop    context.CancelFunc
	stopped sync.WaitGroup
}

// pend is the node writes the keeper has not confirmed, oldest first.
func (s *Store) pend() []pendingWrite { return s.pendBuf[s.phead:] }

type clusterOverlay struct {
	rev     uint64
	v       Value
	deleted bool
}

type nodeOverlay struct {
	n       int // pending writes of the key
	v       Value
	deleted bool
}

type pendingWrite struct {
	w    nodeWrite
	sent time.Time
	done chan nodeRecord // an adjust waits for its result
}

type tracker struct {
	key    string
	prefix bool
	events chan Event
	done   chan struct{}
}

// DefaultClusterWait is StoreConfig.ClusterWait's default: longer than a
// forming cluster takes to elect JetStream's meta leader (4–5 s at 8 to
// 32 nodes started together, docs/totem.md), so that a copy normally
// opens with the cluster keys loaded.
const DefaultClusterWait = 10 * time.Second

// OpenStore creates (or binds to) the bucket and loads the local copy: the
// cluster keys from JetStream, the node's keys from its keeper. A node
// whose keeper does not answer yet is waited for until ctx ends. A
// cluster whose JetStream has no quorum is waited for ClusterWait; then
// the copy opens with the node's keys alone, as corosync serves a node
// alone — the configuration, runtime.* — and takes the cluster keys when
// the bucket opens: until then they read as absent, and writes of them
// fail with CS_ERR_TRY_AGAIN. A bucket that answers but whose cluster
// keys do not load within ClusterWait more is served the same way: its
// stream answers a lookup without a JetStream quorum when it is led by
// this node's server (a one-replica bucket placed here, the other nodes
// gone), and a lookup made a moment before the bucket's only server left
// has answered; the consumer that loads the cluster keys needs the meta
// leader and a server of the stream, and one is not there.
func OpenStore(ctx context.Context, nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.FeedTimeout <= 0 {
		cfg.FeedTimeout = time.Second
	}
	if cfg.Name == "" {
		cfg.Name = nc.Opts.Name
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("objdb: JetStream: %w", err)
	}
	// JetStream may not serve yet (its meta leader elected a moment after
	// the bus starts): short retries, so the copy opens as soon as it does.
	if cfg.ClusterWait <= 0 {
		cfg.ClusterWait = DefaultClusterWait
	}
	var slow slowNotice
	opener := newBucketOpener(js, cfg.Bucket, cfg.Replicas, cfg.Bind)
	notice := func(_ int, err error) {
		slow.note(cfg.Log.With("bucket", cfg.Bucket, "replicas", cfg.Replicas), "objdb bucket not available yet; retrying", err)
	}
	wctx, cancelWait := context.WithTimeout(ctx, cfg.ClusterWait)
	kv, _, err := opener.wait(wctx, notice)
	cancelWait()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("objdb: opening bucket %s (R%d): %w", cfg.Bucket, cfg.Replicas, err)
	}
	if kv == nil {
		cfg.Log.Warn("objdb: JetStream has no quorum (is a majority of the nodelist running?): serving this node's keys; the cluster keys once the bucket opens",
			"bucket", cfg.Bucket, "waited", cfg.ClusterWait, "err", err)
	}
	now := time.Now()
	s := &Store{cfg: cfg, nc: nc, js: js, kv: kv, log: cfg.Log, writer: rand.Uint64() | 1,
		kvPrefix: "$KV." + cfg.Bucket + ".", localPrefixes: nodeLocalPrefixes(),
		shared: map[string]Value{}, local: map[string]Value{},
		sharedOver: map[string]clusterOverlay{}, localOver: map[string]*nodeOverlay{},
		cstate: feedState{since: now, reason: "loading"}, nstate: feedState{since: now, reason: "loading"},
		tracks: map[int]*tracker{}, relayCh: make(chan *nats.Msg, 8192)}
	s.changed = sync.NewCond(&s.mu)
	fctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	clusterLoaded, nodeLoaded := make(chan struct{}), make(chan struct{})
	s.stopped.Add(3)
	if kv != nil {
		go func() { defer s.stopped.Done(); s.followCluster(fctx, clusterLoaded) }()
	} else {
		s.setFeedState(&s.cstate, "cluster", false, "no JetStream quorum: the bucket is not available (a majority of the nodelist is not running?)")
		go func() {
			defer s.stopped.Done()
			kv, _, err := opener.wait(fctx, notice)
			if err != nil {
				return // closed
			}
			s.mu.Lock()
			s.kv = kv
			s.mu.Unlock()
			s.log.Info("objdb: the bucket is available: following the cluster keys", "bucket", cfg.Bucket)
			s.followCluster(fctx, clusterLoaded)
		}()
	}
	go func() { defer s.stopped.Done(); s.followNode(fctx, nodeLoaded) }()
	go func() { defer s.stopped.Done(); s.serveCopyStatus(fctx) }()
	// The node's keys are the keeper's, in this node's bus: waited for
	// until ctx ends. The cluster keys at most ClusterWait: a copy that
	// waited for them without bound, the bucket found but its stream
	// unreadable, never returned, and a node whose peers had all gone
	// never served its cmap (its gateway's copy waited for ever, and
	// corosync-cmapctl failed with CS_ERR_LIBRARY).
	var clusterDue <-chan time.Time
	if kv != nil {
		due := time.NewTimer(cfg.ClusterWait)
		defer due.Stop()
		clusterDue = due.C
	}
	fail := func() (*Store, error) {
		s.Close()
		st := s.State()
		return nil, fmt.Errorf("objdb: loading the local copy (%s): %w", st.Reason, ctx.Err())
	}
	select {
	case <-nodeLoaded:
	case <-ctx.Done():
		return fail()
	}
	if kv != nil {
		select {
		case <-clusterLoaded:
		case <-clusterDue:
			// The first consumer may still be waiting to be made (a
			// one-replica bucket's waits a token and 10 s): the state
			// then says only "loading".
			reason := s.State().Cluster.Reason
			if reason == "loading" {
				reason = "no consumer of the bucket's stream has delivered them yet"
			}
			cfg.Log.Warn("objdb: the cluster keys did not load (the bucket's stream cannot be read: no JetStream quorum, or its servers are gone?): serving this node's keys; the cluster keys once they load",
				"bucket", cfg.Bucket, "waited", cfg.ClusterWait, "reason", reason)
		case <-ctx.Done():
			return fail()
		}
	}
	s.mu.Lock()
	s.openedEarly = !s.cloaded
	s.mu.Unlock()
	return s, nil
}

// Close stops the feeds and every tracker. Node-key writes the keeper has
// not confirmed yet get up to WriteTimeout to be.
func (s *Store) Close() {
	deadline := time.Now().Add(s.cfg.WriteTimeout)
	s.mu.Lock()
	for len(s.pend()) > 0 && time.Now().Before(deadline) {
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		s.mu.Lock()
	}
	if n := len(s.pend()); n > 0 {
		s.log.Warn("objdb: closing with node-key writes the keeper did not confirm", "writes", n)
	}
	s.mu.Unlock()
	s.stop()
	s.stopped.Wait()
	s.mu.Lock()
	for id, t := range s.tracks {
		close(t.done)
		delete(s.tracks, id)
	}
	s.changed.Broadcast()
	s.mu.Unlock()
}

// Node is whose view this is.
func (s *Store) Node() uint32 { return s.cfg.Node }

// trackedLocked is the key's value as the feeds delivered it: the node's
// own, else the cluster's. Trackers follow this view.
func (s *Store) trackedLocked(key string) (Value, bool) {
	if v, ok := s.local[key]; ok {
		return v, true
	}
	v, ok := s.shared[key]
	return v, ok
}

// viewLocked is the key's value as this Store reads it: the feeds' view
// with this Store's own writes over it.
func (s *Store) viewLocked(key string) (Value, bool) {
	if v, ok, synthetic := s.copyKeyLocked(key); synthetic {
		return v, ok
	}
	if o := s.localOver[key]; o != nil {
		if !o.deleted {
			return o.v, true
		}
	} else if v, ok := s.local[key]; ok {
		return v, true
	}
	if o, ok := s.sharedOver[key]; ok {
		return o.v, !o.deleted
	}
	v, ok := s.shared[key]
	return v, ok
}

// nodeHasLocked reports whether this node keeps key (as this Store reads).
func (s *Store) nodeHasLocked(key string) bool {
	if o := s.localOver[key]; o != nil {
		return !o.deleted
	}
	_, ok := s.local[key]
	return ok
}

// Get reads key from the local copy.
func (s *Store) Get(key string) (Value, error) {
	if err := lookupKey(key); err != nil {
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
	node := map[string]Value{}
	for k, v := range s.local {
		if strings.HasPrefix(k, prefix) {
			node[k] = v
		}
	}
	for k, o := range s.localOver {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if o.deleted {
			delete(node, k)
		} else {
			node[k] = o.v
		}
	}
	cluster := map[string]Value{}
	for k, v := range s.shared {
		if strings.HasPrefix(k, prefix) {
			cluster[k] = v
		}
	}
	for k, o := range s.sharedOver {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if o.deleted {
			delete(cluster, k)
		} else {
			cluster[k] = o.v
		}
	}
	out := make([]Entry, 0, len(node)+len(cluster))
	for k, v := range cluster {
		if _, shadowed := node[k]; !shadowed {
			out = append(out, Entry{Key: k, Value: v, Scope: ScopeCluster})
		}
	}
	for k, v := range node {
		out = append(out, Entry{Key: k, Value: v, Scope: ScopeNode})
	}
	out = append(out, s.copyEntriesLocked(prefix)...)
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// nodeScoped decides where a write goes: a key this node already keeps,
// or one under a node-local prefix, is the node's; anything else is the
// cluster's.
func (s *Store) nodeScoped(key string) bool {
	for _, p := range s.localPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodeHasLocked(key)
}

// Set writes key. A node key is in this Store's copy when Set returns and
// in the keeper's a bus hop later (docs/objdb.md); a cluster key is
// acknowledged by a JetStream quorum.
func (s *Store) Set(ctx context.Context, key string, v Value) error {
	return s.set(ctx, key, v, false)
}

// SetLocal writes a key into this node's own namespace, whatever its name.
func (s *Store) SetLocal(ctx context.Context, key string, v Value) error {
	return s.set(ctx, key, v, true)
}

func (s *Store) set(ctx context.Context, key string, v Value, local bool) error {
	// The value first, as corosync's icmap_set checks it: a bad value
	// under a bad name is CS_ERR_INVALID_PARAM.
	if err := v.Check(); err != nil {
		return fmt.Errorf("key %s: %w", key, err)
	}
	if err := ValidKey(key); err != nil {
		return err
	}
	if IsCopyKey(key) {
		return fmt.Errorf("key %s describes this copy and cannot be written: %w", key, ErrAccess)
	}
	v = v.normalized()
	if local || s.nodeScoped(key) {
		_, err := s.writeNode(ctx, nodeWrite{Op: opSet, Key: key, Value: v})
		return err
	}
	s.mu.Lock()
	old, hadOld := s.viewLocked(key)
	s.mu.Unlock()
	if err := s.writeCluster(ctx, key, &v); err != nil {
		return err
	}
	kind := EventAdd
	if hadOld {
		kind = EventModify
	}
	s.publish(Event{Kind: kind, Key: key, Old: ptrIf(old, hadOld), New: &v})
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
	if err := lookupKey(key); err != nil {
		return err
	}
	if IsCopyKey(key) {
		return fmt.Errorf("key %s describes this copy and cannot be deleted: %w", key, ErrAccess)
	}
	s.mu.Lock()
	old, ok := s.viewLocked(key)
	local := s.nodeHasLocked(key)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("key %s: %w", key, ErrNotExist)
	}
	if local {
		_, err := s.writeNode(ctx, nodeWrite{Op: opDelete, Key: key})
		return err
	}
	if err := s.writeCluster(ctx, key, nil); err != nil {
		return err
	}
	s.publish(Event{Kind: EventDelete, Key: key, Old: &old})
	return nil
}

// DeletePrefix removes every key under prefix (corosync-cmapctl -D) and
// returns how many went.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	n := 0
	for _, e := range s.List(prefix) {
		if IsCopyKey(e.Key) {
			continue
		}
		if err := s.Delete(ctx, e.Key); err != nil && !errors.Is(err, ErrNotExist) {
			return n, err
		}
		n++
	}
	return n, nil
}

// Adjust adds step to an integer key atomically. A node key is adjusted
// by the node's keeper, which orders it with every other write of the
// node; a cluster key by a compare-and-set on its revision, retried when
// another writer (on any node) got there first. No increment is lost.
func (s *Store) Adjust(ctx context.Context, key string, step int64) (Value, error) {
	if err := lookupKey(key); err != nil {
		return Value{}, err
	}
	if IsCopyKey(key) {
		return Value{}, fmt.Errorf("key %s describes this copy and cannot be written: %w", key, ErrAccess)
	}
	if s.nodeScoped(key) {
		rec, err := s.writeNode(ctx, nodeWrite{Op: opAdjust, Key: key, Step: step})
		if err != nil {
			return Value{}, err
		}
		if rec.Status != cswire.OK {
			return Value{}, fmt.Errorf("key %s: %w", key, rec.Status)
		}
		return rec.New, nil
	}
	k := kvKey(clusterScope(), key)
	// WriteTimeout bounds each round (a quorum that does not answer), not
	// the loop: a round lost to another writer means the key moved on, and
	// under many writers of one key a round may be lost many times in a
	// row — eight processes incrementing one counter on a loaded machine
	// saw one increment lose every round for its whole WriteTimeout and
	// fail with TRY_AGAIN. A lost round is retried after a random pause
	// that grows with the losses, so contenders spread out; ctx (the
	// caller's) bounds the whole.
	for lost := 0; ; lost++ {
		nv, old, err := s.adjustRound(ctx, k, key, step)
		if err == nil {
			s.publish(Event{Kind: EventModify, Key: key, Old: &old, New: &nv})
			return nv, nil
		}
		if !errors.Is(err, errLostRound) {
			return Value{}, err
		}
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) << min(lost, 6)))
		select {
		case <-ctx.Done():
			return Value{}, s.writeError(key, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// errLostRound is a compare-and-set another writer got to first.
var errLostRound = errors.New("objdb: another writer changed the key first")

// adjustRound is one compare-and-set of Adjust, within WriteTimeout.
func (s *Store) adjustRound(ctx context.Context, k, key string, step int64) (Value, Value, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	s.mu.Lock()
	kv := s.kv
	s.mu.Unlock()
	if kv == nil {
		return Value{}, Value{}, fmt.Errorf("objdb: %s: the bucket is not available (no JetStream quorum): %w", key, ErrTryAgain)
	}
	e, err := kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Value{}, Value{}, fmt.Errorf("key %s: %w", key, ErrNotExist)
	}
	if err != nil {
		return Value{}, Value{}, s.writeError(key, err)
	}
	old, err := decodeValue(e.Value())
	if err != nil {
		return Value{}, Value{}, fmt.Errorf("key %s: %w", key, err)
	}
	nv, err := old.adjust(step)
	if err != nil {
		return Value{}, Value{}, fmt.Errorf("key %s: %w", key, err)
	}
	rev, err := kv.Update(ctx, k, nv.encode(), e.Revision())
	if err == nil {
		s.overlayCluster(key, &nv, rev)
		return nv, old, nil
	}
	if isWrongRevision(err) {
		return Value{}, Value{}, errLostRound
	}
	return Value{}, Value{}, s.writeError(key, err)
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// writeError says why a write failed. On a full disk it says so
// (CS_ERR_NO_SPACE): the data is unchanged, reads go on, and the write may
// be retried once space is freed. Otherwise JetStream could not get it
// replicated: a TRY_AGAIN, to retry once the cluster has a quorum again.
func (s *Store) writeError(key string, err error) error {
	if why, full := NoSpace(s.cfg.StateDir, err); full {
		return fmt.Errorf("objdb: write of %s refused: %s; reads are served, writes resume once space is freed: %v: %w", key, why, err, cswire.ErrNoSpace)
	}
	return fmt.Errorf("objdb: write of %s not acknowledged by a JetStream quorum (partitioned or too few nodes?): %v: %w", key, err, ErrTryAgain)
}

// writeCluster puts (v non-nil) or deletes a cluster key and returns once
// a JetStream quorum has it; until the cluster feed delivers it, this
// Store's reads see it through an overlay.
func (s *Store) writeCluster(ctx context.Context, key string, v *Value) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	m := nats.NewMsg(s.kvPrefix + kvKey(clusterScope(), key))
	if v == nil {
		m.Header.Set(kvOperationHdr, kvOpDelete)
	} else {
		m.Data = v.encode()
	}
	rev, err := s.publishCluster(ctx, m)
	if err != nil {
		return s.writeError(key, err)
	}
	s.overlayCluster(key, v, rev)
	return nil
}

// The KV layer's markers of a delete.
const (
	kvOperationHdr = "KV-Operation"
	kvOpDelete     = "DEL"
	kvOpPurge      = "PURGE"
)

func (s *Store) overlayCluster(key string, v *Value, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wrev = max(s.wrev, rev)
	if rev <= s.crev {
		return // the feed has it already
	}
	if o, ok := s.sharedOver[key]; ok && o.rev > rev {
		return
	}
	o := clusterOverlay{rev: rev, deleted: v == nil}
	if v != nil {
		o.v = *v
	}
	s.sharedOver[key] = o
}

// maxUnconfirmed is how many node-key writes a Store lets the keeper
// leave unconfirmed before its next write waits for the keeper. Without a
// bound a writer faster than the keeper (eight cmap clients on a 2-vCPU
// machine) queued without end: the queue's array was copied at each
// growth, its oldest writes were resent every heartbeat once half a
// second old, and the resends slowed the keeper further (eight clients'
// sets fell to a few hundred per second). It is the keeper's record log
// (KeeperConfig.LogRecords' default): a copy that far behind reloads.
const maxUnconfirmed = 8192

// writeNode applies a node-key write to this Store's copy (set, delete)
// and sends it to the keeper. An adjust waits for the keeper's result: its
// outcome depends on writes this Store has not seen. With maxUnconfirmed
// writes unconfirmed, it first waits for the keeper (at most WriteTimeout).
func (s *Store) writeNode(ctx context.Context, w nodeWrite) (nodeRecord, error) {
	s.mu.Lock()
	if len(s.pend()) >= maxUnconfirmed {
		if err := s.waitKeeperLocked(ctx); err != nil {
			s.mu.Unlock()
			return nodeRecord{}, fmt.Errorf("objdb: write of %s not taken: %w", w.Key, err)
		}
	}
	s.nextWSeq++
	w.WSeq = s.nextWSeq
	p := pendingWrite{w: w, sent: time.Now()}
	if w.Op == opAdjust {
		p.done = make(chan nodeRecord, 1)
	}
	s.pendBuf = append(s.pendBuf, p)
	switch w.Op {
	case opSet, opDelete:
		o := s.localOver[w.Key]
		if o == nil {
			o = &nodeOverlay{}
			s.localOver[w.Key] = o
		}
		o.n++
		o.v, o.deleted = w.Value, w.Op == opDelete
	}
	s.queueLocked(w)
	s.mu.Unlock()
	if p.done == nil {
		return nodeRecord{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	select {
	case rec := <-p.done:
		return rec, nil
	case <-ctx.Done():
		return nodeRecord{}, fmt.Errorf("objdb: the node's keeper did not confirm the adjust of %s (it may still apply): %v: %w", w.Key, ctx.Err(), ErrTryAgain)
	}
}

// waitKeeperLocked waits, under s.mu, until fewer than maxUnconfirmed
// writes are unconfirmed, or WriteTimeout (or ctx) ends.
func (s *Store) waitKeeperLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if err := s.waitChangedLocked(ctx, func() bool { return len(s.pend()) < maxUnconfirmed }); err != nil {
		return fmt.Errorf("the node's keeper has not confirmed this copy's last %d writes (%v): %w", len(s.pend()), err, ErrTryAgain)
	}
	return nil
}

// waitChangedLocked waits, under s.mu, until done holds (checked at each
// change the Store broadcasts), or ctx ends: then it returns ctx's error.
func (s *Store) waitChangedLocked(ctx context.Context, done func() bool) error {
	if done() {
		return nil
	}
	// The wait must wake when ctx ends too, not only at the next change.
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.changed.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	for !done() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.changed.Wait()
	}
	return nil
}

// sendWindow is how long a Store gathers node-key writes before it sends
// them to the keeper, once it has sent some: a lone write goes at once, a
// stream of them goes a batch per window (a set is a map insert and a share
// of one bus message, not a message and a wake-up of every process of the
// node per set). 5 ms measured better than 1 ms on a loaded 2-vCPU machine
// (one client's node-key sets: 24–41 k/s against 15–30 k/s), and 20 ms
// better than 5 with the keeper's publishWindow (eight clients on three
// nodes: see publishWindow).
const sendWindow = 20 * time.Millisecond

// queueLocked queues a write for the keeper, in wseq order (under s.mu, so
// that two writers' writes cannot overtake each other), and sends them now
// or at the end of the current window. A send that fails is sent again by
// the resend timer.
func (s *Store) queueLocked(w nodeWrite) {
	s.outq = append(s.outq, w)
	if s.sendArmed {
		return
	}
	if wait := sendWindow - time.Since(s.lastSend); wait > 0 {
		s.sendArmed = true
		time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.sendArmed = false
			s.flushSendLocked()
		})
		return
	}
	s.flushSendLocked()
}

// flushSendLocked sends the queued writes, in batches of at most maxFrame.
func (s *Store) flushSendLocked() {
	q := s.outq
	for len(q) > 0 {
		n, size := 0, 0
		for n < len(q) && (n == 0 || size < maxFrame) {
			size += 32 + len(q[n].Key) + len(q[n].Value.Data)
			n++
		}
		s.sendLocked(q[:n])
		q = q[n:]
	}
	s.outq = s.outq[:0] // its array is reused
	s.lastSend = time.Now()
}

// sendLocked publishes one batch of writes to the keeper.
func (s *Store) sendLocked(ws []nodeWrite) {
	base := ws[0].WSeq
	if live := s.pend(); len(live) > 0 {
		base = live[0].w.WSeq
	}
	s.sendBuf = appendWriteBatch(s.sendBuf[:0], s.writer, base, ws)
	what := "write"
	if s.cfg.Internal {
		what = "write_internal"
	}
	if err := s.nc.Publish(s.cfg.Subjects.ObjdbKeys(s.cfg.Node, what), s.sendBuf); err != nil {
		s.log.Debug("objdb: node-key write not sent yet", "err", err)
	}
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

func (t *tracker) matches(key string) bool {
	if t.prefix {
		return strings.HasPrefix(key, t.key)
	}
	return key == t.key
}

// trackedByLocked reports whether a tracker follows key.
func (s *Store) trackedByLocked(key string) bool {
	for _, t := range s.tracks {
		if t.matches(key) {
			return true
		}
	}
	return false
}

// notifyLocked tells the trackers of key what changed between old and
// cur (the tracked view before and after).
func (s *Store) notifyLocked(key string, old Value, hadOld bool, cur Value, hasCur bool) {
	var ev Event
	switch {
	case !hadOld && hasCur:
		ev = Event{Kind: EventAdd, Key: key, New: &cur}
	case hadOld && !hasCur:
		ev = Event{Kind: EventDelete, Key: key, Old: &old}
	case hadOld && hasCur && (old.Type != cur.Type || string(old.Data) != string(cur.Data)):
		ev = Event{Kind: EventModify, Key: key, Old: &old, New: &cur}
	default:
		return // the view did not change (a shadowed cluster key, an equal value)
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

// publish announces a change of a cluster key the way anyone can follow
// with a plain NATS subscription. The writer publishes it (not every
// node's copy), so each change is announced once; node keys are announced
// by their keeper.
func (s *Store) publish(ev Event) {
	if s.cfg.Subjects.Prefix() == "" {
		return
	}
	m := nats.NewMsg(s.cfg.Subjects.ObjdbChanged(EncodeKey(ev.Key)))
	m.Header.Set(HdrKey, ev.Key)
	m.Header.Set(HdrOp, ev.Kind.String())
	m.Header.Set(HdrNode, strconv.FormatUint(uint64(s.cfg.Node), 10))
	m.Header.Set(HdrScope, string(ScopeCluster))
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

// PruneConfig removes the keys of the node's own namespace under the
// configuration sections that keep does not hold (the file no longer says
// them), as corosync's reload removes deleted entries; it returns what
// went. nodelist.local_node_pos is not configuration and stays.
func (s *Store) PruneConfig(ctx context.Context, keep map[string]string) ([]string, error) {
	s.mu.Lock()
	var stale []string
	for k := range s.local {
		if _, ok := keep[k]; ok || k == "nodelist.local_node_pos" {
			continue
		}
		for _, p := range ConfigSections() {
			if strings.HasPrefix(k, p) {
				stale = append(stale, k)
				break
			}
		}
	}
	s.mu.Unlock()
	slices.Sort(stale)
	for _, k := range stale {
		if err := s.Delete(ctx, k); err != nil && !errors.Is(err, ErrNotExist) {
			return nil, fmt.Errorf("removing %s, which the configuration no longer has: %w", k, err)
		}
	}
	return stale, nil
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
