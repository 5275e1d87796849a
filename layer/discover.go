package layer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Discover asks every micro service on the bus for its INFO and returns the
// corobus layers among them (scatter-gather: it collects answers for wait).
func Discover(nc *nats.Conn, wait time.Duration) ([]micro.Info, error) {
	return DiscoverUntil(nc, wait, wait, nil)
}

// DiscoverUntil is Discover that collects answers for at least wait, then
// on until enough says the answers so far are enough, for at most max: a
// process the machine's load delays past wait is waited for when the
// caller knows it runs. enough nil is enough at once.
func DiscoverUntil(nc *nats.Conn, wait, max time.Duration, enough func([]micro.Info) bool) ([]micro.Info, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribing for discovery answers: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SRV.INFO", inbox, nil); err != nil {
		return nil, fmt.Errorf("asking for service INFO: %w", err)
	}
	var out []micro.Info
	start := time.Now()
	deadline := start.Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			// The deadline: everyone who answers in time has, unless
			// the caller still misses someone and may wait longer.
			if enough == nil || enough(out) || time.Since(start) >= max {
				break
			}
			deadline = start.Add(max)
			continue
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			continue // not a micro service we can read; not ours
		}
		if strings.HasPrefix(info.Name, "corobus-") {
			out = append(out, info)
		}
		if time.Now().After(start.Add(wait)) && enough != nil && enough(out) {
			break
		}
	}
	return out, nil
}
