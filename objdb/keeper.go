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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/beat"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/services/cswire"
)

// KeeperConfig configures a node's keeper.
type KeeperConfig struct {
	// Node is whose keys these are; Bucket and Replicas the JetStream KV
	// bucket they are written behind to.
	Node     uint32
	Bucket   string
	Replicas int
	Subjects bus.Subjects
	Log      *slog.Logger
	// Heartbeat is how often an idle feed says where it stands, so that a
	// Store notices a missed record or a silent keeper within a few of
	// them (default 250 ms: a quarter of totem.token's default).
	Heartbeat time.Duration
	// LogRecords is how many applied writes the keeper keeps for Stores
	// catching up; a Store further behind reloads a snapshot.
	LogRecords int
	// StateDir is the node's state directory (JetStream's store): when its
	// filesystem is full the keeper says so.
	StateDir string
	// WriteTimeout bounds one round of writes behind to JetStream.
	WriteTimeout time.Duration
	// LocalConsumerTries is how many times the keeper makes its relay's
	// consumer again when JetStream placed it on another server (default
	// 6; negative: never, the consumer stays where JetStream put it).
	LocalConsumerTries int
	// FirstStart says that this keeper's bus is the first of the node's
	// run (not one its supervisor restarted under running layers): the
	// runtime.* keys a previous run stored describe processes that are
	// gone, so they are not loaded and are removed from the bucket, as
	// corosync starts with no runtime.* keys. A restarted bus loads them:
	// the layers that wrote them still run.
	FirstStart bool
	// Interest, when set, says whether anyone subscribes to a subject: a
	// change nobody follows on …objdb.changed is not built and published
	// (in the bus process, the server knows; elsewhere every change is).
	Interest func(subject string) bool
}

// Keeper is the authority over one node's own keys (docs/objdb.md, "node
// keys"): it runs in the node's bus process, applies the writes of every
// Store of the node in one order, publishes each applied write on the
// node's feed (which every Store of the node follows), announces changes
// on …objdb.changed.<key>, and writes the keys behind to JetStream, so that
// they survive the node and a restarted node finds them again.
//
// corosync's cmap is one map in one process; a node's keeper is that map,
// and the Stores are its readers' copies. A write is applied by the writer's
// own copy at once and by the keeper a bus hop later; it never waits for
// JetStream, which may be electing a leader or out of quorum.
type Keeper struct {
	cfg   KeeperConfig
	nc    *nats.Conn
	js    jetstream.JetStream
	log   *slog.Logger
	epoch uint64
	// ro answers which keys clients may not write, from an index built
	// once: building it per write cost the keeper most of its time.
	ro ReadOnlyKeys

	mu      sync.Mutex
	keys    map[string]Value
	seq     uint64
	records recordLog // the last LogRecords applied writes
	writers map[uint64]*writerState
	// Until the keys a previous run left in JetStream are loaded, the
	// keys written since start win over them.
	loaded  bool
	touched map[string]bool
	// out is what the publisher has yet to publish, in seq order.
	out     []applied
	outWake chan struct{}
	// dirty is what the flusher has yet to write to JetStream: the latest
	// value of each key (nil: deleted).
	dirty     map[string]dirtyKey
	dirtyWake chan struct{}
	// behind is since when JetStream has refused the writes behind.
	behind time.Time
	// replicas is the bucket's, as last opened (0: not yet); opened is
	// closed once load has opened it.
	replicas atomic.Int32
	// replicasNoted pokes raiseReplicas when the bucket is (re)opened.
	replicasNoted chan struct{}
	opened        chan struct{}
	openedOnce    sync.Once
	// closed: the keeper is stopping and applies no more writes.
	closed bool
}

// recordLog keeps the last len(buf) records, oldest first, in a ring.
type recordLog struct {
	buf   []nodeRecord
	start int // index of the oldest
	count int
}

func (l *recordLog) add(r nodeRecord) {
	if l.count < len(l.buf) {
		l.buf[(l.start+l.count)%len(l.buf)] = r
		l.count++
		return
	}
	l.buf[l.start] = r
	l.start = (l.start + 1) % len(l.buf)
}

// at is the i-th record kept, 0 the oldest.
func (l *recordLog) at(i int) nodeRecord { return l.buf[(l.start+i)%len(l.buf)] }

type applied struct {
	rec    nodeRecord
	old    Value
	hadOld bool
}

// dirtyKey is a key's latest value to store (or its deletion).
type dirtyKey struct {
	v       Value
	deleted bool
}

