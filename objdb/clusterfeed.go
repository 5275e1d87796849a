package objdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// followCluster keeps the copy's cluster keys following the bucket until
// ctx ends. The node's keeper relays them on the node feed (relay.go):
// the copy follows that while it joins on (it has every change up to
// where a frame starts) and the keeper says its relay is current. Else —
// at start, after a missed frame, a lost connection, a relay that is
// behind or silent — the copy follows the stream itself, with a consumer
// of its own that starts after the last revision it applied, until a
// relay frame joins on again. loaded is closed once the first load is
// complete.
func (s *Store) followCluster(ctx context.Context, loaded chan<- struct{}) {
	// JetStream's idle heartbeats are at least 100 ms apart; the feed is
	// lost after FeedTimeout of silence, and never before three of them:
	// FeedTimeout/3 apart, a heartbeat may be 2/3 of the token late
	// before the feed counts lost (as totem's heartbeats at rest). At
	// FeedTimeout/4, an idle three-node cluster's six copies took 24
	// heartbeats a second, mostly across routes.
	hb := max(s.cfg.FeedTimeout/3, 100*time.Millisecond)
	lost := max(s.cfg.FeedTimeout, 3*hb)
	// A bucket of one replica has its consumer on the stream's one
	// server, which for a one-node cluster is the server this copy is
	// connected to: that server's death is the connection's loss, told
	// at once (the consumer follows the connection's status), so its
	// heartbeats need only find a server that hangs, every
	// localIdleHeartbeat. A consumer that turns out to be elsewhere (a
	// two-node cluster's single replica) is made again with the fast
	// heartbeats, for good.
	local := s.cfg.Replicas == 1
	signalled := false
	onLoaded := func() {
		if !signalled {
			signalled = true
			close(loaded)
		}
	}
	relayed := false
	for ctx.Err() == nil {
		if relayed {
			why := s.followRelay(ctx)
			if ctx.Err() != nil {
				return
			}
			s.setFeedState(&s.cstate, "cluster", false, why)
			relayed = false
			continue
		}
		chb, clost := hb, lost
		if local {
			// Two heartbeats and a token: one late heartbeat (a loaded
			// machine) is not a hung server.
			chb, clost = localIdleHeartbeat, s.cfg.FeedTimeout+2*localIdleHeartbeat
		}
		err := s.direct(chb, clost, local, onLoaded).run(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errSwitched):
			relayed = true
			continue
		case errors.Is(err, errConsumerElsewhere):
			local = false
			continue
		}
		s.setFeedState(&s.cstate, "cluster", false, err.Error())
		// Until the next consumer, a relay frame that joins on serves as
		// well (a consumer may not be made while JetStream has no meta
		// leader, when the keeper's own one still delivers).
		retry := time.NewTimer(hb)
	wait:
		for {
			select {
			case <-ctx.Done():
				retry.Stop()
				return
			case m := <-s.relayCh:
				if s.takeRelay(m) {
					relayed = true
					break wait
				}
			case <-retry.C:
				break wait
			}
		}
		retry.Stop()
	}
}

// localIdleHeartbeat is the idle heartbeat of a cluster feed whose
// consumer is on the copy's own server.
const localIdleHeartbeat = 5 * time.Second

// errConsumerElsewhere is a consumer made with local heartbeats that
// JetStream placed on another server.
var errConsumerElsewhere = errors.New("cluster feed: the consumer is on another server")

