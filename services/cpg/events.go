package cpg

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cpg/cpgwire"
)

// ConfChgEvent is what <prefix>.cpg.<node>.confchg.<group> carries: one
// configuration change of a group, as node applied it — the same change,
// at the same point of the order, on every node of the view.
type ConfChgEvent struct {
	Node uint32 `json:"node"`
	// Group is the name as corosync prints it; Name its bytes.
	Group   string            `json:"group"`
	Name    []byte            `json:"name"`
	Members []cpgwire.Address `json:"members"`
	Left    []cpgwire.Address `json:"left"`
	Joined  []cpgwire.Address `json:"joined"`
}

// RingEvent is what <prefix>.cpg.<node>.ring carries: a view the groups
// were synchronized in (libcpg's totem confchg callback).
type RingEvent struct {
	Node    uint32       `json:"node"`
	Ring    totem.RingID `json:"ring"`
	Members []uint32     `json:"members"`
}

// GroupsRequest asks <prefix>.cpg.<node>.groups for an iteration: type 1
// (names only), 2 (one group: Name) or 3 (every process).
type GroupsRequest struct {
	Type uint32 `json:"type"`
	Name []byte `json:"name,omitempty"`
}

// GroupItem is one item of an iteration.
type GroupItem struct {
	Group  string `json:"group"`
	Name   []byte `json:"name"`
	NodeID uint32 `json:"nodeid"`
	PID    uint32 `json:"pid"`
}

// GroupsReply answers a GroupsRequest, in cpg_iteration_next's order.
type GroupsReply struct {
	Node  uint32       `json:"node"`
	Ring  totem.RingID `json:"ring"`
	Items []GroupItem  `json:"items"`
	Error string       `json:"error,omitempty"`
}

func (s *Service) publishConfChg(g cpgwire.Name, members, left, joined []cpgwire.Address) {
	if s.nc == nil {
		return
	}
	ev := ConfChgEvent{Node: s.node, Group: g.Escaped(), Name: []byte(g), Members: members,
		Left: nonNil(left), Joined: nonNil(joined)}
	b, _ := json.Marshal(ev)
	_ = s.nc.Publish(s.opts.Subjects.CPGConfChg(s.node, string(g)), b)
}

func nonNil(a []cpgwire.Address) []cpgwire.Address {
	if a == nil {
		return []cpgwire.Address{}
	}
	return a
}

func (s *Service) publishRing() {
	if s.nc == nil {
		return
	}
	b, _ := json.Marshal(RingEvent{Node: s.node, Ring: s.syncRing, Members: s.members})
	_ = s.nc.Publish(s.opts.Subjects.CPGRing(s.node), b)
}

// ServeGroups answers <prefix>.cpg.<node>.groups until the returned stop.
func (s *Service) ServeGroups(nc *nats.Conn) (stop func(), err error) {
	sub, err := nc.Subscribe(s.opts.Subjects.CPGGroups(s.node), func(m *nats.Msg) {
		var req GroupsRequest
		rep := GroupsReply{Node: s.node, Items: []GroupItem{}}
		if len(m.Data) > 0 {
			if err := json.Unmarshal(m.Data, &req); err != nil {
				rep.Error = err.Error()
			}
		}
		if req.Type == 0 {
			req.Type = cpgwire.IterAll
		}
		if req.Type < cpgwire.IterNameOnly || req.Type > cpgwire.IterAll {
			rep.Error = fmt.Sprintf("iteration type %d: expected 1, 2 or 3", req.Type)
		}
		if rep.Error == "" {
			s.mu.Lock()
			rep.Ring = s.syncRing
			for _, d := range s.procs.iteration(req.Type, cpgwire.Name(req.Name)) {
				rep.Items = append(rep.Items, GroupItem{Group: d.Group.Escaped(), Name: []byte(d.Group), NodeID: d.NodeID, PID: d.PID})
			}
			s.mu.Unlock()
		}
		b, _ := json.Marshal(rep)
		if rep.Error != "" {
			// The error headers too, as every request/reply subject's.
			_ = bus.RespondBadRequest(m, "malformed groups request: "+rep.Error, b)
			return
		}
		_ = m.Respond(b)
	})
	if err != nil {
		return nil, fmt.Errorf("cpg: serving the groups: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Recorder is where the counters go: objdb, as runtime.services.cpg.*.
type Recorder interface {
	Set(ctx context.Context, key string, v objdb.Value) error
}

// execStatKeys maps frame kinds to corosync's exec message ids under
// runtime.services.cpg.<id>.{rx,tx} (0 procjoin, 1 procleave, 2
// joinlist, 3 mcast, 6 partial mcast); chunks and resyncs are corobus's
// own.
var execStatKeys = map[uint8]string{
	cpgwire.ExecProcJoin: "0", cpgwire.ExecProcLeave: "1", cpgwire.ExecJoinList: "2",
	cpgwire.ExecMcast: "3", cpgwire.ExecPartial: "6", cpgwire.ExecChunk: "chunk", cpgwire.ExecResync: "resync",
}

// Counters are the service's counters, by their key under
// runtime.services.cpg.
func (s *Service) Counters() map[string]uint64 {
	m := map[string]uint64{}
	for kind, k := range execStatKeys {
		m[k+".tx"] = s.stats.tx[kind].Load()
		m[k+".rx"] = s.stats.rx[kind].Load()
	}
	s.mu.Lock()
	m["connections"] = uint64(len(s.conns))
	m["groups"] = uint64(len(s.procs.groups))
	n := 0
	for _, l := range s.procs.groups {
		n += len(l)
	}
	m["members"] = uint64(n)
	s.mu.Unlock()
	m["deliveries"] = s.stats.delivered.Load()
	m["confchgs"] = s.stats.confchgs.Load()
	m["syncs"] = s.stats.syncs.Load()
	m["view_changes"] = s.stats.viewChanges.Load()
	m["flow_control"] = s.stats.flowControl.Load()
	m["unknown_sender"] = s.stats.unknownSender.Load()
	m["callback_errors"] = s.stats.eventErrors.Load()
	m["alone"] = s.stats.alone.Load()
	m["skipped"] = s.stats.skipped.Load()
	return m
}

// Record writes the counters that changed every interval until ctx ends.
// It looks only while they move: after a look that found nothing new it
// waits for a change (moved) instead of the next interval, so a
// gateway at rest does not wake every interval for it.
func (s *Service) Record(ctx context.Context, r Recorder, interval time.Duration) {
	last := map[string]uint64{}
	put := func(key string, t objdb.Type, v string) error {
		val, err := objdb.ParseValue(t, v)
		if err != nil {
			return err
		}
		return r.Set(ctx, "runtime.services.cpg."+key, val)
	}
	idDone := false
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		// Something to write again (a change, or a write that failed):
		// look once more after interval; else wait for a change (moved) first.
		again := false
		// The object database may not serve yet when the service starts
		// (cpg in the gateway starts with it): tried again until written.
		if !idDone {
			if err := put("service_id", objdb.Uint16, strconv.Itoa(ServiceID)); err != nil {
				s.log.Debug("recording cpg's service id", "err", err)
				again = true
			} else {
				idDone = true
			}
		}
		for k, v := range s.Counters() {
			if old, ok := last[k]; ok && old == v {
				continue
			}
			again = true
			if err := put(k, objdb.Uint64, strconv.FormatUint(v, 10)); err != nil {
				s.log.Debug("recording a cpg counter", "key", k, "err", err)
				continue
			}
			last[k] = v
		}
		if !again {
			select {
			case <-ctx.Done():
				return
			case <-s.moved:
			}
		}
		t.Reset(interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