type writerState struct {
	next uint64 // the wseq the keeper applies next
	seen time.Time
}

// KeeperHook runs the node's keeper inside its bus process (a node.BusHooks
// entry): one keeper per node, living exactly as long as the node's bus.
func KeeperHook(ctx context.Context, srv *bus.Server, env layer.Env) error {
	nc, err := srv.Connect("corobus-objdb-keeper")
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg, err := KeeperConfigFor(env)
	if err != nil {
		return err
	}
	cfg.Interest = srv.HasInterest
	return RunKeeper(ctx, nc, cfg)
}

// KeeperConfigFor is the keeper configuration of a layer's node.
func KeeperConfigFor(env layer.Env) (KeeperConfig, error) {
	replicas, err := Replicas(env)
	if err != nil {
		return KeeperConfig{}, err
	}
	token, err := env.Config.Uint("totem.token", 1000)
	if err != nil {
		return KeeperConfig{}, err
	}
	return KeeperConfig{
		Node:      env.Node.ID,
		Bucket:    BucketName(env.Config.ClusterName()),
		Replicas:  replicas,
		Subjects:  env.Subjects,
		Log:       env.Log,
		Heartbeat: time.Duration(token) * time.Millisecond / 4,
		StateDir:  env.Config.StateDir(),
		// The supervisor counts the bus's restarts; 0 is the node's start.
		FirstStart: env.Restarts == 0,
	}, nil
}

// RunKeeper serves node cfg.Node's keys on nc until ctx ends.
func RunKeeper(ctx context.Context, nc *nats.Conn, cfg KeeperConfig) error {
	k, err := NewKeeper(nc, cfg)
	if err != nil {
		return err
	}
	return k.Run(ctx)
}

// NewKeeper builds a keeper; Run serves it.
func NewKeeper(nc *nats.Conn, cfg KeeperConfig) (*Keeper, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 250 * time.Millisecond
	}
	if cfg.LogRecords <= 0 {
		cfg.LogRecords = 8192
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.LocalConsumerTries == 0 {
		cfg.LocalConsumerTries = 6
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(cfg.WriteTimeout))
	if err != nil {
		return nil, fmt.Errorf("objdb keeper: JetStream: %w", err)
	}
	epoch := rand.Uint64() | 1 // never 0: a Store's "no epoch yet"
	return &Keeper{
		cfg: cfg, nc: nc, js: js, log: cfg.Log, epoch: epoch, ro: NewReadOnlyKeys(),
		keys: map[string]Value{}, writers: map[uint64]*writerState{}, touched: map[string]bool{},
		records: recordLog{buf: make([]nodeRecord, cfg.LogRecords)},
		opened:  make(chan struct{}), outWake: make(chan struct{}, 1), dirty: map[string]dirtyKey{}, dirtyWake: make(chan struct{}, 1),
		replicasNoted: make(chan struct{}, 1),
	}, nil
}

// Run serves the keeper until ctx ends: writes, sync requests, the feed,
// the load of the keys a previous run left, and the writes behind.
func (k *Keeper) Run(ctx context.Context) error {
	subjects := k.cfg.Subjects
	node := k.cfg.Node
	// Writes come on two subjects: "write", where read-only keys are
	// refused (CS_ERR_ACCESS), and "write_internal", for the Stores of the
	// layers that maintain them, which only their bus users may publish
	// to (bus.Access.ObjdbStore). A Store sends all its writes on one.
	var writeSubs []*nats.Subscription
	stopWrites := func() {
		for _, ws := range writeSubs {
			_ = ws.Unsubscribe()
		}
		writeSubs = nil
		k.mu.Lock()
		k.closed = true
		k.mu.Unlock()
	}
	defer stopWrites()
	for _, w := range []struct {
		what     string
		internal bool
	}{{"write", false}, {"write_internal", true}} {
		ws, err := k.nc.Subscribe(subjects.ObjdbKeys(node, w.what), func(m *nats.Msg) { k.onWrite(m, w.internal) })
		if err != nil {
			return fmt.Errorf("objdb keeper: subscribing to writes: %w", err)
		}
		writeSubs = append(writeSubs, ws)
		// A keeper that falls behind queues rather than drops; a drop
		// would cost the writers a resend.
		_ = ws.SetPendingLimits(1<<20, 512<<20)
	}
	ss, err := k.nc.Subscribe(subjects.ObjdbKeys(node, "sync"), k.onSync)
	if err != nil {
		return fmt.Errorf("objdb keeper: subscribing to sync requests: %w", err)
	}
	defer func() { _ = ss.Unsubscribe() }()
	if err := k.nc.Flush(); err != nil {
		return fmt.Errorf("objdb keeper: %w", err)
	}
	k.log.Info("objdb keeper serving the node's keys", "node", node, "epoch", strconv.FormatUint(k.epoch, 16))

	var wg sync.WaitGroup
	defer wg.Wait()
	// The workers stop only once the keeper takes no more writes: the
	// publisher's last publish and the flusher's last round then hold
	// every write it applied. A write applied after them was stored but
	// never published; its writer, never confirmed, resent it to the next
	// keeper, which applied it again over the value it had loaded — the
	// node's trackers saw 47 → 50 → 48 (TestNodeFeedSurvivesANewKeeper).
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	wg.Add(5)
	go func() { defer wg.Done(); k.publisher(wctx) }()
	go func() { defer wg.Done(); k.relayCluster(wctx) }()
	go func() { defer wg.Done(); k.flusher(wctx) }()
	go func() { defer wg.Done(); k.load(wctx) }()
	go func() { defer wg.Done(); k.raiseReplicas(wctx) }()
	<-ctx.Done()
	stopWrites()
	return nil
}

