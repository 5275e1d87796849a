package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/logsys"
)

// AttachLogging publishes a process's log records on the node's log
// subjects, answers blackbox requests with the flight recorder, and
// reopens its log file or applies a new logging section when the node's
// cfg asks (corosync-cfgtool -R), from the moment the process has a bus
// connection until the returned function is called. Every process of a
// node does: its layers, and the `corobus up` that supervises them.
func AttachLogging(nc *nats.Conn, subjects bus.Subjects, node uint32, ls *logsys.Logsys, processName string) (func(), error) {
	if ls == nil {
		return func() {}, nil
	}
	ls.Attach(nc.Publish, func(subsys string) string { return subjects.Log(node, subsys) })
	sub, err := nc.Subscribe(subjects.Blackbox(node), func(m *nats.Msg) {
		var b bytes.Buffer
		fmt.Fprintf(&b, "=== node %d process %s pid %d\n", node, processName, os.Getpid())
		_ = ls.Recorder().Dump(&b)
		_ = m.Respond(b.Bytes())
	})
	if err != nil {
		ls.Detach()
		return nil, fmt.Errorf("subscribing to blackbox requests: %w", err)
	}
	// corosync_cfg_reopen_log_files: every layer process reopens its
	// log file and answers (empty, or the error).
	reopen, err := nc.Subscribe(subjects.LogReopen(node), func(m *nats.Msg) {
		var rep []byte
		if err := ls.Reopen(); err != nil {
			rep = []byte(fmt.Sprintf("process %s pid %d: %v", processName, os.Getpid(), err))
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
	reconf, err := nc.Subscribe(subjects.LogReconfigure(node), func(m *nats.Msg) {
		var rep []byte
		if err := reconfigure(ls, m.Data); err != nil {
			rep = []byte(fmt.Sprintf("process %s pid %d: %v", processName, os.Getpid(), err))
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
