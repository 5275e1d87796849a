// Package rtkeys writes a service's runtime keys (runtime.votequorum.*,
// config.reload_status, …) into its node's objdb without ever making the
// service wait: the latest value of each key is kept and written in the
// background, and a write that fails — objdb not up yet, or a minority
// partition whose JetStream refuses writes — is retried until it lands.
package rtkeys

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/corobus/corobus/objdb"
)

// Setter is where keys go: an objdb client with Internal set.
type Setter interface {
	Set(ctx context.Context, key string, v objdb.Value) error
}

// Writer coalesces and writes keys.
type Writer struct {
	dst   Setter
	log   *slog.Logger
	retry time.Duration

	mu      sync.Mutex
	pending map[string]objdb.Value
	wake    chan struct{}
	idle    chan struct{} // closed while nothing is pending
}

// New returns a writer; Run writes.
func New(dst Setter, log *slog.Logger) *Writer {
	w := &Writer{dst: dst, log: log, retry: time.Second, pending: map[string]objdb.Value{},
		wake: make(chan struct{}, 1), idle: make(chan struct{})}
	close(w.idle)
	return w
}

// Set queues key = v (replacing a queued older value of key).
func (w *Writer) Set(key string, v objdb.Value) {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.idle = make(chan struct{})
	}
	w.pending[key] = v
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// SetUint queues an integer key of type t (objdb.Uint8, Uint32, …).
func (w *Writer) SetUint(key string, t objdb.Type, n uint64) {
	v, err := objdb.ParseValue(t, strconv.FormatUint(n, 10))
	if err != nil {
		w.log.Warn("runtime key not representable", "key", key, "err", err)
		return
	}
	w.Set(key, v)
}

// Flush waits until every queued key is written, or ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes queued keys until ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	failures := 0
	for {
		w.mu.Lock()
		batch := maps.Clone(w.pending)
		w.mu.Unlock()
		ok := true
		for _, k := range slices.Sorted(maps.Keys(batch)) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := w.dst.Set(cctx, k, batch[k])
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if failures%30 == 0 {
					w.log.Debug("runtime key not written yet; retrying", "key", k, "err", err)
				}
				failures++
				ok = false
				break
			}
			w.mu.Lock()
			if cur, same := w.pending[k]; same && cur.Type == batch[k].Type && string(cur.Data) == string(batch[k].Data) {
				delete(w.pending, k)
				if len(w.pending) == 0 {
					close(w.idle)
				}
			}
			w.mu.Unlock()
		}
		if ok {
			failures = 0
		}
		var again <-chan time.Time
		w.mu.Lock()
		if len(w.pending) > 0 {
			if ok {
				w.mu.Unlock()
				continue
			}
			again = time.After(w.retry)
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-again:
		}
	}
}
