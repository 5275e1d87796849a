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
