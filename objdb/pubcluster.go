package objdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A cluster-key write is a core request to the bucket's subject, which
// the stream's leader answers with its acknowledgement once a quorum has
// the write: what jetstream.PublishMsg sends, without its generic answer
// decoding. Decoding every acknowledgement with encoding/json was 5 % of
// the gateway's CPU during eight clients' cluster-key sets on three nodes
// (about 3 µs a set; docs/objdb.md, "Cluster keys"). The acknowledgement
// of a write without a message id is the server's fixed
// {"stream":"…","seq":N…}, read here by hand (26 ns against 785,
// BenchmarkParsePubAck); anything else (an error, a form not expected)
// goes through encoding/json.

// As jetstream.PublishMsg: a write that finds no responder (the stream's
// leader being elected) is sent again, pubRetries times, pubRetryWait
// apart.
const (
	pubRetries   = 2
	pubRetryWait = 250 * time.Millisecond
)

// errNoStream is a write no server answered, retries spent: no stream
// leader (no quorum, or the bucket does not exist yet).
var errNoStream = errors.New("no response from the bucket's stream")

// publishCluster sends m to the bucket's stream and returns the stream
// sequence (the key's revision) it was stored at. ctx must carry a
// deadline.
func (s *Store) publishCluster(ctx context.Context, m *nats.Msg) (uint64, error) {
	r, err := s.replies.take(s.nc)
	if err != nil {
		return 0, fmt.Errorf("reply subscription: %w", err)
	}
	m.Reply = r.subj
	for tries := 0; ; tries++ {
		if err := s.nc.PublishMsg(m); err != nil {
			s.replies.drop(r)
			return 0, err
		}
		var resp *nats.Msg
		select {
		case resp = <-r.ch:
		case <-ctx.Done():
			// Its answer may still come: the subscription goes with it.
			s.replies.drop(r)
			return 0, ctx.Err()
		}
		if len(resp.Data) == 0 && resp.Header.Get("Status") == noRespondersStatus {
			// The server answers a request no one subscribes to with
			// this status alone: nothing else comes for it.
			if tries >= pubRetries {
				s.replies.put(r)
				return 0, errNoStream
			}
			select {
			case <-ctx.Done():
				s.replies.put(r)
				return 0, errNoStream
			case <-time.After(pubRetryWait):
			}
			continue
		}
		s.replies.put(r)
		return parsePubAck(resp.Data)
	}
}

// noRespondersStatus is the status of the server's answer to a request
// that reached no subscriber (what nats.go reports as ErrNoResponders).
const noRespondersStatus = "503"

// replySubs are a Store's reply subscriptions for cluster writes, one per
// write in flight. nats.go's requests share one subscription whose
// callback runs on a goroutine of its own and hands each answer to the
// requester: two goroutine hand-offs per write in the gateway (the
// connection's reader to the callback's goroutine, that one to the
// writer). A channel subscription of the writer's own is filled by the
// reader directly: one. A subscription whose request ended without its
// answer (timed out, not sent) is dropped, so a late answer never reaches
// a later write.
type replySubs struct {
	mu     sync.Mutex
	free   []*replySub
	closed bool
}

type replySub struct {
	subj string
	sub  *nats.Subscription
	ch   chan *nats.Msg
}

func (p *replySubs) take(nc *nats.Conn) (*replySub, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		r := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return r, nil
	}
	p.mu.Unlock()
	r := &replySub{subj: nc.NewInbox(), ch: make(chan *nats.Msg, 1)}
	sub, err := nc.ChanSubscribe(r.subj, r.ch)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	return r, nil
}

func (p *replySubs) put(r *replySub) {
	p.mu.Lock()
	if !p.closed {
		p.free = append(p.free, r)
		r = nil
	}
	p.mu.Unlock()
	if r != nil {
		p.drop(r)
	}
}

func (p *replySubs) drop(r *replySub) { _ = r.sub.Unsubscribe() }

// close unsubscribes the idle subscriptions; those of writes in flight go
// when they end.
func (p *replySubs) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, r := range free {
		p.drop(r)
	}
}

var pubAckHead = []byte(`{"stream":"`)

// parsePubAck returns the sequence of a JetStream publish acknowledgement,
// or the error it carries.
func parsePubAck(b []byte) (uint64, error) {
	if rest, ok := bytes.CutPrefix(b, pubAckHead); ok {
		// The stream's name, then ,"seq":N and , or }.
		if i := bytes.IndexByte(rest, '"'); i > 0 && bytes.IndexByte(rest[:i], '\\') < 0 {
			if digits, ok := bytes.CutPrefix(rest[i+1:], []byte(`,"seq":`)); ok {
				n := 0
				for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
					n++
				}
				if n > 0 && n < len(digits) && (digits[n] == ',' || digits[n] == '}') {
					if seq, err := strconv.ParseUint(string(digits[:n]), 10, 64); err == nil {
						return seq, nil
					}
				}
			}
		}
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if err := json.Unmarshal(b, &ack); err != nil {
		return 0, fmt.Errorf("invalid JetStream acknowledgement %q: %w", b, err)
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream == "" {
		return 0, fmt.Errorf("invalid JetStream acknowledgement %q", b)
	}
	return ack.Seq, nil
}
