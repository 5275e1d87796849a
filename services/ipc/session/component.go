package session

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/loader"
)

// ServeComponent runs h as component c of node: announced to the loader,
// taking new connections through its function "open", serving each
// connection's requests on this instance's session subject. It returns
// when ctx ends, or when a newer version retired this one and the last of
// its connections has gone — clients keep the instance that holds their
// state, as LCR references kept an interface loaded.
func ServeComponent(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, node uint32, c loader.Component, h Handler, log *slog.Logger) error {
	if c.Namespace == "" {
		c.Namespace = loader.LocalNamespace(node)
	}
	if c.Subject == "" {
		c.Subject = subjects.Component(c.Namespace, c.Name, c.Version)
	}
	sessions := NewServer(nc, c.Subject, h, log)
	c.Interfaces = []string{"open"}
	c.Quiet = sessions.Quiet
	c.Log = log
	c.Handler = func(_ context.Context, fn string, m *nats.Msg) ([]byte, error) {
		if fn != "open" {
			return nil, fmt.Errorf("%s has no function %q", c.Name, fn)
		}
		return sessions.Open(m), nil
	}
	var g run.Group
	{
		// Every request of an open connection.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return sessions.Run(ctx) }, func(error) { cancel() })
	}
	{
		// Announcements, new connections, retirement: when it returns,
		// the instance ends.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return c.Serve(ctx, nc, subjects, node) }, func(error) { cancel() })
	}
	return g.Run()
}
