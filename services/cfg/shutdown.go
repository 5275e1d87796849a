package cfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/cswire"
)

// The shutdown negotiation, as corosync's cfg runs it: a client calls
// corosync_cfg_try_shutdown; every other client registered with trackstart
// (Pacemaker is one) gets the shutdown callback and answers with
// corosync_cfg_replyto_shutdown. REQUEST goes ahead only if all say yes
// within cfg.shutdown_timeout; REGARDLESS asks but goes ahead anyway;
// IMMEDIATE asks nobody. A registered client that goes away before the
// decision counts as a yes, whatever it answered; when the timer fires,
// every client counts as a no and the request is refused. A second
// try_shutdown while one runs gets CS_ERR_EXIST.
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
// An asked instance answers at once on the ask's reply subject, with how
// many clients it asked; the bus lets a user answer a request once (the
// response permission of bus.Grant.Respond: one message), so what follows
// is published on Subjects.CfgPeers, which every instance of the node may
// publish and follows: a verdict each time its clients' answers move (an
// answer, a client gone, a newcomer asked), numbered, until the asker
// says it decided (cancel). The asker decides as soon as every client of
// the node answered, as corosync decides once all its clients did. While
// it waits it pings the instances it asked (Subjects.CfgPeer): one that
// no longer answers is gone, and so are its clients' connections (the
// gateway ends them), so they count as yes, as corosync counts a client
// that went away.
//
// Two try_shutdowns reaching two instances at once: corosync's one
// service refuses the second. Here each negotiation carries its rank (when
// its client asked, then the asking instance's id), and an instance asked
// for one that ranks after the one it runs or holds answers busy, which
// refuses it. Asked for one that ranks before, it does not answer until
// its own ends: its own is refused by the earlier one's instance (unless
// that one is over, its ask late), and the ask is then taken as if it
// had just come. Every instance orders them the same way, so of two at
// once the later is refused and the earlier goes on.