// direct is the copy's own consumer of the cluster keys, which reads the
// keeper's relay frames meanwhile and hands over to them once one joins
// on.
func (s *Store) direct(hb, lost time.Duration, local bool, onLoaded func()) *clusterConsumer {
	s.mu.Lock()
	from := s.crev
	initial := !s.cloaded
	s.mu.Unlock()
	return &clusterConsumer{
		nc: s.nc, js: s.js, log: s.log,
		name:   "objdb_" + strconv.FormatUint(uint64(s.cfg.Node), 10) + "_",
		stream: "KV_" + s.cfg.Bucket, filter: s.kvPrefix + clusterScope() + ".>",
		hb: hb, lost: lost, local: local, from: from, initial: initial,
		revision: s.revision,
		created: func(server string, pending uint64) {
			s.mu.Lock()
			s.cserver = server
			s.mu.Unlock()
			if pending > 0 {
				s.setFeedState(&s.cstate, "cluster", false, fmt.Sprintf("cluster feed catching up from revision %d (%d pending, consumer on %s)", from, pending, server))
			}
		},
		// Trackers hear of every change, the first load's too: none is
		// registered before OpenStore returns, and a copy that returned
		// before its cluster keys loaded (no JetStream quorum) tells its
		// trackers of each key as it arrives, as of any other change.
		apply: func(m *nats.Msg, rev uint64, _ bool) { s.applyCluster(m, rev, true) },
		caughtUp: func() {
			s.mu.Lock()
			late := !s.cloaded && s.openedEarly
			s.cloaded = true
			crev := s.crev
			s.mu.Unlock()
			if late {
				s.log.Info("objdb: the cluster keys loaded: the copy serves them from now on", "copy", s.cfg.Name, "revision", crev)
			}
			onLoaded()
			s.setFeedState(&s.cstate, "cluster", true, "")
		},
		relay:     s.relayCh,
		takeRelay: s.takeRelay,
	}
}

// takeRelay applies a relay frame that joins on to a loaded copy and
// reports whether it did: the copy then follows the relay.
func (s *Store) takeRelay(m *nats.Msg) bool {
	f, err := decodeRelayFrame(m.Data)
	if err != nil {
		s.log.Warn("objdb: ignoring a malformed relay frame", "err", err)
		return false
	}
	if !f.Current {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cloaded || f.Prev > s.crev {
		return false
	}
	s.applyFrameLocked(f)
	return true
}

// applyFrameLocked applies the changes of a frame that joins on (Prev at
// or below the copy's revision) that the copy does not have yet.
func (s *Store) applyFrameLocked(f relayFrame) {
	for _, e := range f.Entries {
		if e.Rev > s.crev {
			s.applyChangeLocked(e.Key, e.Del, e.Data, e.Rev, true)
		}
	}
	s.advanceClusterLocked(f.Last)
	s.cserver = f.Server
}

func (s *Store) setRelayed(on bool) {
	s.mu.Lock()
	s.crelayed = on
	s.mu.Unlock()
}

// followRelay follows the keeper's relay frames until they no longer join
// on, say the relay is behind, stop coming, or the connection drops; it
// returns why (nothing when ctx ended).
func (s *Store) followRelay(ctx context.Context) string {
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
	defer s.nc.RemoveStatusListener(status)
	s.setRelayed(true)
	defer s.setRelayed(false)
	s.setFeedState(&s.cstate, "cluster", true, "")
	silence := s.nodeSilence()
	last := time.Now()
	check := time.NewTimer(silence)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case _, ok := <-status:
			if ok {
				return fmt.Sprintf("cluster feed lost: disconnected from the bus; resuming after revision %d", s.revision())
			}
			status = nil
		case now := <-check.C:
			silent := now.Sub(last)
			if silent > silence {
				return fmt.Sprintf("cluster feed lost: nothing from the node's keeper for %s; resuming after revision %d", silent.Round(time.Millisecond), s.revision())
			}
			check.Reset(silence - silent + time.Millisecond)
		case m := <-s.relayCh:
			last = time.Now()
			f, err := decodeRelayFrame(m.Data)
			if err != nil {
				s.log.Warn("objdb: ignoring a malformed relay frame", "err", err)
				continue
			}
			if !f.Current {
				return "cluster feed: " + f.Reason + fmt.Sprintf("; following the stream from revision %d meanwhile", s.revision())
			}
			s.mu.Lock()
			if f.Prev > s.crev {
				crev := s.crev
				s.mu.Unlock()
				return fmt.Sprintf("cluster feed: the keeper's relay goes on from revision %d, the copy has %d; following the stream meanwhile", f.Prev, crev)
			}
			s.applyFrameLocked(f)
			s.mu.Unlock()
		}
	}
}

