// Package members records totem's membership in objdb, as corosync keeps
// runtime.members.<id>.{ip,join_count,status,config_version} in cmap: totem reports each
// join and leave, and this writes them into the node's own namespace.
package members

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// Recorder queues totem's member events (its callback must not block: it
// runs under totem's lock) and writes them from a bus hook of its own.
type Recorder struct {
	events chan totem.MemberEvent
}

// NewRecorder holds up to 1024 events in flight; past that the oldest
// news is the least useful, so new events are dropped and logged.
func NewRecorder() *Recorder { return &Recorder{events: make(chan totem.MemberEvent, 1024)} }

// OnMember is the callback for totem.Hook.
func (r *Recorder) OnMember(ev totem.MemberEvent) {
	select {
	case r.events <- ev:
	default:
	}
}

// Hook writes the queued events through the node's objdb until ctx ends.
// objdb may start after the bus, so a write is retried until objdb answers.
func (r *Recorder) Hook(ctx context.Context, srv *bus.Server, env layer.Env) error {
	nc, err := srv.Connect("corobus-members")
	if err != nil {
		return err
	}
	defer nc.Close()
	c := client.New(nc, env.Subjects, env.Node.ID)
	c.Internal = true // runtime.* is read-only to clients, not to corobus
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-r.events:
			for attempt := 0; ; attempt++ {
				err := write(ctx, c, ev)
				if err == nil || ctx.Err() != nil {
					break
				}
				if attempt%20 == 0 {
					env.Log.Debug("runtime.members not written yet; retrying", "node", ev.Node, "err", err)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(250 * time.Millisecond):
				}
			}
		}
	}
}

func write(ctx context.Context, c *client.Client, ev totem.MemberEvent) error {
	prefix := "runtime.members." + strconv.FormatUint(uint64(ev.Node), 10) + "."
	ip, _ := objdb.ParseValue(objdb.String, fmt.Sprintf("r(0) ip(%s) ", ev.Addr))
	count, _ := objdb.ParseValue(objdb.Uint32, strconv.FormatUint(ev.JoinCount, 10))
	status, _ := objdb.ParseValue(objdb.String, ev.Status)
	version, _ := objdb.ParseValue(objdb.Uint64, strconv.FormatUint(ev.ConfigVersion, 10))
	// corosync sets config_version after the other three, in its cmap
	// service's sync, from each member's totem.config_version; a
	// member's new version (its reload) changes that key alone.
	kvs := []struct {
		key string
		v   objdb.Value
	}{{"ip", ip}, {"join_count", count}, {"status", status}, {"config_version", version}}
	if ev.VersionOnly {
		kvs = kvs[3:]
	}
	for _, kv := range kvs {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Set(ctx, prefix+kv.key, kv.v)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}
