package objdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/services/cswire"
)

// followNode keeps the copy's node keys following the node's keeper until
// ctx ends: the feed in order, a missed record (a hole in the sequence, or
// a heartbeat further on than the copy) fetched back, a silent keeper
// (nodeSilence without a heartbeat) or a lost connection to the bus
// reported and asked again, a new keeper (a new epoch: the bus restarted)
// reloaded, and own writes the keeper has not confirmed sent again. loaded
// is closed once the first load is done.
func (s *Store) followNode(ctx context.Context, loaded chan<- struct{}) {
	ch := make(chan *nats.Msg, 8192)
	sub, err := s.nc.ChanSubscribe(s.cfg.Subjects.ObjdbKeys(s.cfg.Node, "feed"), ch)
	if err != nil {
		s.setFeedState(&s.nstate, "node", false, fmt.Sprintf("node feed: subscribing: %v", err))
		<-ctx.Done()
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(1<<20, 512<<20)
	if err := s.nc.Flush(); err != nil {
		s.log.Debug("objdb: flushing the node feed subscription", "err", err)
	}
	// The keeper lives in the bus process this copy is connected to: the
	// bus going away (the keeper with it) is the connection's loss, told
	// at once; a new keeper behind a reconnection is found by the sync
	// that follows it. Silence is left to find a keeper that hangs in a
	// live bus, which at rest heartbeats every KeeperIdleHeartbeat.
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED)
	defer s.nc.RemoveStatusListener(status)
	silence := s.nodeSilence()
	hb := max(s.cfg.FeedTimeout/4, 20*time.Millisecond)
	resendAfter := max(s.cfg.FeedTimeout/2, 50*time.Millisecond)
	// One timer: every hb while the copy must sync (retrying it) or has
	// writes the keeper has not confirmed, else when the keeper would be
	// silent for nodeSilence if nothing came meanwhile — not every hb: at
	// rest the keeper's heartbeats are the only wake-ups. Unconfirmed
	// own writes are looked at as feed messages come and when the timer
	// fires.
	check := time.NewTimer(hb)
	defer check.Stop()
	needSync := true
	signalled := false
	var lastHeard, lastResend time.Time
	var refs []recordRef // the feed message being applied; its array is reused
	for {
		if needSync {
			if err := s.syncNode(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.setFeedState(&s.nstate, "node", false, err.Error())
			} else {
				needSync = false
				lastHeard = time.Now()
				s.setFeedState(&s.nstate, "node", true, "")
				if !signalled {
					signalled = true
					close(loaded)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case m := <-ch:
			lastHeard = time.Now()
			if lastHeard.Sub(lastResend) >= hb {
				lastResend = lastHeard
				s.resendPending(resendAfter)
			}
			if isRelayFrame(m.Data) {
				select {
				case s.relayCh <- m:
				default:
					// followCluster finds the hole at the next frame.
				}
				continue
			}
			if needSync {
				continue // the next sync gets it
			}
			epoch, last, rs, err := decodeFeedRefs(m.Data, refs)
			refs = rs
			if err != nil {
				s.log.Warn("objdb: ignoring a malformed node feed message", "err", err)
				continue
			}
			if why := s.applyFeed(epoch, last, refs); why != "" {
				needSync = true
				s.setFeedState(&s.nstate, "node", false, why)
			}
		case st, ok := <-status:
			if !ok {
				status = nil
				continue
			}
			if st != nats.CONNECTED && !needSync {
				s.setFeedState(&s.nstate, "node", false, "node feed lost: disconnected from the bus")
			}
			// Back on the bus (maybe a new one, with a new keeper): sync.
			needSync = true
			check.Reset(hb)
		case now := <-check.C:
			wait := hb
			if !needSync {
				silent := now.Sub(lastHeard)
				if silent > silence {
					needSync = true
					s.setFeedState(&s.nstate, "node", false,
						fmt.Sprintf("node feed lost: nothing from the node's keeper for %s", silent.Round(time.Millisecond)))
				} else if !s.hasPending() {
					wait = silence - silent + time.Millisecond
				}
			}
			lastResend = now
			s.resendPending(resendAfter)
			check.Reset(wait)
		}
	}
}

// nodeSilence is how long the node feed may stay silent before the copy
// counts its keeper lost: FeedTimeout past two of the keeper's idle
// heartbeats (one late heartbeat, on a loaded machine, is not a hung
// keeper).
func (s *Store) nodeSilence() time.Duration { return s.cfg.FeedTimeout + 2*KeeperIdleHeartbeat }

// hasPending reports whether own writes wait for the keeper's confirmation.
func (s *Store) hasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pend()) > 0
}

