package harness

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/corobus/corobus/bus/totem"
)

// Event is one thing a node delivered: a message or a configuration change.
type Event struct {
	Conf    totem.ConfChgType // 0 for a message
	Ring    totem.RingID
	Pos     uint64
	ID      totem.MsgID
	Tag     string // the message's payload, the test's own unique tag
	Members []uint32
}

// Stream is what one incarnation of a node delivered, in order.
type Stream struct {
	Node   uint32
	Killed bool
	Events []Event
	Sent   []string // tags this incarnation multicast (Mcast accepted)
}

// Recorder keeps every stream. Safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	streams []*Stream
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// NewStream starts the stream of a new incarnation of node.
func (r *Recorder) NewStream(node uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams = append(r.streams, &Stream{Node: node})
	return len(r.streams) - 1
}

// Deliver records a message.
func (r *Recorder) Deliver(s int, m *totem.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[s].Events = append(r.streams[s].Events, Event{Ring: m.Ring, Pos: m.Pos, ID: m.ID, Tag: string(m.Payload)})
}

// ConfChg records a configuration change.
func (r *Recorder) ConfChg(s int, cc totem.ConfChg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[s].Events = append(r.streams[s].Events, Event{Conf: cc.Type, Ring: cc.Ring, Members: slices.Clone(cc.Members)})
}

// Sent records a tag the stream's node multicast.
func (r *Recorder) Sent(s int, tag string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[s].Sent = append(r.streams[s].Sent, tag)
}

// Kill marks a stream's incarnation as ended by a crash.
func (r *Recorder) Kill(s int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[s].Killed = true
}

// Streams returns a snapshot.
func (r *Recorder) Streams() []Stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Stream, len(r.streams))
	for i, s := range r.streams {
		out[i] = Stream{Node: s.Node, Killed: s.Killed, Events: slices.Clone(s.Events), Sent: slices.Clone(s.Sent)}
	}
	return out
}

// Counts reports messages and configuration changes recorded.
func (r *Recorder) Counts() (msgs, confs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.streams {
		for _, e := range s.Events {
			if e.Conf == 0 {
				msgs++
			} else {
				confs++
			}
		}
	}
	return msgs, confs
}