// onWrite applies one batch of one writer's writes, in its wseq order.
// A batch that starts past what the keeper expects of its writer (a lost
// batch) is dropped: the writer resends from its oldest unconfirmed write.
func (k *Keeper) onWrite(m *nats.Msg, internal bool) {
	writer, base, ws, err := decodeWriteBatch(m.Data)
	if err != nil {
		k.log.Warn("objdb keeper: ignoring a malformed write batch", "err", err)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return // stopping: the writer sends it to the next keeper
	}
	w := k.writers[writer]
	if w == nil {
		w = &writerState{next: base}
		k.writers[writer] = w
		k.forgetIdleWritersLocked()
	}
	w.seen = time.Now()
	if base > w.next {
		// Everything below base the writer has seen applied (by a keeper
		// of an earlier epoch): nothing to wait for.
		w.next = base
	}
	n := len(k.out)
	for _, x := range ws {
		if x.WSeq < w.next {
			continue // applied already: a resend
		}
		if x.WSeq > w.next {
			break // a batch went missing; the writer resends
		}
		w.next++
		k.applyLocked(writer, x, internal)
	}
	if len(k.out) > n {
		select {
		case k.outWake <- struct{}{}:
		default:
		}
	}
}

// forgetIdleWritersLocked drops writers not heard from for ten minutes: a
// Store that went away. One that comes back sends its base again.
func (k *Keeper) forgetIdleWritersLocked() {
	if len(k.writers) < 64 {
		return
	}
	for id, w := range k.writers {
		if time.Since(w.seen) > 10*time.Minute {
			delete(k.writers, id)
		}
	}
}

func (k *Keeper) applyLocked(writer uint64, w nodeWrite, internal bool) {
	k.seq++
	rec := nodeRecord{Seq: k.seq, Writer: writer, WSeq: w.WSeq, Key: w.Key, Status: cswire.OK}
	old, had := k.keys[w.Key]
	if !internal && k.ro.Has(w.Key) {
		// Refused, and recorded so: the writer's copy drops its own
		// write when it sees the record.
		rec.Status = cswire.ErrAccess
		rec.New = old
		k.addLocked(rec, old, had)
		return
	}
	switch w.Op {
	case opSet:
		v := w.Value
		if had && old.Type == v.Type && string(old.Data) == string(v.Data) {
			rec.New = old
			break
		}
		k.keys[w.Key] = v
		rec.New = v
		rec.Kind = EventAdd
		if had {
			rec.Kind = EventModify
		}
	case opDelete:
		if had || !k.loaded {
			// Before the load, a key absent here may be stored, or held
			// by copies of the previous keeper (opRestore): the delete,
			// written since start, is recorded as one so that every
			// copy drops the key, and it wins over the stored value.
			delete(k.keys, w.Key)
			rec.Kind = EventDelete
		}
	case opRestore:
		// A copy that ran under the previous keeper (this bus restarted
		// under running layers) hands over a key it holds while this
		// keeper has not loaded the node's stored keys (JetStream
		// without a quorum: a lone node). The copy's value is the
		// previous keeper's latest, newer than any stored one: taken if
		// the key is untouched since start, and stored like a write.
		// Otherwise the record carries what the keeper has (rec.New,
		// none for an absent key), which the copy takes.
		if had || k.loaded || k.touched[w.Key] || (k.cfg.FirstStart && strings.HasPrefix(w.Key, "runtime.")) {
			rec.New = old
			break
		}
		k.keys[w.Key] = w.Value
		rec.New = w.Value
		rec.Kind = EventAdd
	case opAdjust:
		if !had {
			rec.Status = cswire.ErrNotExist
			break
		}
		nv, err := old.adjust(w.Step)
		if err != nil {
			rec.Status = cswire.ErrInvalidParam
			rec.New = old
			break
		}
		k.keys[w.Key] = nv
		rec.New = nv
		if string(nv.Data) != string(old.Data) {
			rec.Kind = EventModify
		}
	default:
		rec.Status = cswire.ErrInvalidParam
	}
	k.addLocked(rec, old, had)
}

