package objdb

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Position is how far the node's view has come: the keeper's epoch and
// the seq of its last record (node keys), and a revision of the bucket's
// stream (cluster keys). A copy that has applied through a Position reads
// every write it covers. It is what a service's answer carries so that
// the gateway that passes the answer on serves the client's next read
// from a copy that has the request's writes (docs/objdb.md, "Read your
// writes through the gateway").
type Position struct {
	Epoch uint64 // the node's keeper; 0: no node-key write
	Seq   uint64
	Rev   uint64 // 0: no cluster-key write
}

// IsZero reports whether p covers no write.
func (p Position) IsZero() bool { return p == Position{} }

// String is the Position as headers carry it: "epoch.seq.rev", the epoch
// in hex as the keeper logs it.
func (p Position) String() string {
	return strconv.FormatUint(p.Epoch, 16) + "." + strconv.FormatUint(p.Seq, 10) + "." + strconv.FormatUint(p.Rev, 10)
}

// ParsePosition reads a Position's String.
func ParsePosition(s string) (Position, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Position{}, fmt.Errorf("objdb position %q: want epoch.seq.rev: %w", s, ErrInvalidParam)
	}
	var p Position
	var err error
	if p.Epoch, err = strconv.ParseUint(parts[0], 16, 64); err == nil {
		if p.Seq, err = strconv.ParseUint(parts[1], 10, 64); err == nil {
			p.Rev, err = strconv.ParseUint(parts[2], 10, 64)
		}
	}
	if err != nil {
		return Position{}, fmt.Errorf("objdb position %q: %v: %w", s, err, ErrInvalidParam)
	}
	return p, nil
}

// Settle waits until the node's keeper has applied every node-key write
// this Store took before the call — sending the queued ones now rather
// than at the end of the send window — and returns the Position that
// covers them and this Store's cluster-key writes. It waits at most
// WriteTimeout (or ctx), and then fails with ErrTryAgain: the keeper has
// not confirmed the writes, which stay queued and are sent again as
// usual. Nothing calls it on a write's path: a service's request that
// wrote calls it once before answering (the objdb API's settle).
func (s *Store) Settle(ctx context.Context) (Position, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	s.mu.Lock()
	last := s.nextWSeq
	if len(s.outq) > 0 {
		s.flushSendLocked()
	}
	if !s.settledLocked(last) {
		s.mu.Unlock()
		s.askRecords(ctx)
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if err := s.waitChangedLocked(ctx, func() bool { return s.settledLocked(last) }); err != nil {
		return Position{}, fmt.Errorf("objdb: the node's keeper has not confirmed this copy's writes (%d pending): %v: %w", len(s.pend()), err, ErrTryAgain)
	}
	p := Position{Rev: s.wrev}
	if last > 0 {
		p.Epoch, p.Seq = s.nepoch, s.nseq
	}
	return p, nil
}

// settledLocked reports whether the keeper has confirmed every write up
// to wseq last.
func (s *Store) settledLocked(last uint64) bool {
	live := s.pend()
	return len(live) == 0 || live[0].w.WSeq > last
}

// WaitFor waits until this copy has applied through p, or ctx ends. A
// copy that follows another keeper than p's (the node's bus restarted in
// between) cannot compare: it waits only while its node feed is behind.
func (s *Store) WaitFor(ctx context.Context, p Position) error {
	s.mu.Lock()
	if s.reachedLocked(p) {
		s.mu.Unlock()
		return nil
	}
	if p.Epoch == s.nepoch && p.Seq > s.nseq {
		s.mu.Unlock()
		s.askRecords(ctx)
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if err := s.waitChangedLocked(ctx, func() bool { return s.reachedLocked(p) }); err != nil {
		return fmt.Errorf("objdb: the copy has not applied through %s (it is at %s): %w",
			p, Position{Epoch: s.nepoch, Seq: s.nseq, Rev: s.crev}, err)
	}
	return nil
}

// askRecords asks the keeper for the records the copy lacks rather than
// waiting for its feed, which publishes a stream of writes at most once
// per window (20 ms): a settle after a reload's burst of writes waited a
// window on each side, 38–39 ms for corosync-cfgtool -R against 21–22
// without. The feed stays the copy's way of following; a failed ask
// leaves it to the feed.
func (s *Store) askRecords(ctx context.Context) {
	s.mu.Lock()
	epoch, loaded := s.nepoch, s.nloaded
	s.mu.Unlock()
	if !loaded {
		return
	}
	if _, err := s.catchUp(ctx, epoch, nil); err != nil {
		s.log.Debug("objdb: asking the keeper for the records of a settle", "err", err)
	}
}

func (s *Store) reachedLocked(p Position) bool {
	if p.Rev > s.crev {
		return false
	}
	switch {
	case p.Epoch == 0:
		return true
	case p.Epoch == s.nepoch:
		return s.nseq >= p.Seq
	default:
		return s.nstate.current
	}
}
