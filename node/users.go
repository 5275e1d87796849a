package node

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/layer"
)

// Users is the registry of a node's bus users: the fixed ones (bus.NewUsers)
// and one per layer and built-in service, named after it, with the grant it
// declares. The bus process admits exactly these.
func Users(layers ...layer.Layer) (*bus.Users, error) {
	u := bus.NewUsers()
	for _, l := range layers {
		if l.Grant == nil {
			return nil, noGrant(l)
		}
		if err := u.Add(l.Name, l.Grant); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func noGrant(l layer.Layer) error {
	return fmt.Errorf("layer %s declares no bus grant (layer.Layer.Grant), so it has no bus user: declare the subjects it uses (docs/security.md)", l.Name)
}

// violationHandler logs, loudly, what the bus refused a layer: a publish or
// subscription outside its grant is a bug in the grant or in the layer.
func violationHandler(log *slog.Logger, user string) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			log.Error("bus permission violation: the layer used a subject outside its grant", "user", user, "err", err,
				"fix", "declare the subject in layer.Layer.Grant (bus/grants.go, docs/security.md)")
			return
		}
		if sub != nil {
			log.Debug("bus subscription error", "subject", sub.Subject, "err", err)
			return
		}
		log.Debug("bus connection error", "err", err)
	})
}