// applyFeed applies a feed message. It returns why the copy must sync
// instead ("" when applied): a new keeper, or records it missed.
func (s *Store) applyFeed(epoch, last uint64, refs []recordRef) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.nepoch {
		return fmt.Sprintf("node feed: the node's keeper restarted (epoch %x, the copy has %x)", epoch, s.nepoch)
	}
	for i := range refs {
		ref := &refs[i]
		if ref.Seq <= s.nseq {
			continue
		}
		if ref.Seq != s.nseq+1 {
			return fmt.Sprintf("node feed: record %d after %d; fetching the gap", ref.Seq, s.nseq)
		}
		s.applyRecordLocked(nil, s.keepRecordLocked(ref))
	}
	if last > s.nseq {
		return fmt.Sprintf("node feed: the keeper is at %d, the copy at %d; fetching the gap", last, s.nseq)
	}
	return ""
}

// keepRecordLocked is a feed record the copy may keep. A record of this
// Store's own write, applied as it was sent, takes the key and value the
// write holds already (what Set was given: the copy reads it already,
// through its overlay); any other record's key and value are copied out
// of the frame.
func (s *Store) keepRecordLocked(ref *recordRef) nodeRecord {
	rec := nodeRecord{Seq: ref.Seq, Writer: ref.Writer, WSeq: ref.WSeq, Kind: ref.Kind, Status: ref.Status}
	if ref.Writer == s.writer {
		if live := s.pend(); len(live) > 0 && ref.WSeq >= live[0].w.WSeq {
			// pend holds consecutive wseqs, oldest first.
			if i := ref.WSeq - live[0].w.WSeq; i < uint64(len(live)) && live[i].w.WSeq == ref.WSeq {
				w := &live[i].w
				if w.Key == string(ref.Key) {
					rec.Key = w.Key
					if w.Value.Type == ref.Type && bytes.Equal(w.Value.Data, ref.Data) {
						rec.New = w.Value
						return rec
					}
				}
			}
		}
	}
	if rec.Key == "" {
		rec.Key = string(ref.Key)
	}
	rec.New = Value{Type: ref.Type, Data: append([]byte(nil), ref.Data...)}
	return rec
}

// rebuild is a snapshot of the node's keys being brought up to date
// before it replaces the copy's.
type rebuild struct {
	keys  map[string]Value
	epoch uint64
	seq   uint64
	mine  []nodeRecord // this Store's writes among the replayed records
}

