package cmap

import (
	"bytes"
	"context"
	"log/slog"
	"sync"

	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/session"
)

// Value is a typed cmap value: Type is libcmap's cmap_value_types_t.
type Value struct {
	Type uint8
	Data []byte
}

// Entry is a key with its value.
type Entry struct {
	Key   string
	Value Value
}

// Event is a change of a tracked key.
type Event struct {
	Kind     int32 // TrackAdd, TrackModify or TrackDelete
	Key      string
	Old, New *Value // nil where there is none (Old of an add, New of a delete)
}

// Store is the object database as the cmap service needs it. Errors carry
// cs_error_t codes (cswire.Error) where corosync would return one:
// CS_ERR_NOT_EXIST (also for reading or deleting a key of a bad name, which
// cannot exist), CS_ERR_ACCESS for a read-only key, CS_ERR_NAME_TOO_LONG for
// setting a key of a bad name, CS_ERR_INVALID_PARAM for a bad type or value,
// CS_ERR_TRY_AGAIN when a write cannot be replicated now.
type Store interface {
	Get(ctx context.Context, key string) (Value, error)
	Set(ctx context.Context, key string, v Value) error
	Delete(ctx context.Context, key string) error
	// Adjust adds step to an integer key atomically (cmap_inc, cmap_dec).
	Adjust(ctx context.Context, key string, step int32) error
	// List returns the keys under prefix in key order.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// Track calls fn for changes of key (or of every key under it when
	// prefix is set) until stop is called. fn is called from one goroutine
	// in change order.
	Track(ctx context.Context, key string, prefix bool, fn func(Event)) (stop func(), err error)
}

// StatsSource computes the stats map's entries whose keys start with
// prefix, now, in key order: corosync computes its stats map when it is
// read, and so does corobus — counters are never written anywhere.
type StatsSource func(ctx context.Context, prefix string) ([]Entry, error)

// Service is the cmap component: it opens a session per client
// connection. Maps: the default map is objdb; the stats map
// (cmap_set_current_map(CMAP_MAP_STATS)) is computed on each read by the
// stats source (SetStats; docs/objdb.md).
type Service struct {
	store      Store
	stats      StatsSource
	statsClear StatsClear
	log        *slog.Logger
}

// NewService builds the cmap component over store.
func NewService(store Store, log *slog.Logger) *Service {
	return &Service{store: store, log: log}
}

// SetStats sets where the stats map comes from; called before the service
// serves. Without a source the stats map is empty.
func (s *Service) SetStats(src StatsSource) { s.stats = src }

// SetStatsClear sets what corosync's stats.clear.* keys reset; called
// before the service serves. Without it they reset nothing.
func (s *Service) SetStatsClear(c StatsClear) { s.statsClear = c }

// EventSink takes a connection's event messages (track notifications).
type EventSink interface {
	SendEvent(msg []byte) error
}

// Open implements session.Handler: a connection carried over the bus.
func (s *Service) Open(c *session.Conn) (session.Session, error) {
	return s.OpenConn(c, c.ID), nil
}

// OpenConn starts the state of one libcmap connection whose events go to
// sink; label names it in logs.
func (s *Service) OpenConn(sink EventSink, label string) *Conn {
	return &Conn{svc: s, sink: sink, label: label, iters: map[uint64]*iter{}, tracks: map[uint64]*track{}}
}

// Conn is one libcmap connection's state: iterators and tracks, each behind
// a handle that only this connection can name.
type Conn struct {
	svc   *Service
	sink  EventSink
	label string
	stats bool // set_current_map(STATS)

	mu         sync.Mutex
	nextHandle uint64
	iters      map[uint64]*iter
	tracks     map[uint64]*track
}

type iter struct {
	entries []Entry
	pos     int
}

type track struct {
	stop    func()
	userCtx uint64 // the client's track_inst_handle
}

func (c *Conn) handle() uint64 {
	c.nextHandle++
	// Handles start high and are never zero: libcmap treats 0 as "none".
	return c.nextHandle | 0x1000_0000_0000
}

