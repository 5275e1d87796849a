package totem

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
)

// Delivery is one item of a node's ordered delivery stream: a message or a
// configuration change (exactly one is set).
type Delivery struct {
	Message *Message
	ConfChg *ConfChg
}

// ClientOptions shape a Client.
type ClientOptions struct {
	// Window bounds this client's messages in flight (multicast, not yet
	// delivered back to this node); Mcast blocks beyond it. Default 1024.
	Window int
	// Service is the one service whose deliveries this client receives:
	// its messages in the total order, interleaved with the node's
	// configuration changes exactly where the node delivered them. Empty:
	// the client receives nothing but its own messages, to count them
	// out of its window.
	Service string
	// OnDeliver receives Service's deliveries, from one goroutine. Nil:
	// the client only multicasts.
	OnDeliver func(Delivery)
	// OnListen, when set, runs (on its own goroutine) each time the bus
	// learns the service again after NewClient returned — a restarted
	// bus, or one that was not up yet: configuration changes it published
	// before were not seen.
	OnListen func()
	// KeepOwn: this client keeps the payload of each of its large
	// multicasts on Service (keepMin bytes and more) until it is delivered
	// back, and the node's bus, while this client is the only one that
	// named Service to it, delivers such a message to it without the
	// payload (KeptHeader): the payload does not cross the bus process
	// and the socket a second time on the sender's node. For a service
	// with one receiving client per node (CPG). A client of the same
	// service that subscribes after the bus last looked, before it names
	// the service, gets such a frame and cannot deliver it: it drops it,
	// as it would have missed it a moment earlier.
	KeepOwn bool
}

// keepMin is the smallest multicast a KeepOwn client keeps: below it the
// payload costs less than the bookkeeping.
const keepMin = 4 << 10

// droppableMin is the smallest droppable multicast a bus delivers
// without its payload (SkipPayloads): below it the header that marks a
// skipped frame costs more than the payload it spares. The same size as
// keepMin because it weighs the same kind of trade (a header against a
// payload), not because one follows from the other. A message nobody
// wants by its key (WantKeys) is not delivered at all, whatever its size.
const droppableMin = 4 << 10

// Client is how a process of a node (a service: cpg, sync, …) multicasts
// in total order and receives the ordered stream, through the node's bus.
// It submits to Subjects.TotemMcast(node) and subscribes to nothing but
// the TotemDeliver subjects of the services it uses — its own, and those
// it multicasts on, for its window — so that no process receives and
// discards the deliveries of services it does not serve.
type Client struct {
	nc       *nats.Conn
	subjects bus.Subjects
	node     uint32
	origin   uint32
	subject  string
	service  string
	seq      atomic.Uint64
	slots    chan struct{}
	on       func(Delivery)
	onListen func()
	done     chan struct{}
	closed   sync.Once

	mu      sync.Mutex
	buf     []byte
	subs    []*nats.Subscription
	silent  map[string]bool // services multicast on, subscribed for the window
	keepOwn bool
	// keptMu guards kept, the payloads of own multicasts on service kept
	// until they come back (KeepOwn), by sequence. Its own lock: a
	// delivery does not wait for a submit's publish.
	keptMu sync.Mutex
	kept   map[uint64][]byte
	// regMu orders the client's listen requests, so that the bus ends
	// with the last skip and keys said (SkipPayloads, WantKeys),
	// whichever request a restarted bus's ask raced with; skip, filter
	// and keys are under it.
	regMu  sync.Mutex
	skip   bool
	filter bool     // WantKeys was called: other nodes' droppable messages of keys only
	keys   []uint32 // the keys wanted, when filter
	// status receives nc's reconnections: a new connection has a new id,
	// which the bus must have (listenRequest.CID).
	status chan nats.Status
}

