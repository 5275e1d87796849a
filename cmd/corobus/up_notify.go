package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/node"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
	"github.com/corobus/corobus/services/svcmgr"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// notifyWhenServing tells systemd (a Type=notify unit: corosync.service
// as packaged) READY=1 once the node serves corosync's clients, as
// corosync says it once its first synchronization is done: units ordered
// after it — pacemaker.service — start only then. Without $NOTIFY_SOCKET
// it does nothing.
func (a *app) notifyWhenServing(ctx context.Context, url string, subjects bus.Subjects, id uint32, log *slog.Logger) {
	if node.NotifySocket(a.environ) == "" {
		return
	}
	var last error
	quiet := time.Now().Add(30 * time.Second)
	for {
		if last = serving(ctx, url, subjects, id); last == nil {
			break
		}
		if time.Now().After(quiet) {
			log.Info("not ready for systemd yet", "waiting_for", last.Error())
			quiet = time.Now().Add(time.Minute)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := node.Notify(a.environ, "READY=1"); err != nil {
		log.Warn("telling systemd the node is ready", "err", err)
		return
	}
	log.Info("told systemd the node is ready (READY=1)")
}

// serving reports nil once node id serves corosync's clients: every
// service its service manager loads is loaded, a synchronization round has
// completed and none runs, and cmap, through the IPC gateway, has this
// node's runtime.members entry. Otherwise it says what is missing.
func serving(ctx context.Context, url string, subjects bus.Subjects, id uint32) error {
	nc, err := bus.Dial(url, "corobus-up-ready", 0)
	if err != nil {
		return fmt.Errorf("the bus: %w", err)
	}
	defer nc.Close()
	return servingOn(ctx, nc, subjects, id)
}

// servingOn is serving over a connection the caller holds. The IPC part
// asks the gateway of this network namespace: only the node of the
// namespace can be judged by it.
func servingOn(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, id uint32) error {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(qctx, subjects.SvcmgrAPI(id, "list"), nil)
	if err != nil {
		return fmt.Errorf("the service manager: %w", err)
	}
	var list []svcmgr.ServiceInfo
	if err := json.Unmarshal(m.Data, &list); err != nil {
		return fmt.Errorf("the service manager's list: %w", err)
	}
	if len(list) == 0 {
		return errors.New("the service manager has loaded nothing yet")
	}
	for _, s := range list {
		if s.State != "loaded" && s.State != "hosted" {
			return fmt.Errorf("service %s is %s", s.Name, s.State)
		}
	}
	st, err := syncsvc.FetchState(nc, subjects, id, 2*time.Second)
	if err != nil {
		return err
	}
	if st.Rounds == 0 || st.InProgress {
		return fmt.Errorf("the first synchronization (rounds %d, in progress %v)", st.Rounds, st.InProgress)
	}
	c, err := qbclient.Dial("cmap", 1<<16)
	if err != nil {
		return fmt.Errorf("the IPC gateway: %w", err)
	}
	defer c.Close()
	// A get as libcmap sends it (type and length only) of this node's
	// runtime.members entry: corosync's clients find it there once
	// corosync is ready, and cmap answers it only once the object
	// database is open and the membership recorded.
	key := fmt.Sprintf("runtime.members.%d.status", id)
	req := cswire.NewRequest(cmap.ReqGet, cmap.ReqHeaderSize+cswire.NameSize+8)
	cswire.PutName(req, cmap.ReqHeaderSize, key)
	resp, err := c.Request(req, 2*time.Second)
	if err != nil {
		return fmt.Errorf("cmap: %w", err)
	}
	switch _, code, err := cswire.ParseResponse(resp); {
	case err != nil:
		return fmt.Errorf("cmap's answer: %w", err)
	case code != cswire.OK:
		return fmt.Errorf("cmap answers %s for %s", code, key)
	}
	return nil
}
