package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/beat"
	"github.com/corobus/corobus/loader/hdb"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
	// Node is the node whose loader (and search path) resolves.
	Node uint32
	Log  *slog.Logger
	// HoldInterval is how often held references are restated to the
	// loader while they do not change (a change is restated at once);
	// default DefaultHoldInterval.
	HoldInterval time.Duration
	// Timeout bounds one loader request; default 2s.
	Timeout time.Duration
}

// Client references components through a node's loader and sends requests
// through the handles it hands out. What a handle resolves to is cached in
// the handle's object and refreshed when the loader publishes a change for
// its name, or when a request meets a retiring instance ("moved") or no
// instance at all; otherwise a request is one NATS request on the cached
// subject.
type Client struct {
	cfg    ClientConfig
	holder string
	db     *hdb.DB[*ref]
	seq    atomic.Uint64
	idBase string

	mu      sync.Mutex
	watches map[string]*nats.Subscription

	// changed pokes the hold loop to restate at once: the loader learns
	// the hold interval (its holder's time to live) from a restatement.
	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// ref is the object behind a handle.
type ref struct {
	name    string
	version uint32
	target  atomic.Pointer[Target]
	// resolving serializes re-resolutions of one ref, so that answers are
	// stored in the order they were asked for.
	resolving sync.Mutex
	// resolves counts re-resolutions (for tests and listings).
	resolves atomic.Uint64
}

// NewClient starts a client; Close it.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Conn == nil {
		return nil, errors.New("loader client: no connection")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HoldInterval <= 0 {
		cfg.HoldInterval = DefaultHoldInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	c := &Client{
		cfg:     cfg,
		holder:  nuid.Next(),
		watches: map[string]*nats.Subscription{},
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.idBase = c.holder + "."
	c.db = hdb.New(func(_ hdb.Handle, r *ref) { c.unwatchIfUnused(r.name) })
	go c.holdLoop()
	return c, nil
}

// Holder is the id the loader counts this client's references under.
func (c *Client) Holder() string { return c.holder }

// Close stops restating references (the loader forgets them within a few
// hold intervals) and unsubscribes. Handles become invalid.
func (c *Client) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, sub := range c.watches {
		_ = sub.Unsubscribe()
		delete(c.watches, name)
	}
}

// Reference resolves (name, version) through the loader's search path and
// returns a handle to it, counted by the loader until Release.
func (c *Client) Reference(ctx context.Context, name string, version uint32) (hdb.Handle, error) {
	// Watch before resolving: a change between the answer and the
	// subscription would otherwise go unnoticed.
	if err := c.watch(name); err != nil {
		return 0, err
	}
	t, err := c.loaderCall(ctx, APIReference, RefRequest{Holder: c.holder, Name: name, Version: version})
	if err != nil {
		c.unwatchIfUnused(name)
		return 0, err
	}
	r := &ref{name: name, version: version}
	r.target.Store(&t)
	h := c.db.Create(r)
	c.heldChanged()
	return h, nil
}

// heldChanged has the hold loop restate the references now.
func (c *Client) heldChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Release drops a handle. Requests in flight through it finish; later
// ones are refused with hdb.ErrDestroyed or hdb.ErrStale.
func (c *Client) Release(ctx context.Context, h hdb.Handle) error {
	r, err := c.db.Get(h)
	if err != nil {
		return fmt.Errorf("releasing: %w", err)
	}
	_ = c.db.Put(h)
	if err := c.db.Destroy(h); err != nil {
		return fmt.Errorf("releasing: %w", err)
	}
	c.heldChanged()
	if _, err := c.loaderCall(ctx, APIRelease, RefRequest{Holder: c.holder, Name: r.name, Version: r.version}); err != nil {
		// The loader's count is soft state: the next hold message
		// restates the truth.
		c.cfg.Log.Debug("telling the loader about a release", "component", r.name, "err", err)
	}
	return nil
}

// Target is what h resolves to now (nil Target fields when nothing serves
// it at the moment).
func (c *Client) Target(h hdb.Handle) (Target, error) {
	r, err := c.db.Get(h)
	if err != nil {
		return Target{}, err
	}
	defer func() { _ = c.db.Put(h) }()
	if t := r.target.Load(); t != nil {
		return *t, nil
	}
	return Target{Name: r.name, Requested: r.version}, nil
}

// Resolves is how many times h was re-resolved after Reference.
func (c *Client) Resolves(h hdb.Handle) (uint64, error) {
	r, err := c.db.Get(h)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.db.Put(h) }()
	return r.resolves.Load(), nil
}