// addLocked logs an applied record and queues it for the feed and, when
// it changed the key, for JetStream.
func (k *Keeper) addLocked(rec nodeRecord, old Value, had bool) {
	k.records.add(rec)
	k.out = append(k.out, applied{rec: rec, old: old, hadOld: had})
	if rec.Kind == 0 {
		return
	}
	if !k.loaded {
		k.touched[rec.Key] = true
	}
	k.dirty[rec.Key] = dirtyKey{v: rec.New, deleted: rec.Kind == EventDelete}
	select {
	case k.dirtyWake <- struct{}{}:
	default:
	}
}

// publishWindow is how often, at most, the keeper publishes the feed
// under a stream of writes; flushEvery how often, at most, it starts a
// round of writes behind to JetStream (the latest value of each key
// changed since the last round). A lone write is published and stored
// at once; the two bound only a stream of them.
//
// Both are paid per window and per round whatever the write rate: on
// three nodes each window is a feed message to every copy of the node
// and each round an R3 write every bus stores and replicates. On a
// 2-vCPU machine where every wake-up is dear (issue 16, 2 Dec) windows
// of 5 ms and rounds of 20 ms left the three buses at 14–19 µs of CPU per
// set of eight cmap clients and the sets at 0.58–0.67 of corosync's
// rate; 20 ms windows and 100 ms rounds 3.8–7.3 µs and 0.74–0.95
// (docs/objdb.md, the durability that follows).
const (
	publishWindow = 20 * time.Millisecond
	flushEvery    = 100 * time.Millisecond
)

// maxFrame keeps every feed message and sync reply well under NATS's
// default 1 MiB payload limit.
const maxFrame = 512 << 10

// KeeperIdleHeartbeat is how often a keeper with nothing to publish
// says it is alive once the heartbeats that follow its last publish
// (fastBeats of them, every KeeperConfig.Heartbeat) have told every copy
// where the feed stands. A copy counts on it (nodeSilence): a keeper at
// rest costs every copy of its node a message every 5 s, not 4 a second.
const KeeperIdleHeartbeat = 5 * time.Second

// idleWait is how long a keeper at rest waits for its next heartbeat:
// until the wall clock's next multiple of KeeperIdleHeartbeat (bus/beat),
// at most that long. The node feed's and the relay's heartbeats then go
// out together, with the node's component instances' and its loader
// clients' (loader.DefaultInterval, loader.DefaultHoldInterval): every
// process of the node wakes once every 5 s at rest for all of them.
func idleWait(heartbeat time.Duration) time.Duration {
	return time.Until(beat.Next(time.Now(), max(KeeperIdleHeartbeat, heartbeat)))
}

// fastBeats is how many heartbeats follow a publish at the Heartbeat
// period: a copy that lost the last message of a burst finds the hole
// within them.
const fastBeats = 4

