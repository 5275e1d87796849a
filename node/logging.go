package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/logsys"
)

// attachLogging publishes the process's log records on the node's log
// subjects and answers blackbox requests with the flight recorder, from
// the moment the process has a bus connection until the returned function
// is called.
func attachLogging(nc *nats.Conn, env layer.Env, ls *logsys.Logsys, layerName string) (func(), error) {
	if ls == nil {
		return func() {}, nil
	}
	node := env.Node.ID
	ls.Attach(nc.Publish, func(subsys string) string { return env.Subjects.Log(node, subsys) })
	sub, err := nc.Subscribe(env.Subjects.Blackbox(node), func(m *nats.Msg) {
		var b bytes.Buffer
		fmt.Fprintf(&b, "=== node %d layer %s pid %d\n", node, layerName, os.Getpid())
		_ = ls.Recorder().Dump(&b)
		_ = m.Respond(b.Bytes())
	})
	if err != nil {
		ls.Detach()
		return nil, fmt.Errorf("subscribing to blackbox requests: %w", err)
	}
	// corosync_cfg_reopen_log_files: every layer process reopens its
	// log file and answers (empty, or the error).
	reopen, err := nc.Subscribe(env.Subjects.LogReopen(node), func(m *nats.Msg) {
		var rep []byte
		if err := ls.Reopen(); err != nil {
			rep = []byte(fmt.Sprintf("layer %s pid %d: %v", layerName, os.Getpid(), err))
		}
		_ = m.Respond(rep)
	})
	if err != nil {
		_ = sub.Unsubscribe()
		ls.Detach()
		return nil, fmt.Errorf("subscribing to log reopen requests: %w", err)
	}
	// A reload changed the logging section: every layer process applies
	// it (the logging.* keys as a JSON object) and answers (empty, or why
	// not; a process that cannot apply it keeps logging as before).
	reconf, err := nc.Subscribe(env.Subjects.LogReconfigure(node), func(m *nats.Msg) {
		var rep []byte
		if err := reconfigure(ls, m.Data); err != nil {
			rep = []byte(fmt.Sprintf("layer %s pid %d: %v", layerName, os.Getpid(), err))
		}
		_ = m.Respond(rep)
	})
	if err != nil {
		_ = sub.Unsubscribe()
		_ = reopen.Unsubscribe()
		ls.Detach()
		return nil, fmt.Errorf("subscribing to logging changes: %w", err)
	}
	return func() {
		_ = sub.Unsubscribe()
		_ = reopen.Unsubscribe()
		_ = reconf.Unsubscribe()
		ls.Detach()
	}, nil
}

// reconfigure applies a logging section given as the logging.* keys of a
// JSON object.
func reconfigure(ls *logsys.Logsys, data []byte) error {
	var section map[string]string
	if err := json.Unmarshal(data, &section); err != nil {
		return fmt.Errorf("a logging section that is not a JSON object of keys: %w", err)
	}
	cfg, err := logsys.ConfigFrom(func(k string) string { return section[k] }, logsys.Subsystems())
	if err != nil {
		return err
	}
	return ls.Reconfigure(cfg)
}
