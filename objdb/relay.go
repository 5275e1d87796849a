package objdb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The keeper's cluster relay (docs/objdb.md, "Cluster keys"): the node's
// keeper follows the bucket's cluster keys with one JetStream consumer and
// publishes what it delivers on the node feed, a batch per publishWindow,
// for every copy of the node. Each change then costs the servers one
// consumer delivery per node rather than one per copy, and each copy one
// message per batch rather than one per change.
//
// A relay frame says which revisions it covers: every cluster change after
// prev up to last, in stream order. A copy that has applied every change
// up to at least prev applies those after its own; one further behind (it
// missed a frame, or just started) follows the stream itself until a frame
// joins on again. A keeper's relay that is not current (its consumer lost,
// its first load not done) says so in its frames; its copies then follow
// the stream themselves.

// relayFrameVersion marks a relay frame on the node feed, whose records
// start with nodeWireVersion.
const relayFrameVersion = 0x81

// relayEntry is one cluster change: the key's stream revision, the key,
// and its stored value (nil with del).
type relayEntry struct {
	Rev  uint64
	Del  bool
	Key  string
	Data []byte
}

// relayFrame is a decoded relay frame. A heartbeat has no entries and
// prev = last = the last revision the keeper relayed.
type relayFrame struct {
	Current bool
	Prev    uint64
	Last    uint64
	Server  string // the keeper's consumer's server
	Reason  string // why not current
	Entries []relayEntry
}

// appendRelayFrame encodes f: version u8 (0x81), current u8, prev u64,
// last u64, len(server) u16, server, len(reason) u16, reason, count u32,
// then per change: rev u64, del u8, len(key) u16, key, len(data) u32, data.
func appendRelayFrame(b []byte, f relayFrame) []byte {
	b = append(b, relayFrameVersion, boolByte(f.Current))
	b = binary.BigEndian.AppendUint64(b, f.Prev)
	b = binary.BigEndian.AppendUint64(b, f.Last)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Server)))
	b = append(b, f.Server...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Reason)))
	b = append(b, f.Reason...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.Entries)))
	for _, e := range f.Entries {
		b = binary.BigEndian.AppendUint64(b, e.Rev)
		b = append(b, boolByte(e.Del))
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

func isRelayFrame(b []byte) bool { return len(b) > 0 && b[0] == relayFrameVersion }

func decodeRelayFrame(b []byte) (relayFrame, error) {
	r := &reader{b: b}
	if v := r.u8(); r.err == nil && v != relayFrameVersion {
		return relayFrame{}, fmt.Errorf("objdb: relay frame version %d, want %d", v, relayFrameVersion)
	}
	f := relayFrame{Current: r.u8() == 1, Prev: r.u64(), Last: r.u64()}
	f.Server = string(r.take(int(r.u16())))
	f.Reason = string(r.take(int(r.u16())))
	n := r.u32()
	if r.err == nil && int(n) > len(r.b)/15 {
		return relayFrame{}, errShortFrame
	}
	f.Entries = make([]relayEntry, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		e := relayEntry{Rev: r.u64(), Del: r.u8() == 1}
		e.Key = string(r.take(int(r.u16())))
		e.Data = r.bytes(int(r.u32()))
		f.Entries = append(f.Entries, e)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("objdb: %d bytes after a relay frame", len(r.b))
	}
	if r.err == nil && n > 0 && (f.Entries[0].Rev <= f.Prev || f.Entries[n-1].Rev != f.Last) {
		r.err = fmt.Errorf("objdb: relay frame of revisions %d…%d claims (%d, %d]", f.Entries[0].Rev, f.Entries[n-1].Rev, f.Prev, f.Last)
	}
	return f, r.err
}

// relay is the keeper's side of the relay: what its consumer delivered
// and the publisher has yet to publish.
type relay struct {
	mu      sync.Mutex
	ready   bool   // the first load is done: last is known
	last    uint64 // the last revision received (relayed or queued)
	pub     uint64 // the last revision published
	loadMax uint64 // the highest revision of the first load
	out     []relayEntry
	current bool
	server  string
	reason  string
	wake    chan struct{}
}

func (r *relay) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *relay) setState(current bool, reason string) {
	r.mu.Lock()
	changed := r.current != current || r.reason != reason
	r.current, r.reason = current, reason
	r.mu.Unlock()
	if changed {
		r.poke()
	}
}

