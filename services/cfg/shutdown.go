package cfg

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/cswire"
)

// The shutdown negotiation, as corosync's cfg runs it: a client calls
// corosync_cfg_try_shutdown; every other client registered with trackstart
// (Pacemaker is one) gets the shutdown callback and answers with
// corosync_cfg_replyto_shutdown. REQUEST goes ahead only if all say yes
// within cfg.shutdown_timeout; REGARDLESS asks but goes ahead anyway;
// IMMEDIATE asks nobody. A registered client that goes away counts as a
// yes; one that does not answer in time as a no.
//
// corosync has one cfg service per node; a corobus node may have several
// cfg instances at once — a new one replacing the old (the old keeps the
// connections it has until they end), or the layer scaled by hand — and
// each client is connected to one of them. So the instance a try_shutdown
// reaches asks the node's other instances (the loader lists them) on
// Subjects.CfgPeers to ask their own registered clients, and decides on
// all the answers: every registered client of the node is asked,
// whichever instance holds its connection.
//
// An asked instance answers twice: at once, how many clients it asked,
// then their verdict. The bus lets a user answer a request once (the
// response permission of bus.Grant.Respond: one message), so only the
// first answer goes to the ask's reply subject; the verdict is published
// on Subjects.CfgPeers, which every instance of the node may publish and
// follows, and the asker takes it from there. The asker decides as soon
// as every asked instance gave its verdict: when every registered client
// of the node answered, as corosync decides once all its clients did.