// applyRecordLocked applies a keeper record: to the copy (rb nil), where
// trackers hear of the change and this Store's writes up to it are
// confirmed, or to a rebuild.
func (s *Store) applyRecordLocked(rb *rebuild, rec nodeRecord) {
	if rb != nil {
		switch rec.Kind {
		case EventAdd, EventModify:
			rb.keys[rec.Key] = rec.New
		case EventDelete:
			delete(rb.keys, rec.Key)
		}
		rb.seq = rec.Seq
		if rec.Writer == s.writer {
			rb.mine = append(rb.mine, rec)
		}
		return
	}
	// Trackers hear of the change: the views before and after are
	// looked at only when one follows the key.
	tracked := s.nloaded && rec.Kind != 0 && s.trackedByLocked(rec.Key)
	var old Value
	var hadOld bool
	if tracked {
		old, hadOld = s.trackedLocked(rec.Key)
	}
	switch rec.Kind {
	case EventAdd, EventModify:
		s.local[rec.Key] = rec.New
	case EventDelete:
		delete(s.local, rec.Key)
	case 0:
		if rec.Writer == s.writer && rec.Status == cswire.OK && s.pendingOpLocked(rec.WSeq) == opRestore {
			// A key this copy handed to a new keeper that did not take
			// it: the keeper's value (none: absent) is the node's.
			s.nseq = rec.Seq
			s.swapKeyLocked(rec.Key, rec.New, rec.New.Type != 0)
			s.confirmLocked(rec.WSeq, &rec)
			s.changed.Broadcast()
			return
		}
	}
	s.nseq = rec.Seq
	if tracked {
		cur, hasCur := s.trackedLocked(rec.Key)
		s.notifyLocked(rec.Key, old, hadOld, cur, hasCur)
	}
	if rec.Writer == s.writer {
		s.confirmLocked(rec.WSeq, &rec)
	}
	s.changed.Broadcast()
}

// pendingOpLocked is the op of this Store's unconfirmed write wseq (0:
// none such).
func (s *Store) pendingOpLocked(wseq uint64) uint8 {
	live := s.pend()
	if len(live) == 0 || wseq < live[0].w.WSeq {
		return 0
	}
	// pend holds consecutive wseqs, oldest first.
	if i := wseq - live[0].w.WSeq; i < uint64(len(live)) && live[i].w.WSeq == wseq {
		return live[i].w.Op
	}
	return 0
}

// confirmLocked drops this Store's pending writes up to wseq: the keeper
// has applied them. rec is the record of wseq itself when known (an
// adjust's result), nil when a snapshot confirmed them together.
func (s *Store) confirmLocked(wseq uint64, rec *nodeRecord) {
	live := s.pend()
	n := 0
	for n < len(live) && live[n].w.WSeq <= wseq {
		p := live[n]
		n++
		if o := s.localOver[p.w.Key]; o != nil && (p.w.Op == opSet || p.w.Op == opDelete) {
			if o.n--; o.n == 0 {
				delete(s.localOver, p.w.Key)
			}
		}
		if p.done != nil {
			switch {
			case rec != nil && rec.WSeq == p.w.WSeq:
				p.done <- *rec
			default:
				// Applied, but its record went by in a snapshot: report
				// the value the copy has now.
				v, ok := s.trackedLocked(p.w.Key)
				st := cswire.OK
				if !ok {
					st = cswire.ErrNotExist
				}
				p.done <- nodeRecord{Status: st, Key: p.w.Key, New: v}
			}
		}
	}
	if n == 0 {
		return
	}
	clear(live[:n])
	s.phead += n
	s.changed.Broadcast() // a writer may wait for room (maxUnconfirmed)
	// Under a stream of writes pending holds a window's worth, confirmed
	// a record at a time: keep its array, and move what is left to its
	// front once the dead part is the larger.
	switch {
	case s.phead == len(s.pendBuf):
		s.pendBuf, s.phead = s.pendBuf[:0], 0
	case s.phead > 64 && 2*s.phead > len(s.pendBuf):
		m := copy(s.pendBuf, s.pendBuf[s.phead:])
		clear(s.pendBuf[m:])
		s.pendBuf, s.phead = s.pendBuf[:m], 0
	}
}

// resendPending sends every unconfirmed write again, in order, when the
// oldest has waited resendAfter: a batch was lost, or the keeper
// restarted. The keeper skips what it has applied already.
func (s *Store) resendPending(resendAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live := s.pend(); len(live) == 0 || time.Since(live[0].sent) < resendAfter {
		return
	}
	s.resendLocked()
}

func (s *Store) resendLocked() {
	now := time.Now()
	// What is queued is in pending too: send it all once, in order.
	s.outq = s.outq[:0]
	live := s.pend()
	for i := range live {
		live[i].sent = now
		s.outq = append(s.outq, live[i].w)
	}
	s.flushSendLocked()
}