// publisher publishes what the keeper applied, in order: on the node feed
// (batched: a burst of writes is one message) and each change on its
// …objdb.changed.<key> subject; and a heartbeat when idle: every
// Heartbeat for fastBeats after a publish, then every KeeperIdleHeartbeat.
func (k *Keeper) publisher(ctx context.Context) {
	feed := k.cfg.Subjects.ObjdbKeys(k.cfg.Node, "feed")
	tick := time.NewTimer(k.cfg.Heartbeat)
	defer tick.Stop()
	beats := 0 // heartbeats since the last publish
	var buf []byte
	idle := true
	var lastPub time.Time
	followed := map[string]string{} // key → its changed subject, "" if nobody follows it
	var spare []applied             // the out array published last time, reused
	for {
		stopping := false
		select {
		case <-ctx.Done():
			// Publish what was applied before stopping: the copies of
			// the node then know every write the next keeper may load.
			stopping = true
		case <-k.outWake:
		case <-tick.C:
			if !idle {
				idle = true
				tick.Reset(k.cfg.Heartbeat)
				continue
			}
			k.mu.Lock()
			seq := k.seq
			pending := len(k.out)
			k.mu.Unlock()
			if pending == 0 {
				buf = appendRecords(buf[:0], k.epoch, seq, nil)
				if err := k.nc.Publish(feed, buf); err != nil {
					k.log.Debug("objdb keeper: heartbeat not published", "err", err)
				}
				beats++
				if beats < fastBeats {
					tick.Reset(k.cfg.Heartbeat)
				} else {
					tick.Reset(idleWait(k.cfg.Heartbeat))
				}
				continue
			}
		}
		if idle || beats > 0 {
			// Back from rest: heartbeats at the fast period again.
			tick.Reset(k.cfg.Heartbeat)
		}
		beats = 0
		idle = false
		// A stream of writes is published a batch per window; a lone
		// write at once.
		if wait := publishWindow - time.Since(lastPub); wait > 0 && !stopping {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				stopping = true
			}
		}
		lastPub = time.Now()
		k.mu.Lock()
		out := k.out
		k.out = spare[:0]
		k.mu.Unlock()
		spare = out
		for len(out) > 0 {
			n, size := 0, 0
			recs := make([]nodeRecord, 0, len(out))
			for n < len(out) && (n == 0 || size < maxFrame) {
				recs = append(recs, out[n].rec)
				size += 40 + len(out[n].rec.Key) + len(out[n].rec.New.Data)
				n++
			}
			buf = appendRecords(buf[:0], k.epoch, recs[len(recs)-1].Seq, recs)
			if err := k.nc.Publish(feed, buf); err != nil {
				// The Stores find the hole at the next heartbeat and
				// fetch it.
				k.log.Debug("objdb keeper: feed message not published", "err", err)
			}
			// A batch often changes one key many times: its subject and
			// whether anyone follows it are worked out once.
			clear(followed)
			for _, a := range out[:n] {
				if a.rec.Kind != 0 {
					k.announce(a, followed)
				}
			}
			out = out[n:]
		}
		if stopping {
			_ = k.nc.Flush()
			return
		}
	}
}

// announce publishes a change as every writer used to: on
// …objdb.changed.<key>, headers as docs/subjects.md gives them.
func (k *Keeper) announce(a applied, followed map[string]string) {
	rec := a.rec
	subject, known := followed[rec.Key]
	if !known {
		subject = k.cfg.Subjects.ObjdbChanged(EncodeKey(rec.Key))
		if k.cfg.Interest != nil && !k.cfg.Interest(subject) {
			subject = ""
		}
		followed[rec.Key] = subject
	}
	if subject == "" {
		return
	}
	m := nats.NewMsg(subject)
	m.Header.Set(HdrKey, rec.Key)
	m.Header.Set(HdrOp, rec.Kind.String())
	m.Header.Set(HdrNode, strconv.FormatUint(uint64(k.cfg.Node), 10))
	m.Header.Set(HdrScope, string(ScopeNode))
	if rec.Kind != EventDelete {
		m.Header.Set(HdrType, rec.New.Type.String())
		m.Data = rec.New.Data
	}
	if a.hadOld {
		m.Header.Set(HdrOldType, a.old.Type.String())
		m.Header.Set(HdrOld, base64.StdEncoding.EncodeToString(a.old.Data))
	}
	if err := k.nc.PublishMsg(m); err != nil {
		k.log.Debug("objdb keeper: change event not published", "key", rec.Key, "err", err)
	}
}

