package quorum

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/session"
)

// View is what the quorum provider decided: corosync's quorum callback
// (view list, quorate, ring id).
type View struct {
	Members []uint32
	Quorate bool
	Ring    RingID
}

// Service is the quorum service of one node: it holds the provider's
// latest view and the v1 membership of the last synchronization, and
// serves libquorum connections.
type Service struct {
	log *slog.Logger
	// typ is TypeSet when a provider decides, TypeFree when quorum is
	// not configured (then this node is always quorate).
	typ uint32

	mu       sync.Mutex
	view     View
	trackers map[*Conn]bool
	// The v1 membership: members of the last synchronization, with
	// those that joined and left since the one before.
	members, oldMembers, joined, left []uint32
	syncRing                          RingID
	// activated is the ring of the last synchronization that ended: a
	// round of that ring again is a rerun (see SyncInit).
	activated RingID
	// told says s.view went to the trackers (see SetView).
	told bool
}

// NewService builds the service. With provider false (no quorum.provider)
// the node is quorate and the quorum type is QUORUM_FREE.
func NewService(provider bool, log *slog.Logger) *Service {
	s := &Service{log: log, typ: TypeFree, trackers: map[*Conn]bool{}}
	if provider {
		s.typ = TypeSet
	} else {
		s.view.Quorate = true
	}
	return s
}

// SetView is the provider's callback: a new view or quorum decision. Every
// tracking connection is told, once per view: corosync's provider calls
// back once per synchronization and on a change of quorum, never twice
// with the same view, but corobus's votequorum announces at the end of
// every round, and a ring runs several rounds when a joining node's
// services register after it formed (services/sync). A survivor's
// clients were told four times of a node that rejoined (corosync: once).
func (s *Service) SetView(v View) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, oldMembers := s.view.Quorate, s.view.Members
	same := s.told && v.Quorate == old && v.Ring == s.view.Ring && slices.Equal(v.Members, oldMembers)
	s.view = View{Members: slices.Clone(v.Members), Quorate: v.Quorate, Ring: v.Ring}
	if same {
		s.log.Debug("view unchanged", "ring", v.Ring, "members", v.Members, "quorate", v.Quorate)
		return
	}
	s.told = true
	switch {
	case v.Quorate && !old:
		s.log.Info("this node is within the primary component and will provide service")
	case !v.Quorate && old:
		s.log.Info("this node is within the non-primary component and will not provide any services")
	}
	if !slices.Equal(oldMembers, v.Members) {
		s.log.Info("members", "members", v.Members, "ring", v.Ring)
	}
	for c := range s.trackers {
		c.sendView(s.view)
	}
}

// View returns the current view.
func (s *Service) View() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return View{Members: slices.Clone(s.view.Members), Quorate: s.view.Quorate, Ring: s.view.Ring}
}

// SyncInit computes the v1 joined and left lists of a new membership
// (corosync's quorum_sync_init): left are old members missing from the
// transitional membership or from the new one; joined are new members
// that were not old members, or that left and came back. A round of the
// ring whose round already ended (a rerun, for a service that registered
// in it) keeps that round's lists: the membership did not change.
func (s *Service) SyncInit(trans, members []uint32, ring RingID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ring == s.activated && slices.Equal(members, s.members) {
		s.syncRing = ring
		return
	}
	s.members = slices.Clone(members)
	s.syncRing = ring
	s.left = nil
	for _, id := range s.oldMembers {
		if !slices.Contains(trans, id) || !slices.Contains(members, id) {
			s.left = append(s.left, id)
		}
	}
	s.joined = nil
	for _, id := range members {
		if !slices.Contains(s.oldMembers, id) || slices.Contains(s.left, id) {
			s.joined = append(s.joined, id)
		}
	}
	if len(s.joined)+len(s.left) > 0 {
		s.log.Info("sync members", "members", members, "joined", s.joined, "left", s.left)
	} else {
		s.log.Debug("sync members", "members", members)
	}
}

// SyncActivate ends a round: v1 trackers get the membership with its
// joined and left lists, once per ring (corosync runs one round a ring).
func (s *Service) SyncActivate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncRing == s.activated {
		return
	}
	s.activated = s.syncRing
	s.oldMembers = slices.Clone(s.members)
	msg := EncodeNodelistV1(s.syncRing, s.members, s.joined, s.left)
	for c := range s.trackers {
		if c.model == ModelV1 {
			c.send(msg)
		}
	}
}

// Open implements session.Handler.
func (s *Service) Open(c *session.Conn) (session.Session, error) {
	return s.OpenConn(c, c.ID), nil
}

// OpenConn starts a libquorum connection whose events go to sink.
func (s *Service) OpenConn(sink session.EventSink, label string) *Conn {
	return &Conn{svc: s, sink: sink, label: label, model: ModelV0}
}

// Conn is one libquorum connection.
type Conn struct {
	svc   *Service
	sink  session.EventSink
	label string
	model uint32 // guarded by svc.mu
}

func (c *Conn) send(msg []byte) {
	if err := c.sink.SendEvent(msg); err != nil {
		c.svc.log.Debug("quorum notification not sent", "conn", c.label, "err", err)
	}
}

// sendView sends the quorum notification in the connection's model.
func (c *Conn) sendView(v View) {
	if c.model == ModelV1 {
		c.send(EncodeNotificationV1(v.Quorate, v.Ring, v.Members))
		return
	}
	c.send(EncodeNotificationV0(v.Quorate, v.Ring.Seq, v.Members))
}

// Request implements session.Session.
func (c *Conn) Request(_ context.Context, msg []byte) []byte {
	r, err := DecodeRequest(msg)
	if err != nil {
		c.svc.log.Warn("malformed quorum request", "conn", c.label, "err", err)
		return EncodeStatus(r.ID, cswire.ErrInvalidParam)
	}
	s := c.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.ID {
	case ReqGetQuorate:
		return EncodeGetQuorate(s.view.Quorate)
	case ReqTrackStart:
		if r.Flags&(TrackCurrent|TrackChanges) != 0 {
			if c.model == ModelV1 {
				c.send(EncodeNodelistV1(s.syncRing, s.members, nil, nil))
			}
			c.sendView(s.view)
		}
		if s.trackers[c] {
			return EncodeStatus(r.ID, cswire.ErrExist)
		}
		if r.Flags&(TrackChanges|TrackChangesOnly) != 0 {
			s.trackers[c] = true
		}
		return EncodeStatus(r.ID, cswire.OK)
	case ReqTrackStop:
		// corosync answers CS_OK whether or not the connection tracked.
		delete(s.trackers, c)
		return EncodeStatus(r.ID, cswire.OK)
	case ReqGetType:
		return EncodeType(r.ID, s.typ, cswire.OK)
	case ReqModelGetType:
		if r.Model != ModelV0 && r.Model != ModelV1 {
			s.log.Error("quorum model request for an unsupported model", "model", r.Model)
			return EncodeType(r.ID, s.typ, cswire.ErrInvalidParam)
		}
		c.model = r.Model
		return EncodeType(r.ID, s.typ, cswire.OK)
	}
	return EncodeStatus(r.ID, cswire.ErrInvalidParam)
}

// Close implements session.Session.
func (c *Conn) Close() {
	c.svc.mu.Lock()
	delete(c.svc.trackers, c)
	c.svc.mu.Unlock()
}
