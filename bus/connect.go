package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/config"
)

// ClientURL is the URL of the client port of the node cfg configures, with
// its token as the URL's user, ready for nats.Connect: the administrator,
// with every permission (the CLI). The token must exist (ReadToken): a
// *NoTokenError says that no node has run on the configured state
// directory.
func ClientURL(cfg *config.Config) (string, error) {
	u, tok, err := clientURL(cfg)
	if err != nil {
		return "", err
	}
	u.User = url.User(tok)
	return u.String(), nil
}

// UserURL is the URL of the client port of the node cfg configures, as bus
// user user (its password derived from the node's token): what a layer
// process connects with.
func UserURL(cfg *config.Config, user string) (string, error) {
	u, tok, err := clientURL(cfg)
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(user, UserPassword(tok, user))
	return u.String(), nil
}

func clientURL(cfg *config.Config) (*url.URL, string, error) {
	local, err := cfg.LocalNode()
	if err != nil {
		return nil, "", err
	}
	// Never EnsureToken: a client or a layer pointed at a state directory
	// where no node runs must say so, not create a token there.
	tok, err := ReadToken(cfg)
	if err != nil {
		return nil, "", err
	}
	host := cfg.String("bus.listen")
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return &url.URL{Scheme: "nats", Host: net.JoinHostPort(host, strconv.Itoa(local.ClientPort))}, tok, nil
}

// AsUser turns a bus URL into one for user: a URL carrying the node's token
// (nats://TOKEN@host:port) becomes user's URL with the password derived
// from it, so that a process handed the token still connects with its own
// permissions only; a URL with a user and password, or none, is kept.
func AsUser(rawURL, user string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("bus URL: %w", err)
	}
	if u.User == nil {
		return rawURL, nil
	}
	if _, hasPass := u.User.Password(); hasPass {
		return rawURL, nil
	}
	u.User = url.UserPassword(user, UserPassword(u.User.Username(), user))
	return u.String(), nil
}

// Dial connects a layer or a client to a bus URL (credentials in the URL;
// a user's connection gets the user's reply inboxes). It retries the first
// connection for up to wait, because in `corobus up` the layers start
// while the bus may still be opening its listener; refused credentials are
// not retried.
func Dial(rawURL, name string, wait time.Duration, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		// nats.go's own dial timeout, which a custom dialer replaces.
		nats.SetCustomDialer(rawDialer{timeout: nats.DefaultTimeout}),
	}
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		if _, hasPass := u.User.Password(); hasPass {
			opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(u.User.Username())))
		}
	}
	opts = append(opts, extra...)
	deadline := time.Now().Add(wait)
	for {
		nc, err := nats.Connect(rawURL, opts...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) {
			return nil, fmt.Errorf("connecting to the bus at %s: %w", redact(rawURL), ErrCredentials)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connecting to the bus at %s: %w", redact(rawURL), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ErrCredentials is a bus's refusal of the credentials a connection
// offered: no token, a wrong one, or a user unknown to it.
var ErrCredentials = errors.New("the bus refused the credentials (token or user password missing or wrong)")

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, hasPass := u.User.Password(); hasPass {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	} else {
		u.User = url.User("REDACTED")
	}
	return u.String()
}