// onSync answers a Store catching up: the records it lacks when the log
// still has them, else a snapshot page.
func (k *Keeper) onSync(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	q, err := decodeSyncRequest(m.Data)
	if err != nil {
		// Said at once, in the micro convention of every request/reply
		// subject, rather than left to the requester's timeout.
		k.log.Warn("objdb keeper: refusing a malformed sync request", "err", err)
		_ = bus.RespondBadRequest(m, "malformed keys.sync request: "+err.Error(), nil)
		return
	}
	k.mu.Lock()
	rep := syncReply{Epoch: k.epoch, Seq: k.seq, Loaded: k.loaded}
	if w := k.writers[q.Writer]; w != nil {
		rep.WriterNext = w.next
	}
	first := k.seq + 1 - uint64(k.records.count) // seq of the oldest record kept
	if !q.Snapshot && q.Epoch == k.epoch && q.From+1 >= first && q.From <= k.seq {
		rep.Kind = syncRecords
		var rs []nodeRecord
		size := 0
		for i := int(q.From + 1 - first); i < k.records.count && (len(rs) == 0 || size < maxFrame); i++ {
			r := k.records.at(i)
			rs = append(rs, r)
			size += 40 + len(r.Key) + len(r.New.Data)
		}
		rep.Records = feedMsg{Epoch: k.epoch, Last: q.From + uint64(len(rs)), Records: rs}
	} else {
		rep.Kind = syncSnapshot
		keys := slices.Sorted(maps.Keys(k.keys))
		i, _ := slices.BinarySearch(keys, q.After)
		if i < len(keys) && keys[i] == q.After {
			i++
		}
		size := 0
		for ; i < len(keys) && size < maxFrame; i++ {
			v := k.keys[keys[i]]
			rep.Keys = append(rep.Keys, Entry{Key: keys[i], Value: v, Scope: ScopeNode})
			size += 8 + len(keys[i]) + len(v.Data)
		}
		rep.More = i < len(keys)
	}
	k.mu.Unlock()
	if err := m.Respond(appendSyncReply(nil, rep)); err != nil {
		k.log.Debug("objdb keeper: sync reply not sent", "err", err)
	}
}

// load brings in the keys a previous run of the node left in JetStream,
// as corosync would find them... had it kept any: its cmap starts empty,
// and corobus's keeps what the node wrote at run time across a restart.
// Keys written since start win; on the node's first start (FirstStart)
// the previous run's runtime.* keys are dropped. It retries until
// JetStream answers (short retries: a start waits for it, see
// firstLookupWait): a node that starts alone, without a quorum, serves its
// new keys meanwhile.
func (k *Keeper) load(ctx context.Context) {
	o := newBucketOpener(k.js, k.cfg.Bucket, k.cfg.Replicas, false)
	var slow slowNotice
	slow.start()
	pause := firstRetryPause
	for {
		kv, got, err := o.wait(ctx, func(_ int, err error) {
			slow.note(k.log, "objdb keeper: the node's stored keys cannot be read yet (JetStream not ready); serving new writes meanwhile", err)
		})
		if err != nil {
			return // ctx ended
		}
		k.noteReplicas(got)
		k.openedOnce.Do(func() { close(k.opened) })
		entries, err := k.readBehind(ctx, kv)
		if err == nil {
			k.mu.Lock()
			n, dropped := 0, 0
			for _, e := range entries {
				if k.touched[e.Key] {
					continue
				}
				if _, ok := k.keys[e.Key]; ok {
					continue
				}
				if k.cfg.FirstStart && strings.HasPrefix(e.Key, "runtime.") {
					// A previous run's state (runtime.members.<id> of a
					// node that has not joined this run, saying
					// "joined"): removed, so that a later restart of the
					// bus does not bring it back either.
					k.dirty[e.Key] = dirtyKey{deleted: true}
					dropped++
					continue
				}
				k.keys[e.Key] = e.Value
				k.seq++
				k.addLoadedLocked(nodeRecord{Seq: k.seq, Kind: EventAdd, Status: cswire.OK, Key: e.Key, New: e.Value})
				n++
			}
			k.loaded = true
			k.touched = nil
			k.mu.Unlock()
			select {
			case k.outWake <- struct{}{}:
			default:
			}
			if dropped > 0 {
				select {
				case k.dirtyWake <- struct{}{}:
				default:
				}
			}
			k.log.Info("objdb keeper: keys of the node's previous run loaded", "stored", len(entries), "restored", n, "dropped_runtime", dropped,
				"replicas", got, "after", time.Since(slow.start()).Round(time.Millisecond))
			return
		}
		slow.note(k.log, "objdb keeper: the node's stored keys cannot be read yet; serving new writes meanwhile", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, maxRetryPause)
	}
}

// slowNotice logs a condition expected for a moment at start (JetStream
// electing its first leaders) only once it lasts: first after
// slowNoticeAfter, then every slowNoticeEvery.
type slowNotice struct {
	since, last time.Time
}

const (
	slowNoticeAfter = 5 * time.Second
	slowNoticeEvery = 30 * time.Second
)