// peerMsg is what the node's cfg instances say to each other: an ask, a
// cancel or a verdict on Subjects.CfgPeers, and the first answer to an
// ask on its reply subject.
type peerMsg struct {
	Op        string `json:"op,omitempty"` // peerAsk, peerCancel, peerVerdict; empty on an ask's first answer
	ID        string `json:"id"`           // the negotiation
	Instance  string `json:"instance"`     // who asks, or who answers
	Flags     uint32 `json:"flags,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	// An answer: how many of its registered clients the instance asked
	// (at once), then, with Done, their answers once all are in or the
	// time is up (a client that did not answer is a no).
	Asked int  `json:"asked"`
	Done  bool `json:"done,omitempty"`
	Yes   int  `json:"yes"`
	No    int  `json:"no"`
	// Busy: a negotiation runs there already (the asker's client gets
	// CS_ERR_EXIST, as from a second try_shutdown in corosync).
	Busy bool `json:"busy,omitempty"`
}

const (
	peerAsk    = "ask"
	peerCancel = "cancel"
	// peerVerdict is an asked instance's answer after its first: its
	// clients' answers (Done), on Subjects.CfgPeers.
	peerVerdict = "verdict"
	// peerAckWait bounds the wait for a listed instance's first answer:
	// one that says nothing is gone, and so are its clients'
	// connections (the gateway ends them).
	peerAckWait = 2 * time.Second
	// peerGrace is how long after the timeout the asker still waits for
	// the others' verdicts: their timers started a little later, and a
	// verdict comes before only when all their clients answered. An
	// instance whose verdict has not come by then (it died with clients
	// asked) counts as no for every client it asked.
	peerGrace = 2 * time.Second
)

func (s *Service) trackStart(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.trackers, c) {
		return
	}
	s.trackers = append(s.trackers, c)
	if sd := s.sd; sd != nil && !sd.over {
		// A shutdown is in progress: the newcomer is asked too.
		sd.answers[c] = -1
		sd.want++
		c.send(EncodeTestShutdown(sd.flags, cswire.OK))
	}
}

// leave unregisters c (trackstop, or its connection closed): its pending
// answer becomes a yes; if it asked for the shutdown, the request is
// cancelled.
func (s *Service) leave(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd := s.sd
	if sd != nil && sd.by == c {
		if sd.timer != nil {
			sd.timer.Stop()
		}
		s.sd = nil
		close(sd.gone)
		sd = nil
	}
	i := slices.Index(s.trackers, c)
	if i < 0 {
		return
	}
	s.trackers = slices.Delete(s.trackers, i, i+1)
	if sd == nil || sd.over {
		return
	}
	if _, asked := sd.answers[c]; asked {
		sd.answer(c, true)
		s.decideLocked(sd)
	}
}

// newRoundLocked starts asking this instance's registered clients but
// except; the caller sets who it is for.
func (s *Service) newRoundLocked(id string, flags uint32, except *Conn) *negotiation {
	sd := &negotiation{id: id, flags: flags, answers: map[*Conn]int{}}
	for _, t := range s.trackers {
		if t != except {
			sd.answers[t] = -1
			sd.want++
		}
	}
	return sd
}

// askLocked sends the shutdown callback to the round's clients and starts
// its timer.
func (s *Service) askLocked(sd *negotiation, timeout time.Duration) {
	sd.timer = time.AfterFunc(timeout, func() { s.timeout(sd) })
	msg := EncodeTestShutdown(sd.flags, cswire.OK)
	for t := range sd.answers {
		t.send(msg)
	}
}

func (s *Service) shutdownTimeout(ctx context.Context) time.Duration {
	if s.cfg.ShutdownTimeout != nil {
		if d, err := s.cfg.ShutdownTimeout(ctx); err == nil && d > 0 {
			return d
		}
	}
	return DefaultShutdownTimeout
}

func (s *Service) tryShutdown(ctx context.Context, c *Conn, flags uint32) cswire.Error {
	if flags == ShutdownImmediate {
		s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "confirmed", Flags: FlagName(flags)})
		s.sendShutdownAfterReply(ctx)
		return cswire.OK
	}
	s.mu.Lock()
	if s.sd != nil {
		s.mu.Unlock()
		return cswire.ErrExist
	}
	sd := s.newRoundLocked(nuid.Next(), flags, c)
	sd.by, sd.decided, sd.gone = c, make(chan struct{}), make(chan struct{})
	sd.verdicts, sd.ended = make(chan peerMsg, 16), make(chan struct{})
	s.sd = sd
	s.mu.Unlock()
	defer close(sd.ended) // last: after the inbox's unsubscription
	timeout := s.shutdownTimeout(ctx)

	// The node's other cfg instances ask their clients too. Their first
	// answers come to the inbox, their verdicts through onPeer.
	inbox := s.cfg.Conn.NewRespInbox()
	sub, err := s.cfg.Conn.Subscribe(inbox, func(m *nats.Msg) {
		var p peerMsg
		if err := json.Unmarshal(m.Data, &p); err != nil {
			s.log.Debug("undecodable cfg peer answer", "err", err)
			return
		}
		s.peerAnswered(sd, p)
	})
	if err != nil {
		s.log.Warn("shutdown: the node's other cfg instances cannot be asked", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	expect, listed := s.peerInstances(ctx)
	if sub != nil {
		b, _ := json.Marshal(peerMsg{Op: peerAsk, ID: sd.id, Instance: s.instance, Flags: flags, TimeoutMS: timeout.Milliseconds()})
		if err := s.cfg.Conn.PublishRequest(s.cfg.Subjects.CfgPeers(s.cfg.Node), inbox, b); err != nil {
			s.log.Warn("shutdown: the node's other cfg instances cannot be asked", "err", err)
		}
		defer s.cancelPeers(sd.id)
	}

	s.mu.Lock()
	if s.sd != sd { // the requester went away meanwhile
		s.mu.Unlock()
		return cswire.ErrBadHandle
	}
	s.askLocked(sd, timeout)
	s.decideLocked(sd) // nobody to ask here
	s.mu.Unlock()

	peers := map[string]peerMsg{}
	allAcked := func() bool {
		for id := range expect {
			if _, ok := peers[id]; !ok {
				return false
			}
		}
		return true
	}
	ackWait := time.NewTimer(peerAckWait)
	defer ackWait.Stop()
	if !listed { // no list: whoever answers within peerAckWait
		expect = nil
	}
	acked := listed && allAcked()
	deadline := time.NewTimer(timeout + peerGrace)
	defer deadline.Stop()
	decided := sd.decided
	requested := false
	var totalWant, totalYes, totalNo int
	for {
		s.mu.Lock()
		totalWant, totalYes, totalNo = sd.want, sd.yes, sd.no
		s.mu.Unlock()
		done := decided == nil && acked
		for _, p := range peers {
			totalWant += p.Asked
			totalYes += p.Yes
			totalNo += p.No
			done = done && p.Done
		}
		if acked && !requested && totalWant > 0 {
			requested = true
			s.log.Info("shutdown requested; asking the registered clients", "flags", FlagName(flags), "clients", totalWant,
				"instances", 1+len(peers), "timeout", timeout)
			s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "requested", Flags: FlagName(flags), Expected: totalWant})
		}
		if done {
			break
		}
		select {
		case p := <-sd.verdicts:
			if p.Busy {
				s.endRound(sd)
				return cswire.ErrExist
			}
			// A verdict may overtake the first answer (they travel on
			// different subjects): it stands.
			if prev, ok := peers[p.Instance]; ok && prev.Done {
				continue
			}
			peers[p.Instance] = p
			acked = acked || (listed && allAcked())
		case <-decided:
			decided = nil
		case <-ackWait.C:
			acked = true
		case <-deadline.C:
			// Whoever has not answered by now counts as a no.
			acked, decided = true, nil
			for id, p := range peers {
				p.No, p.Done = p.Asked-p.Yes, true
				peers[id] = p
			}
		case <-sd.gone:
			return cswire.ErrBadHandle
		case <-ctx.Done():
			s.endRound(sd)
			return cswire.ErrTimeout
		}
	}
	s.endRound(sd)
	ev := ShutdownEvent{Node: s.cfg.Node, Flags: FlagName(flags), Yes: totalYes, No: totalNo, Expected: totalWant}
	code := cswire.ErrBusy
	if totalYes >= totalWant || flags == ShutdownRegardless {
		code = cswire.OK
	}
	if totalWant == 0 {
		s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "confirmed", Flags: FlagName(flags)})
	} else {
		ev.Phase = map[bool]string{true: "confirmed", false: "cancelled"}[code == cswire.OK]
		s.log.Info("shutdown decision", "decision", ev.Phase, "yes", totalYes, "no", totalNo, "flags", ev.Flags)
		s.event("shutdown", ev)
	}
	if code == cswire.OK {
		s.sendShutdownAfterReply(ctx)
	}
	return code
}

// peerAnswered hands another instance's answer to the negotiation sd
// that asked it, unless sd is over.
func (s *Service) peerAnswered(sd *negotiation, p peerMsg) {
	if p.ID != sd.id || p.Instance == "" || p.Instance == s.instance {
		return
	}
	select {
	case sd.verdicts <- p:
	case <-sd.ended:
	}
}

// endRound forgets the requester's round.
func (s *Service) endRound(sd *negotiation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sd.timer != nil {
		sd.timer.Stop()
	}
	if s.sd == sd {
		s.sd = nil
	}
}

func (s *Service) cancelPeers(id string) {
	b, _ := json.Marshal(peerMsg{Op: peerCancel, ID: id, Instance: s.instance})
	if err := s.cfg.Conn.Publish(s.cfg.Subjects.CfgPeers(s.cfg.Node), b); err != nil {
		s.log.Debug("shutdown: telling the other cfg instances the negotiation ended", "err", err)
	}
}

// peerInstances lists the node's other cfg instances that may hold
// clients (serving or retiring) as the node's loader knows them; listed
// is false when the loader did not answer.
func (s *Service) peerInstances(ctx context.Context) (ids map[string]bool, listed bool) {
	ctx, cancel := context.WithTimeout(ctx, peerAckWait)
	defer cancel()
	l, err := fetchListing(ctx, s.cfg.Conn, s.cfg.Subjects.LcrAPI(s.cfg.Node, loader.APIList))
	if err != nil {
		s.log.Warn("shutdown: the loader does not list the node's cfg instances; asking whichever answer", "err", err)
		return nil, false
	}
	ids = map[string]bool{}
	ns := loader.LocalNamespace(s.cfg.Node)
	for _, c := range l.Components {
		if c.Name != ComponentName || c.Namespace != ns {
			continue
		}
		for _, in := range c.Instances {
			if in.ID != s.instance && in.State != loader.Leaving {
				ids[in.ID] = true
			}
		}
	}
	return ids, true
}

func fetchListing(ctx context.Context, nc *nats.Conn, subject string) (loader.Listing, error) {
	r, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return loader.Listing{}, fmt.Errorf("asking the loader: %w", err)
	}
	if e := r.Header.Get(micro.ErrorHeader); e != "" {
		return loader.Listing{}, fmt.Errorf("the loader: %s", e)
	}
	var l loader.Listing
	if err := json.Unmarshal(r.Data, &l); err != nil {
		return loader.Listing{}, fmt.Errorf("decoding the loader's listing: %w", err)
	}
	return l, nil
}

// onPeer serves another cfg instance of the node: an ask runs a round
// with this instance's registered clients and answers at once on the
// ask's reply subject with how many were asked (their verdict follows on
// Subjects.CfgPeers, decideLocked); a cancel ends that round; a verdict
// goes to this instance's negotiation if it asked for it.
func (s *Service) onPeer(m *nats.Msg) {
	var p peerMsg
	if err := json.Unmarshal(m.Data, &p); err != nil {
		s.log.Debug("undecodable cfg peer message", "err", err)
		return
	}
	if p.Instance == s.instance {
		return
	}
	switch p.Op {
	case peerAsk:
		if m.Reply == "" {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.sd != nil {
			s.answerPeer(m.Reply, peerMsg{ID: p.ID, Busy: true})
			return
		}
		sd := s.newRoundLocked(p.ID, p.Flags, nil)
		if sd.want == 0 {
			s.answerPeer(m.Reply, peerMsg{ID: p.ID, Done: true})
			return
		}
		sd.asker = p.Instance
		s.sd = sd
		s.log.Info("shutdown requested on another cfg instance of the node; asking this one's registered clients", "flags", FlagName(p.Flags), "clients", sd.want)
		s.answerPeer(m.Reply, peerMsg{ID: p.ID, Asked: sd.want})
		timeout := time.Duration(p.TimeoutMS) * time.Millisecond
		if timeout <= 0 {
			timeout = DefaultShutdownTimeout
		}
		s.askLocked(sd, timeout)
	case peerCancel:
		s.mu.Lock()
		defer s.mu.Unlock()
		if sd := s.sd; sd != nil && sd.by == nil && sd.id == p.ID {
			sd.timer.Stop()
			s.sd = nil
		}
	case peerVerdict:
		s.mu.Lock()
		sd := s.sd
		s.mu.Unlock()
		if sd != nil && sd.by != nil {
			s.peerAnswered(sd, p)
		}
	}
}

// answerPeer answers the asking instance: on subject, the ask's reply
// subject, the first answer; with subject empty, a verdict on
// Subjects.CfgPeers (the bus takes one answer to a request).
func (s *Service) answerPeer(subject string, p peerMsg) {
	p.Instance = s.instance
	if subject == "" {
		subject, p.Op = s.cfg.Subjects.CfgPeers(s.cfg.Node), peerVerdict
	}
	b, _ := json.Marshal(p)
	if err := s.cfg.Conn.Publish(subject, b); err != nil {
		s.log.Warn("shutdown: answering the asking cfg instance", "err", err)
	}
}

func (s *Service) reply(c *Conn, yes bool) cswire.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd := s.sd
	if sd == nil {
		return cswire.ErrAccess
	}
	if sd.over {
		return cswire.OK // the answers were counted without this one
	}
	sd.answer(c, yes)
	s.decideLocked(sd)
	return cswire.OK
}

// answer records c's answer (a second one replaces the first).
func (sd *negotiation) answer(c *Conn, yes bool) {
	switch prev, ok := sd.answers[c]; {
	case !ok:
	case prev == 1:
		sd.yes--
	case prev == 0:
		sd.no--
	}
	if yes {
		sd.yes++
		sd.answers[c] = 1
	} else {
		sd.no++
		sd.answers[c] = 0
	}
}

// decideLocked ends this instance's round once every answer is in: the
// requester's side then gathers the other instances' (tryShutdown), a
// round a peer asked for is reported to it.
func (s *Service) decideLocked(sd *negotiation) {
	if sd.over || sd.yes+sd.no < sd.want {
		return
	}
	sd.over = true
	if sd.timer != nil {
		sd.timer.Stop()
	}
	if sd.by != nil {
		close(sd.decided)
		return
	}
	if s.sd == sd {
		s.sd = nil
	}
	s.log.Info("shutdown: this instance's registered clients answered", "yes", sd.yes, "no", sd.no, "flags", FlagName(sd.flags),
		"asker", sd.asker)
	s.answerPeer("", peerMsg{ID: sd.id, Asked: sd.want, Done: true, Yes: sd.yes, No: sd.no})
}

// timeout counts the clients that did not answer as no, decides, and
// tells every registered client the negotiation timed out.
func (s *Service) timeout(sd *negotiation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sd.over || s.sd != sd {
		return
	}
	s.log.Info("shutdown: not every registered client answered in time")
	s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "timeout", Flags: FlagName(sd.flags), Yes: sd.yes, No: sd.want - sd.yes, Expected: sd.want})
	sd.no = sd.want - sd.yes
	s.decideLocked(sd)
	msg := EncodeTestShutdown(sd.flags, cswire.ErrTimeout)
	for _, t := range s.trackers {
		t.send(msg)
	}
}

// replyLead is how long the shutdown message waits for the requester's
// answer to be on its way: corosync answers, then multicasts, in one
// thread; here the answer travels through the gateway while the node's
// stop (which stops the gateway first) could overtake it.
const replyLead = 200 * time.Millisecond

// sendShutdownAfterReply tells every node this one goes down, once the
// caller's answer has left; when the message comes back in total order,
// the node stops.
func (s *Service) sendShutdownAfterReply(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	time.AfterFunc(replyLead, func() {
		if err := s.mcast(ctx, Exec{Kind: ExecShutdown}); err != nil {
			s.log.Error("shutdown message not sent; stopping anyway", "err", err)
			s.stop(StopRequest{Reason: "shut down by sysadmin"})
		}
	})
}