// Check verifies the guarantees over every stream:
//   - no duplicates: a stream delivers a message at most once;
//   - configuration changes in order: regular rings strictly increase, a
//     transitional configuration names the ring it closes and comes before
//     the next regular one, messages belong to the current regular ring;
//   - one order per ring: every stream delivers a ring's positions 1, 2, …
//     with the same message at the same position;
//   - virtual synchrony: streams that move together from ring R to ring R'
//     delivered the same messages in R and the same transitional members;
//   - every delivered message was sent, by the node it names;
//   - self delivery: with final set, every stream that was not killed
//     delivered every message it sent.
func Check(streams []Stream, final bool) error {
	var errs []error
	fail := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	sentBy := map[string]uint32{}
	for _, s := range streams {
		for _, tag := range s.Sent {
			sentBy[tag] = s.Node
		}
	}
	byPos := map[totem.RingID]map[uint64]string{}
	type ringSpan struct {
		msgs    int
		trans   []uint32
		next    totem.RingID
		orphans []string
	}
	spans := make([]map[totem.RingID]*ringSpan, len(streams))
	for si, s := range streams {
		spans[si] = map[totem.RingID]*ringSpan{}
		seen := map[string]string{}
		var cur totem.RingID
		var curSpan *ringSpan
		closed := false // a transitional closed cur
		var lastPos uint64
		for k, e := range s.Events {
			where := fmt.Sprintf("stream %d (node %d) event %d", si, s.Node, k)
			switch e.Conf {
			case 0:
				if at, dup := seen[e.Tag]; dup {
					fail("%s: duplicate delivery of %q: at %s and at %s/%d", where, e.Tag, at, e.Ring, e.Pos)
				}
				seen[e.Tag] = fmt.Sprintf("%s/%d", e.Ring, e.Pos)
				if from, ok := sentBy[e.Tag]; !ok {
					fail("%s: delivered %q that nobody sent", where, e.Tag)
				} else if from != e.ID.Node {
					fail("%s: %q sent by node %d delivered as from node %d", where, e.Tag, from, e.ID.Node)
				}
				if cur.IsZero() {
					fail("%s: message %q before any configuration", where, e.Tag)
				}
				if e.Ring != cur {
					fail("%s: message of ring %s delivered in ring %s", where, e.Ring, cur)
				}
				if closed {
					// An orphan: delivered in the transitional
					// configuration, without a position.
					if e.Pos != 0 {
						fail("%s: message %q at position %d after the transitional configuration", where, e.Tag, e.Pos)
					}
					if curSpan != nil {
						curSpan.msgs++
						curSpan.orphans = append(curSpan.orphans, e.Tag)
					}
					continue
				}
				if e.Pos != lastPos+1 {
					fail("%s: ring %s position %d after %d", where, e.Ring, e.Pos, lastPos)
				}
				lastPos = e.Pos
				m := byPos[e.Ring]
				if m == nil {
					m = map[uint64]string{}
					byPos[e.Ring] = m
				}
				if other, ok := m[e.Pos]; ok && other != e.Tag {
					fail("%s: ring %s position %d is %q here and %q elsewhere", where, e.Ring, e.Pos, e.Tag, other)
				}
				m[e.Pos] = e.Tag
				if curSpan != nil {
					curSpan.msgs++
				}
			case totem.Transitional:
				if e.Ring != cur || closed {
					fail("%s: transitional configuration of ring %s while in %s (closed %v)", where, e.Ring, cur, closed)
				}
				if !slices.Contains(e.Members, s.Node) {
					fail("%s: transitional configuration without this node", where)
				}
				closed = true
				if curSpan != nil {
					curSpan.trans = e.Members
				}
			case totem.Regular:
				if !cur.IsZero() && !closed {
					fail("%s: regular configuration %s without a transitional one closing %s", where, e.Ring, cur)
				}
				if e.Ring.Seq <= cur.Seq {
					fail("%s: ring %s after ring %s: sequence not increasing", where, e.Ring, cur)
				}
				if !slices.Contains(e.Members, s.Node) {
					fail("%s: regular configuration without this node", where)
				}
				if curSpan != nil {
					curSpan.next = e.Ring
				}
				cur, closed, lastPos = e.Ring, false, 0
				curSpan = &ringSpan{}
				spans[si][cur] = curSpan
			}
		}
		if final && !s.Killed {
			for _, tag := range s.Sent {
				if _, ok := seen[tag]; !ok {
					fail("stream %d (node %d): sent %q and never delivered it", si, s.Node, tag)
				}
			}
		}
	}
	// Virtual synchrony: same (R → R') transition, same messages in R.
	for a := range streams {
		for b := a + 1; b < len(streams); b++ {
			for r, sa := range spans[a] {
				sb, ok := spans[b][r]
				if !ok || sa.next.IsZero() || sa.next != sb.next {
					continue
				}
				if sa.msgs != sb.msgs {
					fail("virtual synchrony: streams %d and %d went from ring %s to %s having delivered %d and %d messages in it", a, b, r, sa.next, sa.msgs, sb.msgs)
				}
				if !slices.Equal(sa.orphans, sb.orphans) {
					fail("virtual synchrony: streams %d and %d went from ring %s to %s delivering transitional messages %v and %v", a, b, r, sa.next, sa.orphans, sb.orphans)
				}
				if !slices.Equal(sa.trans, sb.trans) {
					fail("virtual synchrony: streams %d and %d went from ring %s to %s with transitional members %v and %v", a, b, r, sa.next, sa.trans, sb.trans)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Dump renders streams for a failure report (the last n events each).
func Dump(streams []Stream, n int) string {
	var b strings.Builder
	for si, s := range streams {
		fmt.Fprintf(&b, "stream %d node %d killed=%v sent=%d events=%d\n", si, s.Node, s.Killed, len(s.Sent), len(s.Events))
		var confs []Event
		for _, e := range s.Events {
			if e.Conf != 0 {
				confs = append(confs, e)
			}
		}
		for _, e := range confs[max(0, len(confs)-n):] {
			fmt.Fprintf(&b, "  %s %s %v\n", e.Conf, e.Ring, e.Members)
		}
	}
	return b.String()
}

// Unsend forgets a tag whose Mcast was refused.
func (r *Recorder) Unsend(s int, tag string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.streams[s]
	if i := slices.Index(st.Sent, tag); i >= 0 {
		st.Sent = slices.Delete(st.Sent, i, i+1)
	}
}
