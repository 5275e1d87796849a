package bus

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/config"
)

// ClientURL is the URL of the client port of the node cfg configures, with
// its token as the URL's user, ready for nats.Connect.
func ClientURL(cfg *config.Config) (string, error) {
	local, err := cfg.LocalNode()
	if err != nil {
		return "", err
	}
	tok, err := EnsureToken(cfg)
	if err != nil {
		return "", err
	}
	host := cfg.String("bus.listen")
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort(host, strconv.Itoa(local.ClientPort))}
	if tok != "" {
		u.User = url.User(tok)
	}
	return u.String(), nil
}

// Dial connects a layer or a client to a bus URL (credentials in the URL).
// It retries the first connection for up to wait, because in `corobus up`
// the layers start while the bus may still be opening its listener.
func Dial(rawURL, name string, wait time.Duration, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}, extra...)
	deadline := time.Now().Add(wait)
	for {
		nc, err := nats.Connect(rawURL, opts...)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connecting to the bus at %s: %w", redact(rawURL), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}