// relayCluster follows the bucket's cluster keys and relays them on the
// node feed until ctx ends.
func (k *Keeper) relayCluster(ctx context.Context) {
	r := &relay{wake: make(chan struct{}, 1), reason: "the keeper's relay is loading"}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); k.publishRelay(ctx, r) }()
	select {
	case <-k.opened:
	case <-ctx.Done():
		return
	}
	// The keeper's consumer is lost after a token (4 Heartbeats) of
	// silence, with idle heartbeats a third of it apart, as a copy's
	// own, unless it is on the keeper's own server, whose death is the
	// keeper's (below).
	token := 4 * k.cfg.Heartbeat
	hb := max(token/3, 100*time.Millisecond)
	lost := max(token, 3*hb)
	local := k.cfg.Replicas == 1
	// JetStream places a consumer at random among the stream's servers;
	// one on the keeper's own server delivers without a hop between
	// servers (two in three otherwise, on three nodes): the keeper makes
	// it again (LocalConsumerTries times) until it is there.
	elsewhere := 0
	for ctx.Err() == nil {
		r.mu.Lock()
		from, ready := r.last, r.ready
		r.mu.Unlock()
		c := &clusterConsumer{
			nc: k.nc, js: k.js, log: k.log,
			name:   fmt.Sprintf("keeper_%d_", k.cfg.Node),
			stream: "KV_" + k.cfg.Bucket, filter: "$KV." + k.cfg.Bucket + "." + clusterScope() + ".>",
			hb: hb, lost: lost, from: from, initial: !ready,
			revision: func() uint64 { r.mu.Lock(); defer r.mu.Unlock(); return r.last },
		}
		if !ready {
			c.from = 0
		}
		// A consumer on the keeper's own server (a one-replica bucket's,
		// and the one asked for while tries remain) dies with the
		// keeper's server, which its copies learn from their own
		// connections: its heartbeats need only find a server that
		// hangs, every localIdleHeartbeat, as a one-node copy's. One
		// that stays elsewhere (tries spent) has the fast heartbeats.
		// At token/3 an idle three-node cluster's three keepers took 9
		// heartbeats a second.
		if local || elsewhere < k.cfg.LocalConsumerTries {
			c.hb, c.lost = localIdleHeartbeat, token+2*localIdleHeartbeat
			c.local = true
		}
		c.created = func(server string, pending uint64) {
			r.mu.Lock()
			r.server = server
			r.mu.Unlock()
		}
		c.apply = func(m *nats.Msg, rev uint64, initial bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if initial {
				r.loadMax = max(r.loadMax, rev)
				return
			}
			if rev <= r.last {
				return
			}
			e := relayEntry{Rev: rev}
			_, key, err := splitKVKey(strings.TrimPrefix(m.Subject, "$KV."+k.cfg.Bucket+"."))
			e.Key = key
			op := m.Header.Get(kvOperationHdr)
			e.Del = op == kvOpDelete || op == kvOpPurge
			if err != nil {
				// Relayed as a delete of no key: copies move past it.
				e.Key, e.Del = "", true
			}
			if !e.Del {
				e.Data = m.Data
			}
			r.last = rev
			r.out = append(r.out, e)
			if len(r.out) == 1 {
				r.poke()
			}
		}
		c.caughtUp = func() {
			r.mu.Lock()
			if !r.ready {
				r.ready = true
				r.last, r.pub = r.loadMax, r.loadMax
			}
			r.mu.Unlock()
			r.setState(true, "")
		}
		err := c.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errConsumerElsewhere) {
			if !local {
				elsewhere++
			}
			local = false
			continue
		}
		elsewhere = 0
		r.setState(false, "the node's keeper: "+err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(hb):
		}
	}
}

// publishRelay publishes the relay's frames on the node feed: what
// arrived, a batch per publishWindow; a heartbeat every Heartbeat for
// fastBeats after a publish or while the relay is not current, then every
// KeeperIdleHeartbeat.
func (k *Keeper) publishRelay(ctx context.Context, r *relay) {
	feed := k.cfg.Subjects.ObjdbKeys(k.cfg.Node, "feed")
	tick := time.NewTimer(k.cfg.Heartbeat)
	defer tick.Stop()
	beats := 0
	var buf []byte
	var lastPub time.Time
	var spare []relayEntry
	for {
		beat := false
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
			beat = true
		}
		if !beat {
			// A stream of changes is published a batch per window; a
			// lone change at once.
			if wait := publishWindow - time.Since(lastPub); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
		}
		r.mu.Lock()
		out := r.out
		r.out = spare[:0]
		f := relayFrame{Current: r.current && r.ready, Prev: r.pub, Last: r.pub, Server: r.server, Reason: r.reason}
		if len(out) > 0 {
			r.pub = out[len(out)-1].Rev
		}
		r.mu.Unlock()
		spare = out
		if !f.Current && f.Reason == "" {
			f.Reason = "the node's keeper is loading the cluster keys"
		}
		for len(out) > 0 {
			n, size := 0, 0
			for n < len(out) && (n == 0 || size < maxFrame) {
				size += 32 + len(out[n].Key) + len(out[n].Data)
				n++
			}
			f.Entries = out[:n]
			f.Last = out[n-1].Rev
			buf = appendRelayFrame(buf[:0], f)
			if err := k.nc.Publish(feed, buf); err != nil {
				// The copies find the hole at the next frame and
				// follow the stream meanwhile.
				k.log.Debug("objdb keeper: relay frame not published", "err", err)
			}
			f.Prev = f.Last
			out = out[n:]
			lastPub = time.Now()
			beats = 0
		}
		if len(f.Entries) == 0 {
			buf = appendRelayFrame(buf[:0], f)
			if err := k.nc.Publish(feed, buf); err != nil {
				k.log.Debug("objdb keeper: relay heartbeat not published", "err", err)
			}
			beats++
		}
		if beats < fastBeats || !f.Current {
			tick.Reset(k.cfg.Heartbeat)
		} else {
			tick.Reset(idleWait(k.cfg.Heartbeat))
		}
	}
}
