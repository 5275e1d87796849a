// Package client talks to a node's objdb processes over the bus: the API
// the CLI and other layers use when they do not keep a copy of their own
// (objdb.Store is that copy).
package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cswire"
)

// Client is one node's objdb as seen over the bus.
type Client struct {
	nc       *nats.Conn
	subjects bus.Subjects
	node     uint32
	// Internal sends writes on objdb's internal write path, which may
	// change read-only keys: for the layers that maintain them, whose bus
	// user may publish there (bus.Access.ObjdbClient(true)).
	Internal bool

	// writes counts this client's write requests; settled is what it
	// had counted at the last Settle that covered them.
	writes, settled atomic.Uint64
}

// New returns a client for node's view of objdb.
func New(nc *nats.Conn, subjects bus.Subjects, node uint32) *Client {
	return &Client{nc: nc, subjects: subjects, node: node}
}

func (c *Client) request(ctx context.Context, op, key string, hdr nats.Header, data []byte) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	subject := c.subjects.ObjdbAPI(c.node, op)
	switch op {
	case objdb.OpGet, objdb.OpList, objdb.OpSettle:
	default:
		// A write, even one that fails, may have changed something.
		c.writes.Add(1)
		if c.Internal {
			subject = c.subjects.ObjdbInternalAPI(c.node, op)
		}
	}
	m := nats.NewMsg(subject)
	for k, v := range hdr {
		m.Header[k] = v
	}
	m.Header.Set(objdb.HdrKey, key)
	m.Data = data
	r, err := c.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("no objdb process serves node %d: %w", c.node, cswire.ErrTryAgain)
		}
		return nil, fmt.Errorf("objdb %s %s: %w", op, key, err)
	}
	if desc := r.Header.Get(micro.ErrorHeader); desc != "" {
		code, _ := strconv.Atoi(r.Header.Get(micro.ErrorCodeHeader))
		return nil, &Error{Code: cswire.Error(code), Desc: desc}
	}
	return r, nil
}

// Error is an error objdb returned; Code is its cs_error_t, so errors.Is
// matches objdb.ErrNotExist and friends.
type Error struct {
	Code cswire.Error
	Desc string
}

func (e *Error) Error() string        { return e.Desc }
func (e *Error) Is(target error) bool { t, ok := target.(cswire.Error); return ok && t == e.Code }
func (e *Error) As(target any) bool {
	if p, ok := target.(*cswire.Error); ok {
		*p = e.Code
		return true
	}
	return false
}

func typed(r *nats.Msg) (objdb.Value, error) {
	t, err := strconv.Atoi(r.Header.Get(objdb.HdrType))
	if err != nil {
		return objdb.Value{}, fmt.Errorf("objdb reply without a type")
	}
	return objdb.Value{Type: objdb.Type(t), Data: r.Data}, nil
}

// Get reads a key.
func (c *Client) Get(ctx context.Context, key string) (objdb.Value, error) {
	r, err := c.request(ctx, objdb.OpGet, key, nil, nil)
	if err != nil {
		return objdb.Value{}, err
	}
	return typed(r)
}

// Set writes a key.
func (c *Client) Set(ctx context.Context, key string, v objdb.Value) error {
	_, err := c.request(ctx, objdb.OpSet, key, nats.Header{objdb.HdrType: []string{strconv.Itoa(int(v.Type))}}, v.Data)
	return err
}

// Delete removes a key.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.request(ctx, objdb.OpDelete, key, nil, nil)
	return err
}

// DeletePrefix removes every key under prefix.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	r, err := c.request(ctx, objdb.OpDeletePrefix, prefix, nil, nil)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(r.Data))
}

// Adjust adds step to an integer key and returns the new value.
func (c *Client) Adjust(ctx context.Context, key string, step int64) (objdb.Value, error) {
	r, err := c.request(ctx, objdb.OpAdjust, key, nil, []byte(strconv.FormatInt(step, 10)))
	if err != nil {
		return objdb.Value{}, err
	}
	return typed(r)
}

// List returns the keys under prefix in key order.
func (c *Client) List(ctx context.Context, prefix string) ([]objdb.ListEntry, error) {
	r, err := c.request(ctx, objdb.OpList, prefix, nil, nil)
	if err != nil {
		return nil, err
	}
	var out []objdb.ListEntry
	if err := json.Unmarshal(r.Data, &out); err != nil {
		return nil, fmt.Errorf("decoding the objdb listing: %w", err)
	}
	return out, nil
}

// Settle returns the Position through which the node's keeper has
// applied this client's writes, once it has (objdb.Store.Settle, in the
// objdb process that serves the node's API): a service answers a request
// that wrote with it, and the gateway that passes the answer on waits
// until its own copy has applied through it. The zero Position, at no
// cost, when the client wrote nothing since the last Settle.
func (c *Client) Settle(ctx context.Context) (objdb.Position, error) {
	n := c.writes.Load()
	if n == c.settled.Load() {
		return objdb.Position{}, nil
	}
	r, err := c.request(ctx, objdb.OpSettle, "", nil, nil)
	if err != nil {
		return objdb.Position{}, err
	}
	p, err := objdb.ParsePosition(r.Header.Get(objdb.HdrPosition))
	if err != nil {
		return objdb.Position{}, fmt.Errorf("objdb settle: %w", err)
	}
	// Another Settle may have covered more meanwhile.
	for {
		cur := c.settled.Load()
		if cur >= n || c.settled.CompareAndSwap(cur, n) {
			return p, nil
		}
	}
}

// Change is a change event as announced on the bus.
type Change struct {
	Kind     string // create, modify, delete
	Key      string
	Node     uint32
	Scope    objdb.Scope
	Old, New *objdb.Value
}

// Track follows changes of key (or every key under it when prefix) in this
// node's view, by subscribing to the change subjects.
func (c *Client) Track(key string, prefix bool, fn func(Change)) (stop func(), err error) {
	subject := c.subjects.ObjdbChanged(objdb.EncodeKey(key))
	if prefix {
		// A prefix need not end at a token boundary ("totem.tok"), so
		// subscribe to the enclosing tokens and filter.
		subject = c.subjects.ObjdbChanged(">")
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			subject = c.subjects.ObjdbChanged(objdb.EncodeKey(key[:i]) + ".>")
		}
	}
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) {
		ch := Change{Kind: m.Header.Get(objdb.HdrOp), Key: m.Header.Get(objdb.HdrKey), Scope: objdb.Scope(m.Header.Get(objdb.HdrScope))}
		n, _ := strconv.ParseUint(m.Header.Get(objdb.HdrNode), 10, 32)
		ch.Node = uint32(n)
		if ch.Scope == objdb.ScopeNode && ch.Node != c.node {
			return // another node's own key: not in this view
		}
		if prefix && !strings.HasPrefix(ch.Key, key) || !prefix && ch.Key != key {
			return
		}
		if t, err := objdb.ParseType(m.Header.Get(objdb.HdrType)); err == nil {
			ch.New = &objdb.Value{Type: t, Data: m.Data}
		}
		if t, err := objdb.ParseType(m.Header.Get(objdb.HdrOldType)); err == nil {
			old, _ := base64.StdEncoding.DecodeString(m.Header.Get(objdb.HdrOld))
			ch.Old = &objdb.Value{Type: t, Data: old}
		}
		fn(ch)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
