package totem

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
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
	// OnDeliver receives the node's deliveries in the total order, from
	// one goroutine. Nil: the client only multicasts.
	OnDeliver func(Delivery)
}

// Client is how a process of a node (a service: cpg, sync, …) multicasts
// in total order and receives the ordered stream, through the node's bus:
// it submits to Subjects.TotemMcast(node) and listens on
// Subjects.TotemDeliverAll(node).
type Client struct {
	nc      *nats.Conn
	node    uint32
	origin  uint32
	subject string
	seq     atomic.Uint64
	slots   chan struct{}
	sub     *nats.Subscription
	on      func(Delivery)

	mu  sync.Mutex
	buf []byte
}

// NewClient attaches to node's totem over nc.
func NewClient(nc *nats.Conn, subjects bus.Subjects, node uint32, opts ClientOptions) (*Client, error) {
	if opts.Window <= 0 {
		opts.Window = 1024
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("totem client: origin: %w", err)
	}
	c := &Client{
		nc:      nc,
		node:    node,
		origin:  binary.BigEndian.Uint32(b[:]) | 1,
		subject: subjects.TotemMcast(node),
		slots:   make(chan struct{}, opts.Window),
		on:      opts.OnDeliver,
	}
	sub, err := nc.Subscribe(subjects.TotemDeliverAll(node), c.onDeliver)
	if err != nil {
		return nil, fmt.Errorf("totem client: subscribing to node %d's deliveries: %w", node, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	c.sub = sub
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("totem client: %w", err)
	}
	return c, nil
}

// Origin is this client's origin id: its messages carry ID.Origin ==
// Origin() and ID.Node == the node.
func (c *Client) Origin() uint32 { return c.origin }

// Mcast multicasts payload for service in total order, blocking while the
// window is full. service must be a subject token (no dots, no spaces).
func (c *Client) Mcast(ctx context.Context, service string, payload []byte) (MsgID, error) {
	if len(payload) > MaxPayload {
		return MsgID{}, ErrTooLarge
	}
	if len(service) > 255 || strings.ContainsAny(service, ". \t\r\n*>") || service == "" {
		return MsgID{}, fmt.Errorf("totem client: service %q is not a subject token", service)
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return MsgID{}, ctx.Err()
	}
	id := MsgID{Node: c.node, Origin: c.origin, Seq: c.seq.Add(1)}
	c.mu.Lock()
	c.buf = appendSubmit(c.buf[:0], c.origin, id.Seq, service, payload)
	err := c.nc.Publish(c.subject, c.buf)
	c.mu.Unlock()
	if err != nil {
		<-c.slots
		return MsgID{}, fmt.Errorf("totem client: submitting: %w", err)
	}
	return id, nil
}

// Flush waits until the bus has every submitted message.
func (c *Client) Flush(timeout time.Duration) error {
	if err := c.nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("totem client: flush: %w", err)
	}
	return nil
}

func (c *Client) onDeliver(m *nats.Msg) {
	tok := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if tok == "_confchg" {
		var cc ConfChg
		if err := json.Unmarshal(m.Data, &cc); err != nil {
			return
		}
		if c.on != nil {
			c.on(Delivery{ConfChg: &cc})
		}
		return
	}
	msg, err := ParseDeliver(tok, m.Data)
	if err != nil {
		return
	}
	if msg.ID.Node == c.node && msg.ID.Origin == c.origin {
		select {
		case <-c.slots:
		default:
		}
	}
	if c.on != nil {
		c.on(Delivery{Message: &msg})
	}
}

// Close stops the deliveries.
func (c *Client) Close() error {
	if err := c.sub.Unsubscribe(); err != nil {
		return fmt.Errorf("totem client: %w", err)
	}
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
