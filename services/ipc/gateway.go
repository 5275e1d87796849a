// Package ipc is the IPC manager: the gateway through which unmodified
// corosync clients reach corobus over libqb's socket IPC.
package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/ipc/libqb"
)

// Layer is `corobus ipc`.
func Layer() layer.Layer {
	return layer.Layer{Name: "ipc", Subsys: "IPC", Summary: "the IPC gateway: corosync clients over libqb socket IPC", Run: Run}
}

// Run serves the cmap service to corosync clients until ctx ends. The cmap
// service runs in the gateway over the node's objdb view (a watched local
// copy), which is what lets a get be answered without a bus round trip.
func Run(ctx context.Context, env layer.Env) error {
	st, err := objdb.OpenFor(ctx, env)
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := layer.NewService(env, "ipc", "corosync client gateway", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("registering the ipc service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	srv := libqb.NewServer(env.Log)
	h := &cmapHandler{svc: cmap.NewService(cmap.ObjdbStore{S: st}, env.Log), st: st, log: env.Log}
	for {
		err := srv.Listen(ctx, "cmap", h)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		// Abstract socket names are per network namespace: another
		// corosync (or another node's gateway on this host) owns them.
		env.Log.Error("the cmap IPC name is taken in this network namespace; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
}

// cmapHandler admits clients as corosync does and opens cmap connections.
type cmapHandler struct {
	svc *cmap.Service
	st  *objdb.Store
	log *slog.Logger
}

// Admit lets in root, the user corobus runs as, and the uids and gids
// listed under uidgid.* (read from objdb at each connection, so changes
// apply at once).
func (h *cmapHandler) Admit(c libqb.Creds) bool {
	if c.UID == 0 || int(c.UID) == os.Geteuid() {
		return true
	}
	for _, k := range []string{
		"uidgid.uid." + strconv.FormatUint(uint64(c.UID), 10),
		"uidgid.config.uid." + strconv.FormatUint(uint64(c.UID), 10),
		"uidgid.gid." + strconv.FormatUint(uint64(c.GID), 10),
		"uidgid.config.gid." + strconv.FormatUint(uint64(c.GID), 10),
	} {
		if _, err := h.st.Get(k); err == nil {
			return true
		}
	}
	return false
}

// Open starts a libcmap connection.
func (h *cmapHandler) Open(c *libqb.Conn) (libqb.Session, error) {
	return h.svc.OpenConn(c, fmt.Sprintf("%s/%d pid %d", c.Service, c.ID, c.Creds.PID)), nil
}
