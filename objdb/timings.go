package objdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
)

// timingsFollower keeps the node's totem on the totem.token, totem.join
// and totem.consensus its objdb holds, as corosync's totemconfig re-reads
// them whenever cmap changes them — a client's write, or a reload once it
// is done (config.reload_in_progress back to 0) — and records what the
// node runs under runtime.config.totem.*. It hands over
// totem.config_version the same way: corosync's cmap tells every node of a
// changed version, which lands in their runtime.members.<id>.config_version.
// The bus's totem starts from the file; the follower tells it
// (Subjects.TotemTimings) when the keys say otherwise, and again whenever
// the totem starts anew (TotemListenAsk).
type timingsFollower struct {
	st   *Store
	nc   *nats.Conn
	subj bus.Subjects
	node uint32
	log  *slog.Logger

	mu      sync.Mutex // one application at a time, in the order of the changes
	running totem.Timings
	version uint64 // the totem.config_version the totem runs
}

// timingsRequestTimeout bounds the wait for the bus's answer: it answers
// from memory, at once, unless the bus is restarting — and then its totem
// asks again when it is back.
const timingsRequestTimeout = 2 * time.Second

// read computes the timings the keys say, with corosync's defaults.
func (f *timingsFollower) read() (totem.Timings, error) {
	return totem.TimingsOf(func(key string) (uint64, bool, error) {
		v, err := f.st.Get(key)
		if errors.Is(err, ErrNotExist) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		n, ok := v.Int()
		if !ok || n < 0 || n > 1<<32-1 {
			return 0, false, fmt.Errorf("%s is not a number of milliseconds", v)
		}
		return uint64(n), true, nil
	})
}

// apply tells the totem what the keys say (force: even if it is what the
// follower last told it) and records it under runtime.config.totem.*. A
// combination the totem refuses is logged, as corosync logs it, and the
// node keeps what it runs.
func (f *timingsFollower) apply(ctx context.Context, force bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, err := f.st.Get("config.reload_in_progress"); err == nil {
		if n, ok := v.Int(); ok && n != 0 {
			return // the reload's end applies the whole of it
		}
	}
	t, err := f.read()
	if err != nil {
		f.log.Error("totem timings not changed", "err", err)
		return
	}
	version, err := f.readVersion()
	if err != nil {
		f.log.Error("totem.config_version not changed", "err", err)
		version = f.version
	}
	if t == f.running && version == f.version && !force {
		return
	}
	req, _ := json.Marshal(totem.TimingsRequest{
		Token: uint64(t.Token / time.Millisecond), Join: uint64(t.Join / time.Millisecond), Consensus: uint64(t.Consensus / time.Millisecond),
		ConfigVersion: &version,
	})
	rctx, cancel := context.WithTimeout(ctx, timingsRequestTimeout)
	defer cancel()
	msg, err := f.nc.RequestWithContext(rctx, f.subj.TotemTimings(f.node), req)
	if err != nil {
		f.log.Warn("the bus did not take the totem timings yet (it sets them again when its totem starts)", "err", err)
		return
	}
	f.version = version // taken even when the timings are refused
	var rep totem.TimingsReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || !rep.OK {
		f.log.Error("totem timings not changed", "token", t.Token, "join", t.Join, "consensus", t.Consensus, "err", rep.Error)
		return
	}
	if err := f.record(ctx, t); err != nil {
		f.log.Warn("runtime.config.totem not written", "err", err)
		return
	}
	f.running = t
}

// readVersion is totem.config_version, 0 when unset.
func (f *timingsFollower) readVersion() (uint64, error) {
	v, err := f.st.Get("totem.config_version")
	if errors.Is(err, ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// Int gives a u64's bits back as an int64: only a signed type's
	// negative value is out of range.
	n, ok := v.Int()
	if !ok || (n < 0 && v.Type != Uint64) {
		return 0, fmt.Errorf("totem.config_version %s is not a version", v)
	}
	return uint64(n), nil
}

// record writes runtime.config.totem.{token,join,consensus} (u32, ms).
func (f *timingsFollower) record(ctx context.Context, t totem.Timings) error {
	for key, d := range map[string]time.Duration{"token": t.Token, "join": t.Join, "consensus": t.Consensus} {
		v := Value{Type: Uint32, Data: putInt(Uint32, uint64(d/time.Millisecond))}
		if err := f.st.SetLocal(ctx, "runtime.config.totem."+key, v); err != nil {
			return err
		}
	}
	return nil
}

// followTimings records the timings the node's keys say (the file's,
// just loaded: what the totem started with), then follows their changes
// until ctx ends.
func followTimings(ctx context.Context, st *Store, nc *nats.Conn, subjects bus.Subjects, node uint32, log *slog.Logger) error {
	f := &timingsFollower{st: st, nc: nc, subj: subjects, node: node, log: log}
	t, err := f.read()
	if err != nil {
		return err
	}
	if err := f.record(ctx, t); err != nil {
		return err
	}
	f.running = t
	if f.version, err = f.readVersion(); err != nil {
		return err
	}
	// After an objdb restart the totem may run timings a client set
	// since its start, which the reloaded file has replaced in the keys.
	go f.apply(ctx, true)
	changed := func(Event) { f.apply(ctx, false) }
	stopTotem := st.Track("totem.", true, changed)
	stopReload := st.Track("config.reload_in_progress", false, changed)
	// A bus that restarted runs the file's timings again.
	sub, err := nc.Subscribe(subjects.TotemListenAsk(node), func(*nats.Msg) { go f.apply(ctx, true) })
	if err != nil {
		stopTotem()
		stopReload()
		return fmt.Errorf("subscribing to %s: %w", subjects.TotemListenAsk(node), err)
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
		stopTotem()
		stopReload()
	}()
	return nil
}