// NewClient attaches to node's totem over nc.
func NewClient(nc *nats.Conn, subjects bus.Subjects, node uint32, opts ClientOptions) (*Client, error) {
	if opts.Window <= 0 {
		opts.Window = 1024
	}
	if opts.Service != "" && !validService(opts.Service) {
		return nil, fmt.Errorf("totem client: service %q is not a subject token", opts.Service)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("totem client: origin: %w", err)
	}
	c := &Client{
		nc:       nc,
		subjects: subjects,
		node:     node,
		origin:   binary.BigEndian.Uint32(b[:]) | 1,
		subject:  subjects.TotemMcast(node),
		service:  opts.Service,
		slots:    make(chan struct{}, opts.Window),
		on:       opts.OnDeliver,
		onListen: opts.OnListen,
		done:     make(chan struct{}),
		silent:   map[string]bool{},
		keepOwn:  opts.KeepOwn && opts.Service != "",
		kept:     map[uint64][]byte{},
	}
	if c.service == "" {
		return c, nil
	}
	if err := c.subscribe(opts.Service, c.onDeliver); err != nil {
		return nil, err
	}
	// The node's configuration changes come on the same subject once the
	// bus knows this service listens; a restarted bus asks again.
	ask, err := nc.Subscribe(subjects.TotemListenAsk(node), func(*nats.Msg) { go c.listen() })
	if err != nil {
		c.unsubscribeAll()
		return nil, fmt.Errorf("totem client: %w", err)
	}
	c.mu.Lock()
	c.subs = append(c.subs, ask)
	c.mu.Unlock()
	// Before the first request: a reconnection after it is seen.
	c.status = nc.StatusChanged(nats.CONNECTED)
	go c.relisten(c.status)
	if err := c.register(time.Second); err != nil {
		// The bus's totem is not up yet: keep trying in the background
		// (it also asks when it starts).
		go c.listen()
	}
	return c, nil
}

// relisten names the service again each time nc reconnects, until Close
// closes status: the bus forgets a registration when its connection
// closes (listenRequest.CID), and a restarted bus forgot them all.
func (c *Client) relisten(status <-chan nats.Status) {
	for range status {
		c.listen()
	}
}

// subscribe listens to service's deliver subject with h, flushed, so that
// nothing published after it returns is missed.
func (c *Client) subscribe(service string, h nats.MsgHandler) error {
	sub, err := c.nc.Subscribe(c.subjects.TotemDeliver(c.node, service), h)
	if err != nil {
		return fmt.Errorf("totem client: subscribing to node %d's %s deliveries: %w", c.node, service, err)
	}
	// Ordering must not lose messages to the slow-consumer limit: the
	// senders' windows bound what can pile up.
	_ = sub.SetPendingLimits(-1, -1)
	c.mu.Lock()
	c.subs = append(c.subs, sub)
	c.mu.Unlock()
	if err := c.nc.Flush(); err != nil {
		return fmt.Errorf("totem client: %w", err)
	}
	return nil
}

func (c *Client) register(timeout time.Duration) error {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	return c.registerLocked(timeout)
}

// registerLocked names the service, with the client's skip and keys, to
// the bus. Called with regMu held.
func (c *Client) registerLocked(timeout time.Duration) error {
	r := listenRequest{Service: c.service, Origin: c.origin, Skip: c.skip, Filter: c.filter, Keys: c.keys}
	// The connection the request goes on. Should nc reconnect before it
	// is sent, the request names the old one, but relisten's request
	// follows it (regMu) with the new.
	if cid, err := c.nc.GetClientID(); err == nil {
		r.Server, r.CID = c.nc.ConnectedServerId(), cid
	}
	b, _ := json.Marshal(r)
	m, err := c.nc.Request(c.subjects.TotemListen(c.node), b, timeout)
	if err != nil {
		return fmt.Errorf("totem client: naming service %s to node %d's totem: %w", c.service, c.node, err)
	}
	var rep struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil || !rep.OK {
		return fmt.Errorf("totem client: node %d's totem refused service %s: %s", c.node, c.service, rep.Error)
	}
	return nil
}

// listen registers the service until it succeeds or the client closes.
func (c *Client) listen() {
	for pause := 100 * time.Millisecond; ; pause = min(2*pause, 2*time.Second) {
		if c.register(time.Second) == nil {
			if c.onListen != nil {
				c.onListen()
			}
			return
		}
		select {
		case <-c.done:
			return
		case <-time.After(pause):
		}
	}
}

