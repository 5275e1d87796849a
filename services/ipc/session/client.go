package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/objdb"
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

// Requester sends an open request to some instance of a component and
// returns its reply: the gateway's is a loader handle's "open" function.
type Requester func(ctx context.Context, m *nats.Msg) (*nats.Msg, error)

// Open asks an instance of a component, through open, to take connection
// id. events is the subject the gateway listens on for this connection's
// events; gateway its alive subject.
func Open(ctx context.Context, nc *nats.Conn, open Requester, id, gateway, events string, cr Creds) (*Client, error) {
	m := nats.NewMsg("")
	m.Header.Set(HdrConn, id)
	m.Header.Set(HdrGateway, gateway)
	m.Header.Set(HdrEvents, events)
	m.Header.Set(HdrPID, strconv.FormatUint(uint64(cr.PID), 10))
	m.Header.Set(HdrUID, strconv.FormatUint(uint64(cr.UID), 10))
	m.Header.Set(HdrGID, strconv.FormatUint(uint64(cr.GID), 10))
	r, err := open(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("no instance is running: %w", cswire.ErrTryAgain)
		}
		return nil, fmt.Errorf("opening a session: %w", err)
	}
	var rep OpenReply
	if err := json.Unmarshal(r.Data, &rep); err != nil {
		return nil, fmt.Errorf("open answered %q: %w", r.Data, err)
	}
	if rep.Error != 0 {
		return nil, fmt.Errorf("connection refused (%s): %w", rep.Why, rep.Error)
	}
	if rep.Session == "" {
		return nil, errors.New("open answered without a session subject")
	}
	return &Client{nc: nc, id: id, session: rep.Session}, nil
}

// Request sends one raw request message and returns the raw response.
func (c *Client) Request(ctx context.Context, msg []byte) ([]byte, error) {
	resp, _, err := c.RequestSettled(ctx, msg)
	return resp, err
}

// RequestSettled is Request, with the objdb position the component's
// writes for the request are applied through in the node's keeper
// (objdb.Position's text; "" when it wrote nothing): the gateway's copy
// applies through it before the client has the answer (Settling).
func (c *Client) RequestSettled(ctx context.Context, msg []byte) (resp []byte, settled string, err error) {
	m := nats.NewMsg(c.session)
	m.Header.Set(HdrConn, c.id)
	m.Data = msg
	r, err := c.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, "", ErrSessionGone
		}
		return nil, "", fmt.Errorf("request on session %s: %w", c.id, err)
	}
	if len(r.Data) == 0 {
		return nil, "", ErrSessionGone
	}
	if r.Header != nil {
		settled = r.Header.Get(objdb.HdrPosition)
	}
	return r.Data, settled, nil
}

// Send sends one raw request message that gets no response (an
// asynchronous call: CPG's multicast). It is handled in order with the
// connection's other requests.
func (c *Client) Send(msg []byte) error {
	m := nats.NewMsg(c.session)
	m.Header.Set(HdrConn, c.id)
	m.Data = msg
	if err := c.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("sending on session %s: %w", c.id, err)
	}
	return nil
}

// Close tells the instance the connection ended.
func (c *Client) Close() {
	m := nats.NewMsg(CloseSubject(c.session))
	m.Header.Set(HdrConn, c.id)
	_ = c.nc.PublishMsg(m)
}

// ProbeReply answers a probe: the ids the instance does not know.
type ProbeReply struct {
	Gone []string `json:"gone"`
}

// ErrNoInstance is Probe's answer when nothing serves the session
// subject: the instance died or restarted (a restarted instance has a new
// subject) — or, for a moment, it is reconnecting to a restarted bus.
var ErrNoInstance = errors.New("no instance serves the session subject")

// Probe asks the instance serving session subject session which of the
// connection ids it no longer knows, and returns them; ErrNoInstance
// when nothing serves the subject. An instance that predates probes
// answers as it answers any request of an unknown connection, with an
// empty reply: alive, nothing known to be gone. Any other error (a
// timeout: the instance may be busy) says nothing of the sessions.
func Probe(ctx context.Context, nc *nats.Conn, session string, ids []string) ([]string, error) {
	m := nats.NewMsg(session)
	m.Header.Set(HdrProbe, "1")
	m.Data, _ = json.Marshal(ids)
	r, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrNoInstance
		}
		return nil, fmt.Errorf("probing %s: %w", session, err)
	}
	if len(r.Data) == 0 {
		return nil, nil
	}
	var rep ProbeReply
	if err := json.Unmarshal(r.Data, &rep); err != nil {
		return nil, fmt.Errorf("probe of %s answered %q: %w", session, r.Data, err)
	}
	return rep.Gone, nil
}

// Session is the instance's session subject this client talks to.
func (c *Client) Session() string { return c.session }

// ID is the connection id.
func (c *Client) ID() string { return c.id }
