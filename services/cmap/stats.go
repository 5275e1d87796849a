package cmap

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/services/cswire"
)

// statsTimeout bounds one stats source's answer: a stats read waits for
// nothing else.
const statsTimeout = 2 * time.Second

// overlaps tells whether a listing under prefix can hold keys under sub
// (or sub's own key): either one starts with the other.
func overlaps(prefix, sub string) bool {
	return strings.HasPrefix(sub, prefix) || strings.HasPrefix(prefix, sub)
}

// BusStats is the IPC gateway's part of the stats map (stats.ipcs.*) for
// a cmap instance outside the gateway's process: each read asks the
// node's gateway (Subjects.IPCStats). No gateway: no client connections,
// nothing listed.
func BusStats(nc *nats.Conn, s bus.Subjects, node uint32) StatsSource {
	subject := s.IPCStats(node)
	return func(ctx context.Context, prefix string) ([]Entry, error) {
		if !overlaps(prefix, "stats.ipcs.") {
			return nil, nil
		}
		ctx, cancel := context.WithTimeout(ctx, statsTimeout)
		defer cancel()
		m, err := nc.RequestWithContext(ctx, subject, []byte(prefix))
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("asking the IPC gateway for its stats: %w: %w", err, cswire.ErrTryAgain)
		}
		var entries []Entry
		if err := json.Unmarshal(m.Data, &entries); err != nil {
			return nil, fmt.Errorf("the IPC gateway's stats: %w: %w", err, cswire.ErrLibrary)
		}
		return entries, nil
	}
}

// TotemStats is totem's part of the stats map: the stats.srp.* counters
// that corobus's totem keeps with corosync's meaning (totem.SRPStats),
// from the node's totem status (Subjects.TotemStatus) at each read.
func TotemStats(nc *nats.Conn, s bus.Subjects, node uint32) StatsSource {
	return func(_ context.Context, prefix string) ([]Entry, error) {
		if !overlaps(prefix, "stats.srp.") {
			return nil, nil
		}
		st, err := totem.FetchStatus(nc, s, node, statsTimeout)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, cswire.ErrTryAgain)
		}
		var out []Entry
		for _, c := range []struct {
			name string
			n    uint64
		}{
			{"mcast_tx", st.SRP.McastTx}, {"mcast_retx", st.SRP.McastRetx}, {"mcast_rx", st.SRP.McastRx},
			{"operational_entered", st.SRP.OperationalEntered}, {"gather_entered", st.SRP.GatherEntered},
			{"recovery_entered", st.SRP.RecoveryEntered},
		} {
			if key := "stats.srp." + c.name; strings.HasPrefix(key, prefix) {
				out = append(out, Entry{Key: key, Value: Value{Type: typeU64, Data: binary.LittleEndian.AppendUint64(nil, c.n)}})
			}
		}
		return out, nil
	}
}

// Get is the stats map's value of key, computed now: CS_ERR_NOT_EXIST
// when no source lists it (or there is no source).
func (src StatsSource) Get(ctx context.Context, key string) (Value, error) {
	if src != nil {
		entries, err := src(ctx, key)
		if err != nil {
			return Value{}, err
		}
		for _, e := range entries {
			if e.Key == key {
				return e.Value, nil
			}
		}
	}
	return Value{}, cswire.ErrNotExist
}

// typeU64 is cmap's CMAP_VALUETYPE_UINT64.
const typeU64 = 8

// MergeStats is the stats map of several sources, in key order.
func MergeStats(sources ...StatsSource) StatsSource {
	return func(ctx context.Context, prefix string) ([]Entry, error) {
		var out []Entry
		for _, src := range sources {
			es, err := src(ctx, prefix)
			if err != nil {
				return nil, err
			}
			out = append(out, es...)
		}
		slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
		return out, nil
	}
}

// StatsClear resets counters as corosync's stats.clear.* keys do: IPC the
// IPC gateway's (stats.clear.ipc), Totem totem's (stats.clear.totem). A
// nil part has nothing to reset.
type StatsClear struct {
	IPC, Totem func(context.Context) error
}

// Clear serves a set of key in the stats map: corosync's stats.clear.ipc,
// .totem and .all reset counters (.knet and .schedmiss too, of which
// corobus keeps none: nothing to reset); any other key is read-only
// (CS_ERR_ACCESS), and another stats.clear.* is CS_ERR_NOT_SUPPORTED, as
// corosync answers them. Keys are matched by prefix, as corosync does.
func (c StatsClear) Clear(ctx context.Context, key string) error {
	if !strings.HasPrefix(key, "stats.clear.") {
		return fmt.Errorf("%s is read-only: %w", key, cswire.ErrAccess)
	}
	var parts []func(context.Context) error
	known := false
	for _, k := range []struct {
		prefix string
		parts  []func(context.Context) error
	}{
		{"stats.clear.knet", nil}, {"stats.clear.schedmiss", nil},
		{"stats.clear.ipc", []func(context.Context) error{c.IPC}},
		{"stats.clear.totem", []func(context.Context) error{c.Totem}},
		{"stats.clear.all", []func(context.Context) error{c.IPC, c.Totem}},
	} {
		if strings.HasPrefix(key, k.prefix) {
			known = true
			parts = append(parts, k.parts...)
		}
	}
	if !known {
		return fmt.Errorf("%s: %w", key, cswire.ErrNotSupported)
	}
	for _, p := range parts {
		if p == nil {
			continue
		}
		if err := p(ctx); err != nil {
			return err
		}
	}
	return nil
}

// BusStatsClear resets the counters of node's gateway and totem over the
// bus (Subjects.IPCStatsClear, TotemStatsClear). A part nobody answers
// for has nothing to reset.
func BusStatsClear(nc *nats.Conn, s bus.Subjects, node uint32) StatsClear {
	ask := func(subject string) func(context.Context) error {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, statsTimeout)
			defer cancel()
			_, err := nc.RequestWithContext(ctx, subject, nil)
			if err == nil || errors.Is(err, nats.ErrNoResponders) {
				return nil
			}
			return fmt.Errorf("clearing stats on %s: %w: %w", subject, err, cswire.ErrTryAgain)
		}
	}
	return StatsClear{IPC: ask(s.IPCStatsClear(node)), Totem: ask(s.TotemStatsClear(node))}
}