// SkipPayloads tells the node's bus whether this client has a use for
// the payloads of droppable messages (McastPartsDroppable) from other
// nodes. While every client that named the service to the bus skips them,
// those messages come without their payload (Message.Skipped), in their
// place in the order. It returns once the bus has the new setting: a
// message the bus delivers after SkipPayloads(false) returned comes
// whole. A client without a service has nothing to skip.
func (c *Client) SkipPayloads(skip bool, timeout time.Duration) error {
	if c.service == "" {
		return nil
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	c.skip = skip
	return c.registerLocked(timeout)
}

// WantKeys tells the node's bus which of other nodes' droppable messages
// (McastPartsDroppable) this client has a use for: those whose key is in
// keys. While no client that named the service to the bus wants a
// message's key, the bus does not deliver it at all — neither payload nor
// frame: it has no place in this client's stream. Before the first call a
// client wants every key. It returns once the bus has the new set: a
// message the bus delivers after it returned is judged by it, so one
// ordered after a multicast submitted after WantKeys returned is delivered
// if its key is in keys. Its own node's messages always come. A client
// without a service has nothing to filter.
func (c *Client) WantKeys(keys []uint32, timeout time.Duration) error {
	if c.service == "" {
		return nil
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	c.filter, c.keys = true, slices.Clone(keys)
	return c.registerLocked(timeout)
}

// Origin is this client's origin id: its messages carry ID.Origin ==
// Origin() and ID.Node == the node.
func (c *Client) Origin() uint32 { return c.origin }

// Mcast multicasts payload for service in total order, blocking while the
// window is full. service must be a subject token (no dots, no spaces).
func (c *Client) Mcast(ctx context.Context, service string, payload []byte) (MsgID, error) {
	return c.mcast(ctx, service, payload, nil, 0, true)
}

// McastParts is Mcast of the payload head followed by tail, without
// joining them first: a service's frame header and its client's message
// are copied once, into the submit frame.
func (c *Client) McastParts(ctx context.Context, service string, head, tail []byte) (MsgID, error) {
	return c.mcast(ctx, service, head, tail, 0, true)
}

// McastPartsDroppable is McastParts of a droppable message with key:
// another node's bus does not deliver it while no client of service there
// wants key (WantKeys), and delivers it without its payload
// (Message.Skipped, droppableMin bytes and more) while every client of
// service there skips droppable payloads (SkipPayloads). Its sender's own
// node delivers it whole (or kept).
func (c *Client) McastPartsDroppable(ctx context.Context, service string, key uint32, head, tail []byte) (MsgID, error) {
	return c.mcastKey(ctx, service, head, tail, submitDroppable, key, true)
}

// TryMcast is Mcast without the wait: ErrTryAgain when the window is full.
func (c *Client) TryMcast(service string, payload []byte) (MsgID, error) {
	return c.mcast(context.Background(), service, payload, nil, 0, false)
}

func (c *Client) mcast(ctx context.Context, service string, payload, tail []byte, flags byte, wait bool) (MsgID, error) {
	return c.mcastKey(ctx, service, payload, tail, flags, 0, wait)
}

func (c *Client) mcastKey(ctx context.Context, service string, payload, tail []byte, flags byte, key uint32, wait bool) (MsgID, error) {
	if len(payload)+len(tail) > MaxPayload {
		return MsgID{}, ErrTooLarge
	}
	if !validService(service) {
		return MsgID{}, fmt.Errorf("totem client: service %q is not a subject token", service)
	}
	if service != c.service {
		if err := c.watch(service); err != nil {
			return MsgID{}, err
		}
	}
	if wait {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return MsgID{}, ctx.Err()
		}
	} else {
		select {
		case c.slots <- struct{}{}:
		default:
			return MsgID{}, ErrTryAgain
		}
	}
	// The sequence is taken under the lock that orders the publishes: a
	// node sequences each origin's messages in the order they arrive.
	c.mu.Lock()
	id := MsgID{Node: c.node, Origin: c.origin, Seq: c.seq.Add(1)}
	var err error
	if size := len(payload) + len(tail); c.keepOwn && service == c.service && size >= keepMin {
		// A frame of its own: its payload is what comes back.
		head := submitHdr + len(service)
		if flags&submitDroppable != 0 {
			head += 4 // the key
		}
		b := append(appendSubmit(make([]byte, 0, head+size), c.origin, id.Seq, flags|submitKept, service, key, payload), tail...)
		c.keptMu.Lock()
		c.kept[id.Seq] = b[head:]
		c.keptMu.Unlock()
		if err = c.nc.Publish(c.subject, b); err != nil {
			c.takeKept(id)
		}
	} else {
		c.buf = append(appendSubmit(c.buf[:0], c.origin, id.Seq, flags, service, key, payload), tail...)
		err = c.nc.Publish(c.subject, c.buf)
	}
	c.mu.Unlock()
	if err != nil {
		<-c.slots
		return MsgID{}, fmt.Errorf("totem client: submitting: %w", err)
	}
	return id, nil
}

// takeKept returns and forgets the kept payload of an own message
// delivered back (whole or kept).
func (c *Client) takeKept(id MsgID) ([]byte, bool) {
	if !c.keepOwn || id.Node != c.node || id.Origin != c.origin {
		return nil, false
	}
	c.keptMu.Lock()
	defer c.keptMu.Unlock()
	p, ok := c.kept[id.Seq]
	if ok {
		delete(c.kept, id.Seq)
	}
	return p, ok
}

// InFlight is how many of this client's messages are multicast and not
// yet delivered back; Window is its bound.
func (c *Client) InFlight() int { return len(c.slots) }

// Window is the client's bound on messages in flight.
func (c *Client) Window() int { return cap(c.slots) }

// watch subscribes, once, to the deliveries of a service this client
// multicasts on without receiving it: its own messages free its window.
func (c *Client) watch(service string) error {
	c.mu.Lock()
	ok := c.silent[service]
	c.mu.Unlock()
	if ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.silent[service] {
		return nil
	}
	sub, err := c.nc.Subscribe(c.subjects.TotemDeliver(c.node, service), func(m *nats.Msg) {
		if msg, err := ParseDeliver(service, m.Data); err == nil {
			c.own(msg.ID)
		}
	})
	if err != nil {
		return fmt.Errorf("totem client: subscribing to node %d's %s deliveries: %w", c.node, service, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := c.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("totem client: %w", err)
	}
	c.subs = append(c.subs, sub)
	c.silent[service] = true
	return nil
}

// own frees a window slot when one of this client's messages is back.
func (c *Client) own(id MsgID) {
	if id.Node == c.node && id.Origin == c.origin {
		select {
		case <-c.slots:
		default:
		}
	}
}

// Flush waits until the bus has every submitted message.
func (c *Client) Flush(timeout time.Duration) error {
	if err := c.nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("totem client: flush: %w", err)
	}
	return nil
}

func (c *Client) onDeliver(m *nats.Msg) {
	msg, err := ParseDeliver(c.service, m.Data)
	if err != nil {
		return
	}
	p, ok := c.takeKept(msg.ID)
	if m.Header.Get(KeptHeader) != "" {
		if !ok {
			// Not ours to fill (ClientOptions.KeepOwn): a frame of
			// another client of this service, from before this one
			// named it.
			c.own(msg.ID)
			return
		}
		msg.Payload = p
	} else if m.Header.Get(SkippedHeader) != "" {
		msg.Payload, msg.Skipped = nil, true
	}
	if msg.ID.Node == 0 {
		// A configuration change, in its place among the messages.
		var cc ConfChg
		if err := json.Unmarshal(msg.Payload, &cc); err != nil {
			return
		}
		if c.on != nil {
			c.on(Delivery{ConfChg: &cc})
		}
		return
	}
	c.own(msg.ID)
	if c.on != nil {
		c.on(Delivery{Message: &msg})
	}
}

func (c *Client) unsubscribeAll() {
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// Close stops the deliveries and tells the bus that this client no longer
// listens (its service may go without payload to another KeepOwn client).
func (c *Client) Close() error {
	c.closed.Do(func() {
		close(c.done)
		if c.status != nil {
			c.nc.RemoveStatusListener(c.status)
		}
		if c.service != "" {
			b, _ := json.Marshal(listenRequest{Service: c.service, Origin: c.origin, Leave: true})
			_ = c.nc.Publish(c.subjects.TotemListen(c.node), b)
		}
	})
	c.unsubscribeAll()
	return nil
}

// FetchStatus asks node's totem for its status.
func FetchStatus(nc *nats.Conn, subjects bus.Subjects, node uint32, timeout time.Duration) (Status, error) {
	msg, err := nc.Request(subjects.TotemStatus(node), nil, timeout)
	if err != nil {
		return Status{}, fmt.Errorf("asking node %d's totem for its status: %w", node, err)
	}
	var st Status
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		return Status{}, fmt.Errorf("decoding node %d's totem status: %w", node, err)
	}
	return st, nil
}

// validService tells a service name that is one subject token.
func validService(s string) bool {
	return s != "" && len(s) <= maxService && !strings.ContainsAny(s, ". \t\r\n*>")
}