// errNoKeeper is a sync no keeper answered.
var errNoKeeper = errors.New("no keeper serves this node's keys (its bus process is not running, or is older than this layer)")

// syncNode brings the copy's node keys up to the keeper's: the records it
// lacks when the keeper still has them, else a snapshot (page by page,
// then the records written meanwhile). Trackers hear of what differs.
func (s *Store) syncNode(ctx context.Context) error {
	s.mu.Lock()
	epoch := s.nepoch
	s.mu.Unlock()
	if epoch != 0 {
		done, err := s.catchUp(ctx, epoch, nil)
		if err != nil || done {
			return err
		}
		adopted, err := s.adoptEpoch(ctx)
		if err != nil || adopted {
			return err
		}
	}
	for attempt := 0; attempt < 5; attempt++ {
		if err := s.reload(ctx); !errors.Is(err, errSnapshotMoved) {
			return err
		}
	}
	return errors.New("node feed: the keeper's log moves faster than a snapshot loads")
}

var errSnapshotMoved = errors.New("the keeper moved on while the snapshot loaded")

// adoptEpoch follows a new keeper (the node's bus restarted) from its
// first record, over the copy as it is, so that trackers hear of every
// write the new keeper applied — the keys it loaded, and the writes sent
// to it since — one by one, rather than of a snapshot's net difference;
// then it reconciles what the new keeper does not have (writes the old one
// never stored). A new keeper whose log no longer reaches back to its
// start is left to a reload (adopted false).
func (s *Store) adoptEpoch(ctx context.Context) (bool, error) {
	probe, err := s.askKeeper(ctx, syncRequest{Writer: s.writer, Snapshot: true, After: "\xff"})
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	same := probe.Epoch == s.nepoch
	s.mu.Unlock()
	if same {
		return false, nil
	}
	first, err := s.askKeeper(ctx, syncRequest{Writer: s.writer, Epoch: probe.Epoch, From: 0})
	if err != nil {
		return false, err
	}
	if first.Kind != syncRecords || first.Epoch != probe.Epoch {
		if !probe.Loaded {
			return false, errors.New("node feed: the node's new keeper is still loading the node's stored keys, and no longer has its first records")
		}
		return false, nil
	}
	s.mu.Lock()
	s.nepoch, s.nseq = probe.Epoch, 0
	// The new keeper knows nothing of this writer's unconfirmed writes.
	if len(s.pend()) > 0 {
		s.resendLocked()
	}
	restored := 0
	if !probe.Loaded {
		restored = s.restoreLocked()
	}
	s.mu.Unlock()
	if _, err := s.catchUp(ctx, probe.Epoch, nil); err != nil {
		return true, err
	}
	if !probe.Loaded {
		// The new keeper cannot load what the node stored (JetStream has
		// no quorum: a lone node whose bus restarted). Refusing to follow
		// it until it had, as copies did until 3 Dec, left them behind
		// for good on such a node: its writes never confirmed, the other
		// copies never reading them, a copy opened since reading only
		// them. So the copy follows it over its keys as they are, and
		// has handed it those keys (restoreLocked), which the keeper
		// takes where it has nothing newer. No reconcile: what this
		// keeper lacks is what it has not loaded, not what was deleted.
		s.log.Info("objdb: the node's new keeper cannot load the node's stored keys yet; following it, and handing it this copy's node keys",
			"epoch", strconv.FormatUint(probe.Epoch, 16), "keys", restored)
		return true, nil
	}
	return true, s.reconcile(ctx, probe.Epoch)
}