// peerMsg is what the node's cfg instances say to each other: an ask, a
// cancel or a verdict on Subjects.CfgPeers, and the first answer to an
// ask on its reply subject.
type peerMsg struct {
	Op        string `json:"op,omitempty"` // peerAsk, peerCancel, peerVerdict; empty on an ask's first answer
	ID        string `json:"id"`           // the negotiation
	Instance  string `json:"instance"`     // who asks, or who answers
	Flags     uint32 `json:"flags,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	// Since is when the requester asked (Unix ns): an ask's rank, with
	// Instance.
	Since int64 `json:"since,omitempty"`
	// An answer: how many of its registered clients the instance asked
	// and what they said so far; Done when every one answered or the time
	// is up (a client that did not answer is a no). Seq numbers the
	// verdicts (the first answer is 0): a later one replaces an earlier.
	Asked int  `json:"asked"`
	Done  bool `json:"done,omitempty"`
	Yes   int  `json:"yes"`
	No    int  `json:"no"`
	Seq   int  `json:"seq,omitempty"`
	// Busy: an earlier negotiation runs there already (the asker's
	// client gets CS_ERR_EXIST, as from a second try_shutdown in
	// corosync).
	Busy bool `json:"busy,omitempty"`
}

const (
	peerAsk    = "ask"
	peerCancel = "cancel"
	// peerState asks an instance, on its own Subjects.CfgPeer, where its
	// clients' answers stand now.
	peerState = "state"
	// peerVerdict is an asked instance's answer after its first: its
	// clients' answers, on Subjects.CfgPeers.
	peerVerdict = "verdict"
	// peerAckWait bounds the wait for a listed instance's first answer:
	// one that says nothing is gone, and so are its clients'
	// connections (the gateway ends them).
	peerAckWait = 2 * time.Second
	// peerGrace is how long after the timeout the asker still waits for
	// the others' verdicts: their timers started a little later. An
	// instance whose verdict has not come by then (stuck, as one that
	// died answers no ping) counts as no for every client it asked. An
	// asked instance holds the negotiation twice that long past the
	// timeout if the asker never says it decided.
	peerGrace = 2 * time.Second
	// peerPingInterval is how often the instances in a negotiation ping
	// each other; two pings in a row that find nobody listening mean the
	// instance is gone (one may be a reconnection to a restarted bus).
	peerPingInterval = 250 * time.Millisecond
)

// before reports whether the negotiation a client asked for at since on
// instance origin ranks before the one asked for at since2 on origin2.
func before(since int64, origin string, since2 int64, origin2 string) bool {
	if since != since2 {
		return since < since2
	}
	return origin < origin2
}

func (sd *negotiation) complete() bool { return sd.timedOut || sd.yes+sd.no >= sd.want }

func (s *Service) trackStart(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.trackers, c) {
		return
	}
	s.trackers = append(s.trackers, c)
	if sd := s.sd; sd != nil && sd.asked && !sd.timedOut {
		// A shutdown is in progress: the newcomer is asked too.
		sd.answers[c] = -1
		sd.want++
		c.send(EncodeTestShutdown(sd.flags, cswire.OK))
		s.changedLocked(sd)
	}
}

// leave unregisters c (trackstop, or its connection closed): whatever it
// answered, it now counts as a yes; if it asked for the shutdown, the
// request is cancelled.
func (s *Service) leave(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd := s.sd
	if sd != nil && sd.by == c {
		s.dropLocked(sd)
		close(sd.gone)
		sd = nil
	}
	i := slices.Index(s.trackers, c)
	if i < 0 {
		return
	}
	s.trackers = slices.Delete(s.trackers, i, i+1)
	if sd == nil || sd.timedOut {
		return
	}
	if _, asked := sd.answers[c]; asked {
		sd.answer(c, true)
		s.changedLocked(sd)
	}
}

// newRoundLocked is a negotiation of this instance's registered clients
// but except; the caller says who it is for.
func (s *Service) newRoundLocked(id, origin string, since int64, flags uint32, except *Conn) *negotiation {
	sd := &negotiation{id: id, origin: origin, since: since, flags: flags, answers: map[*Conn]int{}}
	for _, t := range s.trackers {
		if t != except {
			sd.answers[t] = -1
			sd.want++
		}
	}
	return sd
}

// askLocked sends the shutdown callback to the round's clients and starts
// its timer. A client prev (a negotiation refused for this one) asked with
// the same flags is not asked again: its answer, if it gave one, stands.
func (s *Service) askLocked(sd *negotiation, prev *negotiation) {
	sd.asked = true
	sd.timer = time.AfterFunc(sd.timeout, func() { s.timeout(sd) })
	msg := EncodeTestShutdown(sd.flags, cswire.OK)
	for t := range sd.answers {
		if prev != nil && prev.asked && prev.flags == sd.flags {
			if a, ok := prev.answers[t]; ok {
				if a >= 0 {
					sd.answer(t, a == 1)
				}
				continue
			}
		}
		t.send(msg)
	}
}

// changedLocked passes on that sd's answers moved: to the requester's
// loop, or, on an asked instance, as a verdict to the asker.
func (s *Service) changedLocked(sd *negotiation) {
	if sd.by != nil {
		select {
		case sd.changed <- struct{}{}:
		default:
		}
		return
	}
	sd.seq++
	if sd.complete() {
		s.log.Info("shutdown: this instance's registered clients answered", "yes", sd.yes, "no", sd.no,
			"flags", FlagName(sd.flags), "asker", sd.origin)
	}
	s.answerPeer("", peerMsg{ID: sd.id, Asked: sd.want, Done: sd.complete(), Yes: sd.yes, No: sd.no, Seq: sd.seq})
}

// dropLocked ends sd on this instance: its timers and its watch stop,
// and the asks it held unanswered are taken, earliest first.
func (s *Service) dropLocked(sd *negotiation) {
	if sd.timer != nil {
		sd.timer.Stop()
	}
	if sd.hold != nil {
		sd.hold.Stop()
	}
	if sd.stopWatch != nil {
		sd.stopWatch()
	}
	if s.sd != sd {
		return
	}
	s.sd = nil
	pending := sd.pending
	sd.pending = nil
	slices.SortFunc(pending, func(a, b pendingAsk) int {
		if before(a.p.Since, a.p.Instance, b.p.Since, b.p.Instance) {
			return -1
		}
		return 1
	})
	var prev *negotiation
	if sd.refused {
		prev = sd
	}
	for _, a := range pending {
		s.onAskLocked(a.m, a.p, prev)
	}
}

// cancelLocked ends negotiation id here: the round held for it, or its
// ask waiting for an answer.
func (s *Service) cancelLocked(id string) {
	sd := s.sd
	if sd == nil {
		return
	}
	if sd.by == nil && sd.id == id {
		s.dropLocked(sd)
		return
	}
	sd.pending = slices.DeleteFunc(sd.pending, func(a pendingAsk) bool { return a.p.ID == id })
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
	sd := s.newRoundLocked(nuid.Next(), s.instance, time.Now().UnixNano(), flags, c)
	sd.by, sd.changed, sd.gone = c, make(chan struct{}, 1), make(chan struct{})
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
	// The other instances' first answers and verdicts, and those found
	// gone.
	peers := map[string]peerMsg{}
	gone := map[string]bool{}
	if sub != nil {
		// Every instance that holds the negotiation drops it before the
		// requester has its answer, whatever ends it: a try_shutdown
		// right after it is taken, as corosync takes it once it decided.
		defer func() { s.cancelPeers(sd.id, peers, gone) }()
		b, _ := json.Marshal(peerMsg{Op: peerAsk, ID: sd.id, Instance: s.instance, Flags: flags, TimeoutMS: timeout.Milliseconds(),
			Since: sd.since})
		if err := s.cfg.Conn.PublishRequest(s.cfg.Subjects.CfgPeers(s.cfg.Node), inbox, b); err != nil {
			s.log.Warn("shutdown: the node's other cfg instances cannot be asked", "err", err)
		}
	}

	s.mu.Lock()
	if s.sd != sd { // the requester went away meanwhile
		s.mu.Unlock()
		return cswire.ErrBadHandle
	}
	sd.timeout = timeout
	s.askLocked(sd, nil)
	s.mu.Unlock()

	goneC := make(chan string, 1)
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
	requested, late := false, false
	var totalWant, totalYes, totalNo int
	for {
		s.mu.Lock()
		sd.claimed = acked
		totalWant, totalYes, totalNo = sd.want, sd.yes, sd.no
		done := acked && sd.complete()
		s.mu.Unlock()
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
			// A verdict may still be on its way (a client of another
			// instance went away just before this one's last answer):
			// the instances say where they stand now.
			if late {
				break // the time is up: what came in is what counts
			}
			if busy := s.confirm(sd.id, peers, gone); busy {
				s.refuse(sd)
				return cswire.ErrExist
			} else if !s.sameAnswers(peers, totalWant, totalYes, totalNo, sd) {
				continue
			}
			break
		}
		select {
		case p := <-sd.verdicts:
			if gone[p.Instance] {
				continue
			}
			if p.Busy {
				s.refuse(sd)
				return cswire.ErrExist
			}
			// A verdict may overtake the first answer (they travel on
			// different subjects): the later stands.
			prev, known := peers[p.Instance]
			if known && prev.Seq > p.Seq {
				continue
			}
			peers[p.Instance] = p
			if !known {
				go s.watch(p.Instance, sd.ended, func() {
					select {
					case goneC <- p.Instance:
					case <-sd.ended:
					}
				})
			}
			acked = acked || (listed && allAcked())
		case id := <-goneC:
			// Its clients' connections went with it: each is a yes,
			// whatever it said, as a client that goes away is.
			p := peers[id]
			s.log.Info("shutdown: an asked cfg instance is gone; its clients count as gone", "instance", id, "clients", p.Asked)
			p.Yes, p.No, p.Done = p.Asked, 0, true
			peers[id], gone[id] = p, true
		case <-sd.changed:
		case <-ackWait.C:
			acked = true
		case <-deadline.C:
			// Whoever has not answered by now counts as a no.
			acked, late = true, true
			s.mu.Lock()
			if !sd.complete() {
				sd.timedOut, sd.no = true, sd.want-sd.yes
			}
			s.mu.Unlock()
			for id, p := range peers {
				if !p.Done {
					p.No, p.Done = p.Asked-p.Yes, true
					peers[id] = p
				}
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

// watch pings the node's cfg instance instance until ended, and calls
// gone once two pings in a row found nobody listening there.
func (s *Service) watch(instance string, ended <-chan struct{}, gone func()) {
	t := time.NewTicker(peerPingInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ended:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), peerPingInterval)
		_, err := s.cfg.Conn.RequestWithContext(ctx, s.cfg.Subjects.CfgPeer(s.cfg.Node, instance), nil)
		cancel()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			if misses++; misses == 2 {
				gone()
				return
			}
		case err == nil:
			misses = 0
		}
	}
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
	s.dropLocked(sd)
}

// refuse forgets the requester's round, refused for an earlier one: the
// earlier one's ask, if it waits here, takes over its clients' answers.
func (s *Service) refuse(sd *negotiation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd.refused = true
	s.dropLocked(sd)
}

// cancelPeers tells the node's other instances negotiation id ended: on
// Subjects.CfgPeers for any that may hold it, and to each one that
// answered (peers, but the gone), on its own Subjects.CfgPeer, waiting
// for its word that it dropped it.
func (s *Service) cancelPeers(id string, peers map[string]peerMsg, gone map[string]bool) {
	b, _ := json.Marshal(peerMsg{Op: peerCancel, ID: id, Instance: s.instance})
	if err := s.cfg.Conn.Publish(s.cfg.Subjects.CfgPeers(s.cfg.Node), b); err != nil {
		s.log.Debug("shutdown: telling the other cfg instances the negotiation ended", "err", err)
	}
	for inst := range peers {
		if gone[inst] {
			continue
		}
		if _, err := s.cfg.Conn.Request(s.cfg.Subjects.CfgPeer(s.cfg.Node, inst), b, peerAckWait); err != nil {
			s.log.Debug("shutdown: telling a cfg instance the negotiation ended", "instance", inst, "err", err)
		}
	}
}

// confirm asks every instance in peers but the gone where its clients'
// answers stand now, and updates peers; busy when one no longer holds the
// negotiation (an earlier one took it). One that is gone now is marked
// so, its clients yes; one that does not answer keeps its last word.
func (s *Service) confirm(id string, peers map[string]peerMsg, gone map[string]bool) (busy bool) {
	b, _ := json.Marshal(peerMsg{Op: peerState, ID: id, Instance: s.instance})
	for inst, prev := range peers {
		if gone[inst] {
			continue
		}
		m, err := s.cfg.Conn.Request(s.cfg.Subjects.CfgPeer(s.cfg.Node, inst), b, peerAckWait)
		if errors.Is(err, nats.ErrNoResponders) {
			prev.Yes, prev.No, prev.Done = prev.Asked, 0, true
			peers[inst], gone[inst] = prev, true
			continue
		}
		var p peerMsg
		if err != nil || json.Unmarshal(m.Data, &p) != nil || m.Header.Get(micro.ErrorHeader) != "" {
			s.log.Debug("shutdown: a cfg instance did not say where its clients stand", "instance", inst, "err", err)
			continue
		}
		if p.Busy {
			return true
		}
		if p.Seq >= prev.Seq {
			peers[inst] = p
		}
	}
	return false
}

// sameAnswers reports whether peers and sd still add up to the totals.
func (s *Service) sameAnswers(peers map[string]peerMsg, want, yes, no int, sd *negotiation) bool {
	s.mu.Lock()
	w, y, n, done := sd.want, sd.yes, sd.no, sd.complete()
	s.mu.Unlock()
	for _, p := range peers {
		w, y, n, done = w+p.Asked, y+p.Yes, n+p.No, done && p.Done
	}
	return done && w == want && y == yes && n == no
}

// onDirect serves the node's other instances on this one's own
// Subjects.CfgPeer: an empty request is a ping (an empty answer); a
// state asks where this instance's clients' answers stand in the
// negotiation it holds (busy when it holds no such one); a cancel drops
// it. Anything else is answered with the bus's error headers.
func (s *Service) onDirect(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	if len(m.Data) == 0 {
		_ = m.Respond(nil)
		return
	}
	var p peerMsg
	err := json.Unmarshal(m.Data, &p)
	if err == nil && p.Op != peerState && p.Op != peerCancel {
		err = fmt.Errorf("op %q is neither %q nor %q", p.Op, peerState, peerCancel)
	}
	if err != nil {
		respondError(m, "malformed cfg peer request: "+err.Error())
		return
	}
	s.mu.Lock()
	sd := s.sd
	held := sd != nil && sd.by == nil && sd.id == p.ID
	r := peerMsg{ID: p.ID, Busy: !held}
	switch {
	case p.Op == peerCancel:
		s.cancelLocked(p.ID)
		r.Busy = false
	case held:
		r = peerMsg{ID: p.ID, Asked: sd.want, Done: sd.complete(), Yes: sd.yes, No: sd.no, Seq: sd.seq}
	}
	s.mu.Unlock()
	r.Instance = s.instance
	b, _ := json.Marshal(r)
	_ = m.Respond(b)
}

// respondError answers m at once with the error headers of the bus's
// request/reply convention (docs/subjects.md): code 400, why.
func respondError(m *nats.Msg, why string) { _ = bus.RespondBadRequest(m, why, nil) }

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
// ask's reply subject with how many were asked (verdicts follow on
// Subjects.CfgPeers, changedLocked); a cancel ends that round; a verdict
// goes to this instance's negotiation if it asked for it.
func (s *Service) onPeer(m *nats.Msg) {
	var p peerMsg
	err := json.Unmarshal(m.Data, &p)
	if err == nil && m.Reply != "" && (p.Op != peerAsk || p.ID == "" || p.Instance == "") {
		err = fmt.Errorf("a request here is an ask: {op:%q, id, instance, …}", peerAsk)
	}
	if err != nil {
		// A request is answered at once, in the micro convention, rather
		// than left to its requester's timeout.
		s.log.Debug("undecodable cfg peer message", "err", err)
		if m.Reply != "" {
			respondError(m, "malformed cfgpeers message: "+err.Error())
		}
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
		s.onAskLocked(m, p, nil)
	case peerCancel:
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cancelLocked(p.ID)
	case peerVerdict:
		s.mu.Lock()
		sd := s.sd
		s.mu.Unlock()
		if sd != nil && sd.by != nil {
			s.peerAnswered(sd, p)
		}
	}
}

// onAskLocked answers ask p (m) of another instance: busy if this
// instance runs or holds a negotiation that ranks before it (or that
// every instance took already, or whose time is up), no answer yet if it
// holds one that ranks after it (dropLocked takes it up once that one
// ends), and otherwise it asks its registered clients and answers how
// many. A client prev (a negotiation refused for this one) asked with the
// same flags is not asked again: its answer stands.
func (s *Service) onAskLocked(m *nats.Msg, p peerMsg, prev *negotiation) {
	if cur := s.sd; cur != nil {
		switch {
		case cur.id == p.ID:
		case cur.claimed || cur.timedOut || !before(p.Since, p.Instance, cur.since, cur.origin):
			s.answerPeer(m.Reply, peerMsg{ID: p.ID, Busy: true})
		default:
			cur.pending = append(cur.pending, pendingAsk{m: m, p: p})
		}
		return
	}
	sd := s.newRoundLocked(p.ID, p.Instance, p.Since, p.Flags, nil)
	sd.timeout = time.Duration(p.TimeoutMS) * time.Millisecond
	if sd.timeout <= 0 {
		sd.timeout = DefaultShutdownTimeout
	}
	s.sd = sd
	if sd.want > 0 {
		s.log.Info("shutdown requested on another cfg instance of the node; asking this one's registered clients",
			"flags", FlagName(p.Flags), "clients", sd.want, "asker", p.Instance)
	}
	s.askLocked(sd, prev)
	sd.hold = time.AfterFunc(sd.timeout+2*peerGrace, func() { s.endPeerRound(sd, "the asking instance did not say it decided") })
	ended := make(chan struct{})
	sd.stopWatch = sync.OnceFunc(func() { close(ended) })
	go s.watch(p.Instance, ended, func() { s.endPeerRound(sd, "the asking instance is gone") })
	s.answerPeer(m.Reply, peerMsg{ID: p.ID, Asked: sd.want, Done: sd.complete(), Yes: sd.yes, No: sd.no})
}

// endPeerRound ends the round another instance asked for without its
// word (why says what ended it).
func (s *Service) endPeerRound(sd *negotiation, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sd == sd {
		s.log.Info("shutdown: dropping the negotiation of another cfg instance", "asker", sd.origin, "why", why)
		s.dropLocked(sd)
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

// reply records c's answer; once the node decided (the timer fired, or
// nothing runs) it is refused with CS_ERR_ACCESS, as corosync refuses it.
func (s *Service) reply(c *Conn, yes bool) cswire.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd := s.sd
	if sd == nil || sd.timedOut {
		return cswire.ErrAccess
	}
	sd.answer(c, yes)
	s.changedLocked(sd)
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

// timeout counts the clients that did not answer as no and tells every
// registered client the negotiation timed out, as corosync's timer does;
// nothing changes the round after.
func (s *Service) timeout(sd *negotiation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sd.timedOut || s.sd != sd {
		return
	}
	if sd.yes+sd.no < sd.want {
		s.log.Info("shutdown: not every registered client answered in time")
		s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "timeout", Flags: FlagName(sd.flags), Yes: sd.yes, No: sd.want - sd.yes, Expected: sd.want})
	}
	sd.timedOut, sd.no = true, sd.want-sd.yes
	s.changedLocked(sd)
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
