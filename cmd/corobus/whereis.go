package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/corobus/corobus/config"
)

// corosync's tools have no -c: they find the running corosync through its
// IPC socket, an abstract name of the network namespace. corobus's client
// verbs without -c or --bus do the same to learn which configuration the
// running node was started with: `corobus up` answers on the abstract
// socket whereIsName with its file and overrides, and a client that finds
// it there loads them instead of the embedded default (which names
// another cluster, other ports, another state directory and token than a
// node started with -c).

// whereIsName is the abstract socket name `corobus up` answers on.
const whereIsName = "corobus-node"

// whereIs is what up says: the configuration it runs.
type whereIs struct {
	File      string   `json:"file"`
	Overrides []string `json:"overrides,omitempty"`
	PID       int      `json:"pid"`
}

// serveWhereIs answers on whereIsName until ctx ends. Another node of
// this network namespace holding the name is fine: clients find that one,
// as corosync's tools find the IPC names' holder.
func serveWhereIs(ctx context.Context, cfg *config.Config, log *slog.Logger) {
	if cfg.Embedded() {
		return // a client without -c loads the embedded default anyway
	}
	file, err := filepath.Abs(cfg.File())
	if err != nil {
		file = cfg.File()
	}
	b, _ := json.Marshal(whereIs{File: file, Overrides: cfg.Overrides(), PID: os.Getpid()})
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@" + whereIsName, Net: "unix"})
	if err != nil {
		log.Info("another node of this network namespace answers the client verbs that have no -c", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(b)
		_ = c.Close()
	}
}

// findRunning asks the node running in this network namespace for its
// configuration. Only a node run by root or by this user is believed: its
// file decides where the client connects and which token it sends.
func findRunning() (whereIs, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: "@" + whereIsName, Net: "unix"})
	if err != nil {
		return whereIs{}, err
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return whereIs{}, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return whereIs{}, err
	}
	if cerr != nil {
		return whereIs{}, cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return whereIs{}, fmt.Errorf("%s is held by uid %d (pid %d), neither root nor this user: not believed", whereIsName, cred.Uid, cred.Pid)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var w whereIs
	if err := json.NewDecoder(c).Decode(&w); err != nil {
		return whereIs{}, fmt.Errorf("reading %s: %w", whereIsName, err)
	}
	if w.File == "" {
		return whereIs{}, errors.New("the running node named no file")
	}
	return w, nil
}
