package ipc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/ipc/libqb"
)

// StatsEntries is the gateway's part of cmap's stats map, computed now:
// corosync's stats.ipcs.global.{active,closed} and, per client connection,
// stats.ipcs.service<id>.<pid>.<conn>.<counter>, whose keys start with
// prefix, in key order. <conn> is the connection's number in hex (corosync
// prints its connection's address there; both only tell connections apart).
// It is cmap's StatsSource where cmap runs in the gateway, and answers
// the node's stats requests over the bus (Subjects.IPCStats) for a cmap
// that runs in a process of its own.
func (g *Gateway) StatsEntries(_ context.Context, prefix string) ([]cmap.Entry, error) {
	return statsEntries(g.srv.Stats(), g.serviceIDs, prefix), nil
}

func statsEntries(st libqb.Stats, ids map[string]int, prefix string) []cmap.Entry {
	var out []cmap.Entry
	add := func(key string, typ objdb.Type, data []byte) {
		if strings.HasPrefix(key, prefix) {
			out = append(out, cmap.Entry{Key: key, Value: cmap.Value{Type: uint8(typ), Data: data}})
		}
	}
	u64 := func(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }
	u32 := func(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }
	add("stats.ipcs.global.active", objdb.Uint64, u64(st.Active))
	add("stats.ipcs.global.closed", objdb.Uint64, u64(st.Closed))
	for _, c := range st.Conns {
		id, ok := ids[c.Service]
		if !ok {
			continue
		}
		p := fmt.Sprintf("stats.ipcs.service%d.%d.0x%x.", id, c.PID, c.ID)
		// A whole connection's keys are skipped at once when the prefix
		// rules them all out.
		if !strings.HasPrefix(p, prefix) && !strings.HasPrefix(prefix, p) {
			continue
		}
		queueing := int32(0)
		if c.Queueing {
			queueing = 1
		}
		add(p+"procname", objdb.String, append([]byte(c.ProcName), 0))
		add(p+"requests", objdb.Uint64, u64(c.Requests))
		add(p+"responses", objdb.Uint64, u64(c.Responses))
		add(p+"dispatched", objdb.Uint64, u64(c.Dispatched))
		add(p+"send_retries", objdb.Uint64, u64(c.SendRetries))
		add(p+"flow_control", objdb.Uint32, u32(c.FlowControl))
		add(p+"flow_control_count", objdb.Uint64, u64(c.FlowControlCount))
		add(p+"overload", objdb.Uint64, u64(c.Overload))
		add(p+"invalid_request", objdb.Uint64, u64(c.InvalidRequest))
		add(p+"queueing", objdb.Int32, u32(uint32(queueing)))
		add(p+"queued", objdb.Uint32, u32(c.Queued))
		add(p+"sent", objdb.Uint32, u32(c.Sent))
	}
	slices.SortFunc(out, func(a, b cmap.Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// ClearStats resets the gateway's counters (cmap's stats.clear.ipc).
func (g *Gateway) ClearStats(context.Context) error {
	g.srv.ClearStats()
	return nil
}

// onStatsClear answers a stats.clear.ipc over the bus: the empty reply
// says it is done.
func (g *Gateway) onStatsClear(m *nats.Msg) {
	g.srv.ClearStats()
	if m.Reply != "" {
		if err := m.Respond(nil); err != nil {
			g.cfg.Log.Debug("answering an IPC stats clear", "err", err)
		}
	}
}

// onStatsRequest answers a stats request over the bus: the request's data
// is the prefix, the reply the entries (JSON, cmap.Entry's fields).
func (g *Gateway) onStatsRequest(m *nats.Msg) {
	entries, _ := g.StatsEntries(context.Background(), string(m.Data))
	if entries == nil {
		// Nothing under the prefix is an empty array, as documented, not
		// JSON null.
		entries = []cmap.Entry{}
	}
	b, err := json.Marshal(entries)
	if err != nil {
		g.cfg.Log.Warn("encoding the IPC stats", "err", err)
		return
	}
	if err := m.Respond(b); err != nil {
		g.cfg.Log.Debug("answering an IPC stats request", "err", err)
	}
}
