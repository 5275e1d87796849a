package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/services/cswire"
)

// ErrSessionGone means the component instance no longer knows the
// connection (it restarted or expired it): the gateway closes the client's
// connection, as corosync's clients see when corosync restarts.
var ErrSessionGone = errors.New("the component no longer has this session")

// Creds are a client's credentials as the kernel reported them.
type Creds struct{ PID, UID, GID uint32 }

// Client is the gateway's end of one session.
type Client struct {
	nc      *nats.Conn
	id      string
	session string
}

// Open asks any instance of component to take connection id. events is the
// subject the gateway listens on for this connection's events; gateway its
// alive subject.
func Open(ctx context.Context, nc *nats.Conn, component, id, gateway, events string, cr Creds) (*Client, error) {
	m := nats.NewMsg(OpenSubject(component))
	m.Header.Set(HdrConn, id)
	m.Header.Set(HdrGateway, gateway)
	m.Header.Set(HdrEvents, events)
	m.Header.Set(HdrPID, strconv.FormatUint(uint64(cr.PID), 10))
	m.Header.Set(HdrUID, strconv.FormatUint(uint64(cr.UID), 10))
	m.Header.Set(HdrGID, strconv.FormatUint(uint64(cr.GID), 10))
	r, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("no instance of %s is running: %w", component, cswire.ErrTryAgain)
		}
		return nil, fmt.Errorf("opening a session with %s: %w", component, err)
	}
	if e := r.Header.Get(HdrError); e != "" {
		code, _ := strconv.Atoi(e)
		return nil, fmt.Errorf("%s refused the connection: %w", component, cswire.Error(code))
	}
	s := r.Header.Get(HdrSession)
	if s == "" {
		return nil, fmt.Errorf("%s answered open without a session subject", component)
	}
	return &Client{nc: nc, id: id, session: s}, nil
}

// Request sends one raw request message and returns the raw response.
func (c *Client) Request(ctx context.Context, msg []byte) ([]byte, error) {
	m := nats.NewMsg(c.session)
	m.Header.Set(HdrConn, c.id)
	m.Data = msg
	r, err := c.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrSessionGone
		}
		return nil, fmt.Errorf("request on session %s: %w", c.id, err)
	}
	if len(r.Data) == 0 {
		return nil, ErrSessionGone
	}
	return r.Data, nil
}

// Close tells the instance the connection ended.
func (c *Client) Close() {
	m := nats.NewMsg(CloseSubject(c.session))
	m.Header.Set(HdrConn, c.id)
	_ = c.nc.PublishMsg(m)
}