// clusterConsumer is one push consumer of the bucket's cluster keys, as a
// copy's own feed (direct) or a keeper's relay follows them. It is an R1
// consumer that JetStream places on any server of the stream's peers:
// when that server dies, nothing arrives any more, not even its idle
// heartbeats. It counts its feed lost after lost of silence; its caller
// then creates the next one, starting after the last revision applied:
// nothing is missed, nothing applied twice (as long as the stream still
// holds it).
type clusterConsumer struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	// name is the consumer's name prefix (objdb_<node>_ or
	// keeper_<node>_): a unique suffix follows.
	name   string
	stream string
	filter string
	hb     time.Duration
	lost   time.Duration
	// local says hb is localIdleHeartbeat: the consumer must be on the
	// server nc is connected to (errConsumerElsewhere otherwise).
	local bool
	// from is the last revision applied: the consumer delivers what
	// follows it; 0 delivers the latest revision of every key (a load).
	from uint64
	// initial is a load: messages are applied without telling trackers.
	initial bool

	// created is told the consumer's server and what it has to deliver.
	created func(server string, pending uint64)
	// apply folds one message (revision rev) in.
	apply func(m *nats.Msg, rev uint64, initial bool)
	// caughtUp is called whenever the consumer has nothing more to
	// deliver.
	caughtUp func()
	// relay, when set, is the node feed's cluster frames, read while
	// the consumer runs: switch reports whether the copy now follows
	// them, which ends the run (errSwitched).
	relay     <-chan *nats.Msg
	takeRelay func(m *nats.Msg) bool
	// revision is the last revision applied, for what the errors say.
	revision func() uint64
}

// errSwitched ends a direct consumer: the copy follows its keeper's relay.
var errSwitched = errors.New("cluster feed: following the node's keeper again")

