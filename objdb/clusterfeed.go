package objdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// followCluster keeps the copy's cluster keys following the bucket until
// ctx ends, one consumer at a time. A consumer is an R1 push consumer that
// JetStream places on any server of the stream's peers: when that server
// dies, nothing arrives any more, not even its idle heartbeats. nats.go's
// ordered consumer would notice after two missed 5 s heartbeats and then
// back off; this one counts the feed lost after FeedTimeout (totem.token)
// of silence and at once creates the next consumer, starting after the
// last revision the copy applied: nothing is missed, nothing applied
// twice. loaded is closed once the first load is complete.
func (s *Store) followCluster(ctx context.Context, loaded chan<- struct{}) {
	stream := "KV_" + s.cfg.Bucket
	filter := s.kvPrefix + clusterScope() + ".>"
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
	// at once (clusterConsumer follows the connection's status), so its
	// heartbeats need only find a server that hangs, every
	// localIdleHeartbeat. A consumer that turns out to be elsewhere (a
	// two-node cluster's single replica) is made again with the fast
	// heartbeats, for good.
	local := s.cfg.Replicas == 1
	signalled := false
	for ctx.Err() == nil {
		chb, clost := hb, lost
		if local {
			// Two heartbeats and a token: one late heartbeat (a loaded
			// machine) is not a hung server.
			chb, clost = localIdleHeartbeat, s.cfg.FeedTimeout+2*localIdleHeartbeat
		}
		err := s.clusterConsumer(ctx, stream, filter, chb, clost, local, func() {
			if !signalled {
				signalled = true
				close(loaded)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errConsumerElsewhere) {
			local = false
			continue
		}
		s.setFeedState(&s.cstate, "cluster", false, err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(hb):
		}
	}
}

// localIdleHeartbeat is the idle heartbeat of a cluster feed whose
// consumer is on the copy's own server.
const localIdleHeartbeat = 5 * time.Second

// errConsumerElsewhere is a consumer made with local heartbeats that
// JetStream placed on another server.
var errConsumerElsewhere = errors.New("cluster feed: the consumer is on another server")

// clusterConsumer runs one consumer until its feed is lost (the error
// says how) or ctx ends. local says hb is localIdleHeartbeat: the
// consumer must be on the server the copy is connected to.
func (s *Store) clusterConsumer(ctx context.Context, stream, filter string, hb, lost time.Duration, local bool, onLoaded func()) error {
	// Subscribed before the consumer exists: a disconnection after it
	// is created must not go unseen.
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
	defer s.nc.RemoveStatusListener(status)
	inbox := s.nc.NewInbox()
	// Flow control bounds what is in flight, so the channel cannot
	// overflow under a large initial load.
	ch := make(chan *nats.Msg, 8192)
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("cluster feed: subscribing: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	s.mu.Lock()
	from := s.crev
	initial := !s.cloaded
	s.mu.Unlock()
	name := "objdb_" + strconv.FormatUint(uint64(s.cfg.Node), 10) + "_" + nuid.Next()
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		DeliverSubject:    inbox,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     filter,
		IdleHeartbeat:     hb,
		FlowControl:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second,
	}
	if from == 0 {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	} else {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	cctx, cancel := context.WithTimeout(ctx, max(s.cfg.FeedTimeout, time.Second))
	cons, err := s.js.CreateOrUpdatePushConsumer(cctx, stream, cfg)
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
			_ = s.js.DeleteConsumer(dctx, stream, name)
		}()
	}()
	info := cons.CachedInfo()
	server := ""
	if info.Cluster != nil {
		server = info.Cluster.Leader
	}
	if local && server != "" && server != s.nc.ConnectedServerName() {
		return errConsumerElsewhere
	}
	s.mu.Lock()
	s.cserver = server
	s.mu.Unlock()
	caughtUp := func() {
		initial = false
		s.mu.Lock()
		s.cloaded = true
		s.mu.Unlock()
		onLoaded()
		s.setFeedState(&s.cstate, "cluster", true, "")
	}
	if info.NumPending == 0 {
		caughtUp()
	} else {
		s.setFeedState(&s.cstate, "cluster", false, fmt.Sprintf("cluster feed catching up from revision %d (%d pending, consumer on %s)", from, info.NumPending, server))
	}

	var dseq uint64
	last := time.Now()
	// The silence check wakes when the feed would be lost if nothing had
	// come since, not at every heartbeat: a message moves last on, and
	// the timer is set again from it when it fires (once per lost at
	// rest, instead of once per hb).
	check := time.NewTimer(lost)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-status:
			if ok {
				return fmt.Errorf("cluster feed lost: disconnected from the bus; resuming after revision %d", s.revision())
			}
			status = nil
		case now := <-check.C:
			silent := now.Sub(last)
			if silent > lost {
				return fmt.Errorf("cluster feed lost: nothing from its consumer on %s for %s; resuming after revision %d",
					server, silent.Round(time.Millisecond), s.revision())
			}
			check.Reset(lost - silent + time.Millisecond)
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
					_ = s.nc.Publish(fc, nil)
				}
				if lc := m.Header.Get("Nats-Last-Consumer"); lc != "" {
					if n, err := strconv.ParseUint(lc, 10, 64); err == nil && n != dseq {
						return fmt.Errorf("cluster feed: consumer on %s delivered %d, the copy has %d; resuming after revision %d", server, n, dseq, s.revision())
					}
					// An idle heartbeat: nothing more to deliver.
					caughtUp()
				}
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				s.log.Warn("objdb: cluster feed message without JetStream metadata", "subject", m.Subject, "err", err)
				continue
			}
			if md.Sequence.Consumer != dseq+1 {
				return fmt.Errorf("cluster feed: message %d after %d from the consumer on %s; resuming after revision %d", md.Sequence.Consumer, dseq, server, s.revision())
			}
			dseq = md.Sequence.Consumer
			s.applyCluster(m, md.Sequence.Stream, !initial)
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
		s.advanceCluster(rev)
		return
	}
	var v Value
	op := m.Header.Get(kvOperationHdr)
	put := op != kvOpDelete && op != kvOpPurge
	if put {
		if v, err = decodeValue(m.Data); err != nil {
			s.log.Warn("objdb: ignoring an undecodable value", "key", key, "err", err)
			s.advanceCluster(rev)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, hadOld := s.trackedLocked(key)
	if put {
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

func (s *Store) advanceCluster(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceClusterLocked(rev)
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