func (s *slowNotice) start() time.Time {
	if s.since.IsZero() {
		s.since = time.Now()
	}
	return s.since
}

func (s *slowNotice) note(log *slog.Logger, msg string, err error) {
	since := s.start()
	if time.Since(since) < slowNoticeAfter || time.Since(s.last) < slowNoticeEvery {
		return
	}
	s.last = time.Now()
	log.Warn(msg, "for", time.Since(since).Round(time.Second), "err", err)
}

func (k *Keeper) isOpened() bool {
	select {
	case <-k.opened:
		return true
	default:
		return false
	}
}

// noteReplicas records the bucket's replicas as last opened.
func (k *Keeper) noteReplicas(r int) {
	k.replicas.Store(int32(r))
	select {
	case k.replicasNoted <- struct{}{}:
	default:
	}
}

// raiseReplicas raises the bucket to the configured replicas once the
// cluster has the servers for them: a cluster started with a majority of
// its nodes (two of three) created it with fewer (openBucket). Every
// keeper tries; the first to succeed does it for all.
func (k *Keeper) raiseReplicas(ctx context.Context) {
	o := newBucketOpener(k.js, k.cfg.Bucket, k.cfg.Replicas, false)
	// A timer only while the bucket is short of replicas: a bucket as
	// configured (every one-node cluster's, every formed cluster's)
	// costs no wake-up until it is opened again.
	tick := time.NewTimer(raiseEvery)
	defer tick.Stop()
	for {
		cur := int(k.replicas.Load())
		var due <-chan time.Time
		if cur != 0 && cur < k.cfg.Replicas {
			due = tick.C
		}
		select {
		case <-ctx.Done():
			return
		case <-k.replicasNoted:
			tick.Reset(raiseEvery)
			continue
		case <-due:
			tick.Reset(raiseEvery)
		}
		_, got, err := o.open(ctx)
		if err != nil || got <= cur {
			continue
		}
		if k.replicas.CompareAndSwap(int32(cur), int32(got)) {
			k.log.Info("objdb keeper: the bucket's replicas raised now that the cluster has the servers for them", "bucket", k.cfg.Bucket, "from", cur, "to", got)
		}
	}
}

// raiseEvery is how often a keeper whose bucket has fewer replicas than
// configured tries to raise them.
const raiseEvery = 2 * time.Second

// addLoadedLocked logs and publishes a key loaded from JetStream without
// writing it back there.
func (k *Keeper) addLoadedLocked(rec nodeRecord) {
	k.records.add(rec)
	k.out = append(k.out, applied{rec: rec})
}

// readBehind reads the node's keys from the bucket.
func (k *Keeper) readBehind(ctx context.Context, kv jetstream.KeyValue) ([]Entry, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchFiltered(wctx, []string{nodeScope(k.cfg.Node) + ".>"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	// The watch is a push consumer: one whose deliveries stop (its stream
	// changed leader right after it was made, as a bucket just created or
	// raised does) would be noticed by nats.go only after two missed 5 s
	// heartbeats. A read that makes no progress for readIdle is tried
	// again with a new watch instead.
	idle := time.NewTimer(readIdle)
	defer idle.Stop()
	var out []Entry
	for {
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("reading the node's keys: %w", wctx.Err())
		case <-idle.C:
			return nil, fmt.Errorf("reading the node's keys: nothing delivered for %s after %d keys", readIdle, len(out))
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("reading the node's keys: watch closed")
			}
			if e == nil {
				return out, nil
			}
			idle.Reset(readIdle)
			_, key, err := splitKVKey(e.Key())
			if err != nil {
				continue
			}
			v, err := decodeValue(e.Value())
			if err != nil {
				continue
			}
			out = append(out, Entry{Key: key, Value: v, Scope: ScopeNode})
		}
	}
}

// readIdle is how long reading the node's stored keys may go without a
// delivery before it starts again.
const readIdle = 2 * time.Second