// run runs the consumer until its feed is lost (the error says how),
// takeRelay ends it, or ctx ends.
func (c *clusterConsumer) run(ctx context.Context) error {
	// Subscribed before the consumer exists: a disconnection after it
	// is created must not go unseen.
	status := c.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
	defer c.nc.RemoveStatusListener(status)
	inbox := c.nc.NewInbox()
	// Flow control bounds what is in flight, so the channel cannot
	// overflow under a large initial load.
	ch := make(chan *nats.Msg, 8192)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("cluster feed: subscribing: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	name := c.name + nuid.Next()
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		DeliverSubject:    inbox,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     c.filter,
		IdleHeartbeat:     c.hb,
		FlowControl:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second,
	}
	if c.from == 0 {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	} else {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = c.from + 1
	}
	cctx, cancel := context.WithTimeout(ctx, max(c.lost, time.Second))
	cons, err := c.js.CreateOrUpdatePushConsumer(cctx, c.stream, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("cluster feed: no consumer on the bucket's stream: %w", err)
	}
	defer func() {
		// Best effort: its server may be the one that died. An orphan
		// goes by itself after its InactiveThreshold.
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = c.js.DeleteConsumer(dctx, c.stream, name)
		}()
	}()
	info := cons.CachedInfo()
	server := ""
	if info.Cluster != nil {
		server = info.Cluster.Leader
	}
	if c.local && server != "" && server != c.nc.ConnectedServerName() {
		return errConsumerElsewhere
	}
	c.created(server, info.NumPending)
	initial := c.initial
	caughtUp := func() {
		initial = false
		c.caughtUp()
	}
	if info.NumPending == 0 {
		caughtUp()
	}

	var dseq uint64
	last := time.Now()
	// The silence check wakes when the feed would be lost if nothing had
	// come since, not at every heartbeat: a message moves last on, and
	// the timer is set again from it when it fires (once per lost at
	// rest, instead of once per hb).
	check := time.NewTimer(c.lost)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-status:
			if ok {
				return fmt.Errorf("cluster feed lost: disconnected from the bus; resuming after revision %d", c.revision())
			}
			status = nil
		case now := <-check.C:
			silent := now.Sub(last)
			if silent > c.lost {
				return fmt.Errorf("cluster feed lost: nothing from its consumer on %s for %s; resuming after revision %d",
					server, silent.Round(time.Millisecond), c.revision())
			}
			check.Reset(c.lost - silent + time.Millisecond)
		case m := <-c.relay:
			if c.takeRelay(m) {
				return errSwitched
			}
		case m := <-ch:
			last = time.Now()
			if st := m.Header.Get("Status"); st != "" {
				if st != "100" {
					return fmt.Errorf("cluster feed: consumer on %s: status %s %s", server, st, m.Header.Get("Description"))
				}
				// Flow control asks for an empty reply; a heartbeat may
				// carry a stalled flow control's subject.
				if m.Reply != "" {
					_ = m.Respond(nil)
				}
				if fc := m.Header.Get("Nats-Consumer-Stalled"); fc != "" {
					_ = c.nc.Publish(fc, nil)
				}
				if lc := m.Header.Get("Nats-Last-Consumer"); lc != "" {
					if n, err := strconv.ParseUint(lc, 10, 64); err == nil && n != dseq {
						return fmt.Errorf("cluster feed: consumer on %s delivered %d, the copy has %d; resuming after revision %d", server, n, dseq, c.revision())
					}
					// An idle heartbeat: nothing more to deliver.
					caughtUp()
				}
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				c.log.Warn("objdb: cluster feed message without JetStream metadata", "subject", m.Subject, "err", err)
				continue
			}
			if md.Sequence.Consumer != dseq+1 {
				return fmt.Errorf("cluster feed: message %d after %d from the consumer on %s; resuming after revision %d", md.Sequence.Consumer, dseq, server, c.revision())
			}
			dseq = md.Sequence.Consumer
			c.apply(m, md.Sequence.Stream, initial)
			if md.NumPending == 0 {
				caughtUp()
			}
		}
	}
}

func (s *Store) revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crev
}

// applyCluster folds one message of the bucket into the copy and, once
// the first load is done, tells trackers what changed in this node's view.
func (s *Store) applyCluster(m *nats.Msg, rev uint64, notify bool) {
	scope, key, err := splitKVKey(strings.TrimPrefix(m.Subject, s.kvPrefix))
	if err != nil || scope != clusterScope() {
		s.log.Warn("objdb: ignoring an undecodable key", "subject", m.Subject, "err", err)
		key = ""
	}
	op := m.Header.Get(kvOperationHdr)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyChangeLocked(key, op == kvOpDelete || op == kvOpPurge, m.Data, rev, notify)
}

// applyChangeLocked applies one change of a cluster key (key "": an
// undecodable one, skipped) at revision rev.
func (s *Store) applyChangeLocked(key string, del bool, data []byte, rev uint64, notify bool) {
	if key == "" {
		s.advanceClusterLocked(rev)
		return
	}
	var v Value
	if !del {
		var err error
		if v, err = decodeValue(data); err != nil {
			s.log.Warn("objdb: ignoring an undecodable value", "key", key, "err", err)
			s.advanceClusterLocked(rev)
			return
		}
	}
	old, hadOld := s.trackedLocked(key)
	if !del {
		s.shared[key] = v
	} else {
		delete(s.shared, key)
	}
	s.advanceClusterLocked(rev)
	if notify {
		cur, hasCur := s.trackedLocked(key)
		s.notifyLocked(key, old, hadOld, cur, hasCur)
	}
}

// advanceClusterLocked records that the copy has every revision up to
// rev: own writes up to it need no overlay any more.
func (s *Store) advanceClusterLocked(rev uint64) {
	if rev > s.crev {
		s.crev = rev
	}
	for k, o := range s.sharedOver {
		if o.rev <= s.crev {
			delete(s.sharedOver, k)
		}
	}
	s.changed.Broadcast()
}