// Request implements session.Session.
func (c *Conn) Request(ctx context.Context, msg []byte) []byte {
	r, err := DecodeRequest(msg)
	if err != nil {
		c.svc.log.Warn("malformed cmap request", "conn", c.label, "err", err)
		return EncodeStatus(r.ID, cswire.ErrInvalidParam)
	}
	if c.stats {
		if resp, ok := c.statsRequest(ctx, r); ok {
			return resp
		}
	}
	st := c.svc.store
	switch r.ID {
	case ReqSet:
		// The value is copied: msg may be the gateway's buffer
		// (BorrowsRequests), and the store keeps what it is given.
		return EncodeStatus(r.ID, cswire.Code(st.Set(ctx, r.Key, Value{Type: r.Type, Data: bytes.Clone(r.Value)})))
	case ReqDelete:
		return EncodeStatus(r.ID, cswire.Code(st.Delete(ctx, r.Key)))
	case ReqGet:
		v, err := st.Get(ctx, r.Key)
		if err != nil {
			return EncodeStatus(r.ID, cswire.Code(err))
		}
		return EncodeGet(v.Type, v.Data, r.MaxLen)
	case ReqAdjustInt:
		return EncodeStatus(r.ID, cswire.Code(st.Adjust(ctx, r.Key, r.Step)))
	case ReqIterInit:
		entries, err := st.List(ctx, r.Key)
		if err != nil {
			return EncodeStatus(r.ID, cswire.Code(err))
		}
		c.mu.Lock()
		h := c.handle()
		c.iters[h] = &iter{entries: entries}
		c.mu.Unlock()
		return EncodeHandle(r.ID, h)
	case ReqIterNext:
		c.mu.Lock()
		it := c.iters[r.Handle]
		c.mu.Unlock()
		if it == nil {
			return EncodeStatus(r.ID, cswire.ErrBadHandle)
		}
		if it.pos >= len(it.entries) {
			return EncodeStatus(r.ID, cswire.ErrNoSections)
		}
		e := it.entries[it.pos]
		it.pos++
		return EncodeIterNext(e.Key, e.Value.Type, uint64(len(e.Value.Data)))
	case ReqIterFinalize:
		c.mu.Lock()
		_, ok := c.iters[r.Handle]
		delete(c.iters, r.Handle)
		c.mu.Unlock()
		if !ok {
			return EncodeStatus(r.ID, cswire.ErrBadHandle)
		}
		return EncodeStatus(r.ID, cswire.OK)
	case ReqTrackAdd:
		return c.trackAdd(ctx, r)
	case ReqTrackDelete:
		c.mu.Lock()
		t := c.tracks[r.Handle]
		delete(c.tracks, r.Handle)
		c.mu.Unlock()
		if t == nil {
			return EncodeStatus(r.ID, cswire.ErrBadHandle)
		}
		t.stop()
		// The reply echoes the client's own handle; libcmap looks its
		// callback up by it.
		return EncodeHandle(r.ID, t.userCtx)
	case ReqSetCurrentMap:
		switch r.Map {
		case MapDefault:
			c.stats = false
		case MapStats:
			c.stats = true
		default:
			return EncodeStatus(r.ID, cswire.ErrInvalidParam)
		}
		return EncodeStatus(r.ID, cswire.OK)
	}
	return EncodeStatus(r.ID, cswire.ErrInvalidParam)
}

// statsRequest serves a request on the stats map: read-only, computed by
// the stats source at each get and each iteration's start. ok is false for
// the requests served alike in both maps (an iteration's next and end, a
// track's deletion, the choice of map).
func (c *Conn) statsRequest(ctx context.Context, r Request) (resp []byte, ok bool) {
	switch r.ID {
	case ReqSet:
		return EncodeStatus(r.ID, cswire.Code(c.svc.statsClear.Clear(ctx, r.Key))), true
	case ReqDelete, ReqAdjustInt:
		return EncodeStatus(r.ID, cswire.ErrAccess), true
	case ReqGet:
		v, err := c.svc.stats.Get(ctx, r.Key)
		if err != nil {
			return EncodeStatus(r.ID, cswire.Code(err)), true
		}
		return EncodeGet(v.Type, v.Data, r.MaxLen), true
	case ReqIterInit:
		entries, err := c.statsList(ctx, r.Key)
		if err != nil {
			return EncodeStatus(r.ID, cswire.Code(err)), true
		}
		c.mu.Lock()
		h := c.handle()
		c.iters[h] = &iter{entries: entries}
		c.mu.Unlock()
		return EncodeHandle(r.ID, h), true
	case ReqTrackAdd:
		// The counters change on every request: tracking them would
		// mean computing the map for every change. Not offered.
		return EncodeStatus(r.ID, cswire.ErrNotSupported), true
	}
	return nil, false
}

func (c *Conn) statsList(ctx context.Context, prefix string) ([]Entry, error) {
	if c.svc.stats == nil {
		return nil, nil
	}
	return c.svc.stats(ctx, prefix)
}

// BorrowsRequests tells a gateway serving this connection in its own
// process (libqb.Borrower, ipc.colocate) that Request keeps nothing of a
// request once it returns — keys are strings of their own, a set's value
// is copied — so the request need not be copied for it first: one
// allocation less per cmap call.
func (c *Conn) BorrowsRequests() bool { return true }

func (c *Conn) trackAdd(ctx context.Context, r Request) []byte {
	flags := r.Track
	if flags&(TrackAdd|TrackDelete|TrackModify) == 0 {
		return EncodeStatus(r.ID, cswire.ErrInvalidParam)
	}
	// A NULL key tracks everything.
	prefix := flags&TrackPrefix != 0 || r.Key == ""
	uc := r.UserCtx
	stop, err := c.svc.store.Track(ctx, r.Key, prefix, func(ev Event) {
		if ev.Kind&flags == 0 {
			return
		}
		n := Notify{UserCtx: uc, Key: ev.Key, Event: ev.Kind}
		if ev.New != nil {
			n.NewType, n.NewValue = ev.New.Type, ev.New.Data
		}
		if ev.Old != nil {
			n.OldType, n.OldValue = ev.Old.Type, ev.Old.Data
		}
		if err := c.sink.SendEvent(EncodeNotify(n)); err != nil {
			c.svc.log.Debug("cmap notification not sent", "conn", c.label, "err", err)
		}
	})
	if err != nil {
		return EncodeStatus(r.ID, cswire.Code(err))
	}
	c.mu.Lock()
	h := c.handle()
	c.tracks[h] = &track{stop: stop, userCtx: uc}
	c.mu.Unlock()
	return EncodeHandle(r.ID, h)
}

// Close implements session.Session: the connection's tracks stop.
func (c *Conn) Close() {
	c.mu.Lock()
	tracks := c.tracks
	c.tracks = map[uint64]*track{}
	c.iters = map[uint64]*iter{}
	c.mu.Unlock()
	for _, t := range tracks {
		t.stop()
	}
}