// Request sends data to function fn of h's component and returns the
// reply. See RequestMsg.
func (c *Client) Request(ctx context.Context, h hdb.Handle, fn string, data []byte) (*nats.Msg, error) {
	m := nats.NewMsg("")
	m.Data = data
	return c.RequestMsg(ctx, h, fn, m)
}

// RequestMsg sends m (its subject is set here) to function fn of h's
// component. A request is resent only when it was certainly not served:
// the reply said "moved" (a retiring instance refused it) or nothing was
// subscribed (no responders); then the handle is re-resolved first. A
// request that times out is not resent, since it may have been served.
// Without a deadline in ctx, the client's Timeout applies.
func (c *Client) RequestMsg(ctx context.Context, h hdb.Handle, fn string, m *nats.Msg) (*nats.Msg, error) {
	r, err := c.db.Get(h)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.db.Put(h) }()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	if m.Header.Get(HdrReqID) == "" {
		m.Header.Set(HdrReqID, c.idBase+strconv.FormatUint(c.seq.Add(1), 10))
	}
	backoff := 2 * time.Millisecond
	for {
		t := r.target.Load()
		if t == nil || t.Subject == "" {
			if err := c.resolve(ctx, r, t); err != nil && ctx.Err() != nil {
				return nil, fmt.Errorf("%s version %d: %w (%v)", r.name, r.version, ErrUnavailable, err)
			}
			if r.target.Load() == t {
				if err := sleep(ctx, &backoff); err != nil {
					return nil, fmt.Errorf("%s version %d: %w", r.name, r.version, ErrUnavailable)
				}
			}
			continue
		}
		m.Subject = t.Subject + "." + fn
		reply, err := c.cfg.Conn.RequestMsgWithContext(ctx, m)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			// Not delivered to anyone: safe to resend once resolved.
		case err != nil:
			return nil, fmt.Errorf("%s version %d, %s: %w", r.name, r.version, m.Subject, err)
		case reply.Header.Get(HdrStatus) == StatusMoved:
			// Refused by a retiring instance: safe to resend.
		case reply.Header.Get(HdrError) != "":
			return reply, &RemoteError{Instance: reply.Header.Get(HdrInstance), Text: reply.Header.Get(HdrError)}
		default:
			return reply, nil
		}
		_ = c.resolve(ctx, r, t)
		if r.target.Load() == t || sameTarget(r.target.Load(), t) {
			if err := sleep(ctx, &backoff); err != nil {
				return nil, fmt.Errorf("%s version %d at %s: %w", r.name, r.version, t.Subject, ErrUnavailable)
			}
		} else {
			backoff = 2 * time.Millisecond
		}
	}
}

func sameTarget(a, b *Target) bool {
	return a != nil && b != nil && a.Subject == b.Subject
}

