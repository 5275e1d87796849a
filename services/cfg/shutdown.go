package cfg

import (
	"context"
	"slices"
	"time"

	"github.com/corobus/corobus/services/cswire"
)

// The shutdown negotiation, as corosync's cfg runs it: a client calls
// corosync_cfg_try_shutdown; every other client registered with trackstart
// (Pacemaker is one) gets the shutdown callback and answers with
// corosync_cfg_replyto_shutdown. REQUEST goes ahead only if all say yes
// within cfg.shutdown_timeout; REGARDLESS asks but goes ahead anyway;
// IMMEDIATE asks nobody. A registered client that goes away counts as a
// yes; one that does not answer in time as a no.

func (s *Service) trackStart(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.trackers, c) {
		return
	}
	s.trackers = append(s.trackers, c)
	if sd := s.sd; sd != nil {
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
		sd.timer.Stop()
		s.sd = nil
		close(sd.done)
		sd = nil
	}
	i := slices.Index(s.trackers, c)
	if i < 0 {
		return
	}
	s.trackers = slices.Delete(s.trackers, i, i+1)
	if sd == nil {
		return
	}
	switch sd.answers[c] {
	case 1:
		sd.yes--
	case 0:
		sd.no--
	}
	sd.answers[c] = 1
	sd.yes++
	s.decideLocked()
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
	sd := &negotiation{by: c, flags: flags, answers: map[*Conn]int{}, done: make(chan cswire.Error, 1)}
	for _, t := range s.trackers {
		if t != c {
			sd.answers[t] = -1
			sd.want++
		}
	}
	if sd.want == 0 {
		s.mu.Unlock()
		s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "confirmed", Flags: FlagName(flags)})
		s.sendShutdownAfterReply(ctx)
		return cswire.OK
	}
	s.sd = sd
	s.mu.Unlock()
	timeout := DefaultShutdownTimeout
	if s.cfg.ShutdownTimeout != nil {
		if d, err := s.cfg.ShutdownTimeout(ctx); err == nil && d > 0 {
			timeout = d
		}
	}
	s.mu.Lock()
	if s.sd != sd { // the requester went away meanwhile
		s.mu.Unlock()
		return cswire.ErrBadHandle
	}
	sd.timer = time.AfterFunc(timeout, func() { s.timeout(sd) })
	s.log.Info("shutdown requested; asking the registered clients", "flags", FlagName(flags), "clients", sd.want, "timeout", timeout)
	s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "requested", Flags: FlagName(flags), Expected: sd.want})
	msg := EncodeTestShutdown(flags, cswire.OK)
	for t := range sd.answers {
		t.send(msg)
	}
	s.mu.Unlock()
	select {
	case code, ok := <-sd.done:
		if !ok {
			return cswire.ErrBadHandle
		}
		if code == cswire.OK {
			s.sendShutdownAfterReply(ctx)
		}
		return code
	case <-ctx.Done():
		s.mu.Lock()
		if s.sd == sd {
			sd.timer.Stop()
			s.sd = nil
		}
		s.mu.Unlock()
		return cswire.ErrTimeout
	}
}

func (s *Service) reply(c *Conn, yes bool) cswire.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd := s.sd
	if sd == nil {
		return cswire.ErrAccess
	}
	if yes {
		sd.yes++
		sd.answers[c] = 1
	} else {
		sd.no++
		sd.answers[c] = 0
	}
	s.decideLocked()
	return cswire.OK
}

// decideLocked ends the negotiation once every answer is in: confirmed if
// all said yes (or the request was REGARDLESS), else cancelled with
// CS_ERR_BUSY.
func (s *Service) decideLocked() {
	sd := s.sd
	if sd == nil || sd.yes+sd.no < sd.want {
		return
	}
	sd.timer.Stop()
	s.sd = nil
	ev := ShutdownEvent{Node: s.cfg.Node, Flags: FlagName(sd.flags), Yes: sd.yes, No: sd.no, Expected: sd.want}
	if sd.yes >= sd.want || sd.flags == ShutdownRegardless {
		ev.Phase = "confirmed"
		sd.done <- cswire.OK
	} else {
		ev.Phase = "cancelled"
		sd.done <- cswire.ErrBusy
	}
	s.log.Info("shutdown decision", "decision", ev.Phase, "yes", sd.yes, "no", sd.no, "flags", ev.Flags)
	s.event("shutdown", ev)
}

// timeout counts the clients that did not answer as no, decides, and
// tells every registered client the negotiation timed out.
func (s *Service) timeout(sd *negotiation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sd != sd {
		return
	}
	s.log.Info("shutdown: not every registered client answered in time")
	sd.no = sd.want - sd.yes
	s.decideLocked()
	s.event("shutdown", ShutdownEvent{Node: s.cfg.Node, Phase: "timeout", Flags: FlagName(sd.flags), Yes: sd.yes, No: sd.no, Expected: sd.want})
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
			s.stop("shut down by sysadmin")
		}
	})
}