// restoreLocked sends the new keeper, as writes of opRestore, every node
// key the copy holds from the previous keeper, but for keys this Store
// has written since (its pending writes, sent again, say what they are);
// it returns how many. The copy's view does not change: the keeper's
// records of them carry the values it holds.
func (s *Store) restoreLocked() int {
	n := 0
	for k, v := range s.local {
		if _, mine := s.localOver[k]; mine {
			continue
		}
		s.nextWSeq++
		w := nodeWrite{WSeq: s.nextWSeq, Op: opRestore, Key: k, Value: v}
		s.pendBuf = append(s.pendBuf, pendingWrite{w: w, sent: time.Now()})
		s.queueLocked(w)
		n++
	}
	return n
}

// reconcile compares the copy with a snapshot of the keeper brought to the
// same seq and applies (telling trackers) what differs: keys the keeper
// no longer has or holds otherwise. The copy and the snapshot are both
// caught up by records until they stand at the same seq; if the keeper
// moves on too fast for that, the copy stays as it is.
func (s *Store) reconcile(ctx context.Context, epoch uint64) error {
	rb, writerNext, err := s.snapshot(ctx)
	if err != nil {
		return err
	}
	if rb.epoch != epoch {
		return errSnapshotMoved
	}
	for attempt := 0; ; attempt++ {
		if done, err := s.catchUp(ctx, epoch, rb); err != nil || !done {
			return err
		}
		if done, err := s.catchUp(ctx, epoch, nil); err != nil || !done {
			return err
		}
		s.mu.Lock()
		if s.nepoch == epoch && s.nseq == rb.seq {
			break // still locked
		}
		s.mu.Unlock()
		if attempt == 10 {
			s.log.Info("objdb: the keeper moved on too fast to reconcile the copy with it; keeping it as it is")
			return nil
		}
	}
	defer s.mu.Unlock()
	for k := range s.local {
		if _, still := rb.keys[k]; !still {
			s.swapKeyLocked(k, Value{}, false)
		}
	}
	for k, v := range rb.keys {
		if ov, had := s.local[k]; !had || ov.Type != v.Type || string(ov.Data) != string(v.Data) {
			s.swapKeyLocked(k, v, true)
		}
	}
	if writerNext > 0 {
		s.confirmLocked(writerNext-1, nil)
	}
	s.changed.Broadcast()
	return nil
}

// catchUp applies the keeper's records after the copy's (rb nil) or the
// rebuild's seq until it has them all. It reports false (no error) when
// the keeper cannot give them (another epoch, or its log no longer
// reaches back): reload instead.
func (s *Store) catchUp(ctx context.Context, epoch uint64, rb *rebuild) (bool, error) {
	for {
		s.mu.Lock()
		from := s.nseq
		if rb != nil {
			from = rb.seq
		}
		s.mu.Unlock()
		rep, err := s.askKeeper(ctx, syncRequest{Writer: s.writer, Epoch: epoch, From: from})
		if err != nil {
			return false, err
		}
		if rep.Kind != syncRecords || rep.Epoch != epoch {
			return false, nil
		}
		s.mu.Lock()
		if rb == nil && s.nepoch != epoch {
			s.mu.Unlock()
			return false, nil
		}
		for _, rec := range rep.Records.Records {
			at := s.nseq
			if rb != nil {
				at = rb.seq
			}
			if rec.Seq == at+1 { // the live feed may have applied some meanwhile
				s.applyRecordLocked(rb, rec)
			}
		}
		at := s.nseq
		if rb != nil {
			at = rb.seq
		}
		s.mu.Unlock()
		if at >= rep.Seq {
			return true, nil
		}
	}
}