// sleep waits *d (doubling it up to 250ms for the next time) or until ctx
// ends.
func sleep(ctx context.Context, d *time.Duration) error {
	t := time.NewTimer(*d)
	defer t.Stop()
	*d = min(2**d, 250*time.Millisecond)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resolve asks the loader again what r resolves to, unless someone else
// already replaced seen while this call waited for its turn.
func (c *Client) resolve(ctx context.Context, r *ref, seen *Target) error {
	r.resolving.Lock()
	defer r.resolving.Unlock()
	if cur := r.target.Load(); cur != seen && seen != nil {
		return nil
	}
	t, err := c.loaderCall(ctx, APIResolve, RefRequest{Name: r.name, Version: r.version})
	switch {
	case err == nil:
		r.target.Store(&t)
	case errors.Is(err, ErrNotFound):
		// Nothing serves it now (a crashed instance not back yet):
		// requests wait for it until their deadline.
		r.target.Store(nil)
	default:
		// The loader is away: keep the last known target, which may
		// well still serve.
		return err
	}
	r.resolves.Add(1)
	return err
}

// loaderCall makes one loader API request.
func (c *Client) loaderCall(ctx context.Context, op string, q RefRequest) (Target, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	data, _ := json.Marshal(q)
	reply, err := c.cfg.Conn.RequestWithContext(ctx, c.cfg.Subjects.LcrAPI(c.cfg.Node, op), data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return Target{}, fmt.Errorf("no loader serves node %d: %w", c.cfg.Node, err)
		}
		return Target{}, fmt.Errorf("loader %s %s: %w", op, q.Name, err)
	}
	if desc := reply.Header.Get(micro.ErrorHeader); desc != "" {
		if reply.Header.Get(micro.ErrorCodeHeader) == "404" {
			return Target{}, fmt.Errorf("%s: %w", desc, ErrNotFound)
		}
		return Target{}, fmt.Errorf("loader %s %s: %s", op, q.Name, desc)
	}
	var t Target
	if op == APIRelease {
		return t, nil
	}
	if err := json.Unmarshal(reply.Data, &t); err != nil {
		return Target{}, fmt.Errorf("loader %s %s: decoding the reply: %w", op, q.Name, err)
	}
	return t, nil
}

// watch subscribes to the loader's changes of name (once per name).
func (c *Client) watch(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.watches[name]; ok {
		return nil
	}
	sub, err := c.cfg.Conn.Subscribe(c.cfg.Subjects.LcrChanged(c.cfg.Node, name), func(*nats.Msg) {
		// Re-resolve outside the subscription's goroutine: a resolve
		// is a request, and changes of other refs should not wait.
		c.db.Each(func(h hdb.Handle, r *ref) {
			if r.name != name {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
				defer cancel()
				_ = c.resolve(ctx, r, nil)
			}()
		})
	})
	if err != nil {
		return fmt.Errorf("watching %s: %w", name, err)
	}
	// The subscription must be in place at the server before the
	// reference is resolved.
	if err := c.cfg.Conn.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("watching %s: %w", name, err)
	}
	c.watches[name] = sub
	return nil
}

func (c *Client) unwatchIfUnused(name string) {
	used := false
	c.db.Each(func(_ hdb.Handle, r *ref) { used = used || r.name == name })
	if used {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if sub, ok := c.watches[name]; ok {
		_ = sub.Unsubscribe()
		delete(c.watches, name)
	}
}

// Held lists what this client holds, as it restates it to the loader.
func (c *Client) Held() []HeldRef {
	counts := map[refKey]int{}
	c.db.Each(func(_ hdb.Handle, r *ref) { counts[refKey{r.name, r.version}]++ })
	out := make([]HeldRef, 0, len(counts))
	for k, n := range counts {
		out = append(out, HeldRef{Name: k.name, Version: k.version, Count: n})
	}
	slices.SortFunc(out, func(a, b HeldRef) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return int(a.Version) - int(b.Version)
	})
	return out
}

// holdLoop restates the held references at once when they change, and
// on the wall clock's multiples of HoldInterval (bus/beat), with the
// heartbeats of the node's component instances: the loader wakes once
// for all of them at rest.
func (c *Client) holdLoop() {
	defer close(c.done)
	t := time.NewTimer(time.Until(beat.Next(time.Now(), c.cfg.HoldInterval)))
	defer t.Stop()
	for {
		changed := false
		select {
		case <-c.stop:
			return
		case <-c.changed:
			changed = true
		case <-t.C:
		}
		t.Reset(time.Until(beat.Next(time.Now(), c.cfg.HoldInterval)))
		held := c.Held()
		if len(held) == 0 && !changed {
			continue // nothing held: nothing to restate (a change to nothing is, once)
		}
		data, _ := json.Marshal(HoldMsg{Holder: c.holder, IntervalMS: c.cfg.HoldInterval.Milliseconds(), Refs: held})
		_ = c.cfg.Conn.Publish(c.cfg.Subjects.LcrHold(c.cfg.Node), data)
	}
}
