package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/services/ipc/session"
)

// compSession is a client verb's session with a service component of a
// node, over the bus: the same protocol the IPC gateway speaks for a
// corosync client, carrying the same libqb messages. The verbs are thus
// clients of the very code corosync's tools reach.
type compSession struct {
	c      *session.Client
	events chan []byte
	stop   func()
}

// openComponent opens a session with node's instance of component.
func openComponent(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32, component string) (*compSession, error) {
	gw := "cli" + nuid.Next()
	id := nuid.Next()
	alive := subjects.IPCAlive(node, gw)
	events := make(chan []byte, 256)
	sub, err := nc.Subscribe(subjects.IPCEvents(node, gw, id), func(m *nats.Msg) {
		select {
		case events <- m.Data:
		default: // a verb that stopped reading drops the rest
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to the session's events: %w", err)
	}
	// A component drops the sessions of a gateway it stops hearing from.
	actx, cancel := context.WithCancel(context.Background())
	go func() {
		t := time.NewTicker(session.AliveInterval)
		defer t.Stop()
		for {
			_ = nc.Publish(alive, nil)
			select {
			case <-actx.Done():
				return
			case <-t.C:
			}
		}
	}()
	subject := subjects.Component(loader.LocalNamespace(node), component, 0) + ".open"
	open := func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
		m.Subject = subject
		return nc.RequestMsgWithContext(ctx, m)
	}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	c, err := session.Open(cctx, nc, open, id, alive, subjects.IPCEvents(node, gw, id),
		session.Creds{PID: uint32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
	if err != nil {
		cancel()
		_ = sub.Unsubscribe()
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("no %s service answers on node %d (is the node up?): %w", component, node, err)
		}
		return nil, fmt.Errorf("opening a session with node %d's %s service: %w", node, component, err)
	}
	return &compSession{c: c, events: events, stop: func() {
		c.Close()
		cancel()
		_ = sub.Unsubscribe()
	}}, nil
}

// call sends one request and returns the response.
func (s *compSession) call(ctx context.Context, msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return s.c.Request(ctx, msg)
}

// event waits for the next event.
func (s *compSession) event(ctx context.Context, timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case b := <-s.events:
		return b, nil
	case <-t.C:
		return nil, errors.New("no notification came")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close ends the session.
func (s *compSession) Close() { s.stop() }