// snapshot loads the keeper's keys page by page into a rebuild standing at
// the seq of the first page (replaying the records after it brings it to
// the keeper's state), with the keeper's next expected wseq of this
// writer.
func (s *Store) snapshot(ctx context.Context) (*rebuild, uint64, error) {
	rb := &rebuild{keys: map[string]Value{}}
	var writerNext uint64
	after := ""
	s.mu.Lock()
	had := s.nloaded
	s.mu.Unlock()
	for {
		rep, err := s.askKeeper(ctx, syncRequest{Writer: s.writer, Snapshot: true, After: after})
		if err != nil {
			return nil, 0, err
		}
		if rep.Kind != syncSnapshot {
			return nil, 0, fmt.Errorf("node feed: the keeper answered a snapshot request with kind %d", rep.Kind)
		}
		if had && !rep.Loaded {
			// A new keeper that has not loaded what the node stored yet
			// would make every key vanish and come back: keep the copy
			// as it is (behind) until it has.
			return nil, 0, errors.New("node feed: the node's new keeper is still loading the node's stored keys")
		}
		if rb.epoch == 0 {
			rb.epoch, rb.seq = rep.Epoch, rep.Seq
		} else if rep.Epoch != rb.epoch {
			return nil, 0, errSnapshotMoved
		}
		writerNext = rep.WriterNext
		for _, e := range rep.Keys {
			rb.keys[e.Key] = e.Value
			after = e.Key
		}
		if !rep.More {
			return rb, writerNext, nil
		}
	}
}

// reload loads a snapshot of the keeper's keys, brings it up to date with
// the records written while it loaded, and swaps it in; trackers hear of
// every key that differs, and this Store's writes the keeper has applied
// are confirmed (those a new keeper never saw are sent again).
func (s *Store) reload(ctx context.Context) error {
	rb, writerNext, err := s.snapshot(ctx)
	if err != nil {
		return err
	}
	epoch := rb.epoch
	done, err := s.catchUp(ctx, epoch, rb)
	if err != nil {
		return err
	}
	if !done {
		return errSnapshotMoved
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	oldEpoch := s.nepoch
	if s.nloaded {
		// Trackers hear of every difference, as if written now.
		for k := range s.local {
			if _, still := rb.keys[k]; !still {
				s.swapKeyLocked(k, Value{}, false)
			}
		}
		for k, v := range rb.keys {
			if ov, had := s.local[k]; !had || ov.Type != v.Type || string(ov.Data) != string(v.Data) {
				s.swapKeyLocked(k, v, true)
			}
		}
	}
	s.local = rb.keys
	s.nepoch, s.nseq, s.nloaded = epoch, rb.seq, true
	if writerNext > 0 {
		s.confirmLocked(writerNext-1, nil)
	}
	for i := range rb.mine {
		s.confirmLocked(rb.mine[i].WSeq, &rb.mine[i])
	}
	if oldEpoch != epoch && len(s.pend()) > 0 {
		s.resendLocked()
	}
	s.changed.Broadcast()
	return nil
}

// swapKeyLocked sets (or deletes) one node key of the copy and tells the
// trackers.
func (s *Store) swapKeyLocked(k string, v Value, present bool) {
	before, hadBefore := s.trackedLocked(k)
	if present {
		s.local[k] = v
	} else {
		delete(s.local, k)
	}
	cur, hasCur := s.trackedLocked(k)
	s.notifyLocked(k, before, hadBefore, cur, hasCur)
}

// askKeeper sends one sync request.
func (s *Store) askKeeper(ctx context.Context, q syncRequest) (syncReply, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.FeedTimeout, 500*time.Millisecond))
	defer cancel()
	m, err := s.nc.RequestWithContext(ctx, s.cfg.Subjects.ObjdbKeys(s.cfg.Node, "sync"), appendSyncRequest(nil, q))
	if errors.Is(err, nats.ErrNoResponders) {
		return syncReply{}, fmt.Errorf("node feed: %w", errNoKeeper)
	}
	if err != nil {
		return syncReply{}, fmt.Errorf("node feed: asking the node's keeper: %w", err)
	}
	if e := m.Header.Get(micro.ErrorHeader); e != "" {
		return syncReply{}, fmt.Errorf("node feed: the keeper refused the request: %s", e)
	}
	rep, err := decodeSyncReply(m.Data)
	if err != nil {
		return syncReply{}, fmt.Errorf("node feed: the keeper's reply: %w", err)
	}
	return rep, nil
}
