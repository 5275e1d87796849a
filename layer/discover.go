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
	deadline := time.Now().Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break // the deadline: everyone who answers in time has
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			continue // not a micro service we can read; not ours
		}
		if strings.HasPrefix(info.Name, "corobus-") {
			out = append(out, info)
		}
	}
	return out, nil
}