// flusher writes the node's keys behind to JetStream: the latest value of
// every key changed since the last round, one round at a time (so one
// write per key in flight and no older value can land after a newer one).
// A round JetStream refuses is retried with the then-latest values.
func (k *Keeper) flusher(ctx context.Context) {
	wait := 100 * time.Millisecond
	bucketReady := false
	o := newBucketOpener(k.js, k.cfg.Bucket, k.cfg.Replicas, false)
	for {
		select {
		case <-ctx.Done():
			// A keeper stopping (its bus shutting down) stores what it
			// has first, within WriteTimeout.
			fctx, cancel := context.WithTimeout(context.Background(), k.cfg.WriteTimeout)
			defer cancel()
			if bucketReady || k.isOpened() || k.ensureBucket(fctx, o) == nil {
				if err := k.flushRound(fctx); err != nil {
					k.log.Warn("objdb keeper: stopping with node keys not stored in JetStream", "err", err)
				}
			}
			return
		case <-k.dirtyWake:
		}
		if !bucketReady {
			// load opens the bucket: one create request per keeper, not
			// two racing (JetStream may leave the second unanswered).
			select {
			case <-k.opened:
				bucketReady = true
			case <-ctx.Done():
				continue
			}
		}
		started := time.Now()
		if err := k.flushRound(ctx); err != nil {
			if ctx.Err() != nil {
				// The stop cut the round short; JetStream did not
				// refuse it. The last round, at the top, stores what
				// it can and says what it could not: "not yet stored
				// … context canceled" at every node stop with a round
				// in flight said the keeper was behind when it was not.
				continue
			}
			k.noteBehind(err)
			k.rewake(ctx, &wait)
			continue
		}
		k.noteCaughtUp()
		wait = 100 * time.Millisecond
		select {
		case <-ctx.Done():
		case <-time.After(flushEvery - time.Since(started)):
		}
	}
}

func (k *Keeper) ensureBucket(ctx context.Context, o *bucketOpener) error {
	_, got, err := o.open(ctx)
	if err == nil {
		k.noteReplicas(got)
	}
	return err
}

// flushRound writes every key changed since the last round; what
// JetStream refuses goes back to dirty unless a newer value is there.
func (k *Keeper) flushRound(ctx context.Context) error {
	prefix := "$KV." + k.cfg.Bucket + "."
	scope := nodeScope(k.cfg.Node)
	k.mu.Lock()
	round := k.dirty
	k.dirty = map[string]dirtyKey{}
	k.mu.Unlock()
	if len(round) == 0 {
		return nil
	}
	type inflight struct {
		key string
		f   jetstream.PubAckFuture
	}
	var fs []inflight
	var failed []string
	var lastErr error
	for key, v := range round {
		m := nats.NewMsg(prefix + kvKey(scope, key))
		if v.deleted {
			m.Header.Set(kvOperationHdr, kvOpDelete)
		} else {
			m.Data = v.v.encode()
		}
		f, err := k.js.PublishMsgAsync(m)
		if err != nil {
			failed, lastErr = append(failed, key), err
			continue
		}
		fs = append(fs, inflight{key, f})
	}
	for _, x := range fs {
		select {
		case <-x.f.Ok():
		case err := <-x.f.Err():
			failed, lastErr = append(failed, x.key), err
		case <-ctx.Done():
			failed, lastErr = append(failed, x.key), ctx.Err()
		}
	}
	if len(failed) == 0 {
		return nil
	}
	k.mu.Lock()
	for _, key := range failed {
		if _, newer := k.dirty[key]; !newer {
			k.dirty[key] = round[key]
		}
	}
	k.mu.Unlock()
	return fmt.Errorf("%d of %d keys not stored: %w", len(failed), len(round), lastErr)
}

// rewake schedules the next round after a failed one, backing off to 2 s.
func (k *Keeper) rewake(ctx context.Context, wait *time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(*wait):
	}
	*wait = min(2**wait, 2*time.Second)
	select {
	case k.dirtyWake <- struct{}{}:
	default:
	}
}

func (k *Keeper) noteBehind(err error) {
	k.mu.Lock()
	first := k.behind.IsZero()
	if first {
		k.behind = time.Now()
	}
	n := len(k.dirty)
	k.mu.Unlock()
	if first {
		if why, full := NoSpace(k.cfg.StateDir, err); full {
			k.log.Warn("objdb keeper: node keys not stored in JetStream: "+why+" (served meanwhile from memory; stored once space is freed)", "pending", n, "err", err)
			return
		}
		k.log.Warn("objdb keeper: node keys not yet stored in JetStream (served meanwhile; stored when JetStream takes writes again)", "pending", n, "err", err)
	}
}

func (k *Keeper) noteCaughtUp() {
	k.mu.Lock()
	since := k.behind
	k.behind = time.Time{}
	k.mu.Unlock()
	if !since.IsZero() {
		k.log.Info("objdb keeper: node keys stored in JetStream again", "after", time.Since(since).Round(time.Millisecond))
	}
}
