package ipc

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
)

// TestColocatedCPGNotReadyIsTryAgain: the gateway's own cpg instance
// (ipc.colocate, the default placement) that has not synchronized the
// groups yet refuses a libcpg connection with EAGAIN, CS_ERR_TRY_AGAIN in
// corosync's libraries, as corosync answers until its first
// synchronization and as the gateway answers for a cpg running apart.
// Pacemaker's daemons retry that; a refusal (EACCES, CS_ERR_ACCESS) is
// fatal to them, and made pacemakerd shut down the node when the engine
// was restarted under it.
//
// The instance here never synchronizes: no sync engine runs on its node.
func TestColocatedCPGNotReadyIsTryAgain(t *testing.T) {
	e := newGatewayEnv(t, "cbnr")
	svc := cpg.New(cpg.Options{Node: 1, Subjects: e.subjects, Logger: bustest.Logger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := cpg.ServeWith(ctx, e.nc, e.subjects, 1, svc, nil); err != nil && ctx.Err() == nil {
			t.Errorf("cpg: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-served })
	// The instance's own refusals, counted, to know that the gateway
	// asked it (and not only the loader, which answers EAGAIN as well
	// until it knows the instance).
	var asked atomic.Int64
	open := func(c *libqb.Conn) (libqb.Session, error) {
		s, err := svc.OpenColocated(c)
		if err != nil {
			asked.Add(1)
		}
		return s, err
	}
	gw, err := New(Config{
		Conn: e.nc, Subjects: e.subjects, Node: 1, Log: bustest.Logger(t), Admit: func(libqb.Creds) bool { return true }, ShmDir: e.shm,
		Routes: []Route{{Service: e.service, Component: cpg.ComponentName, Version: cpg.ComponentVersion,
			HeldDuringSync: cpg.HeldDuringSync, Async: cpg.Async, ServiceID: cswire.ServiceCPG}},
		Colocated: map[string]Colocated{cpg.ComponentName: {Subject: cpg.Subject(e.subjects, 1), Open: open}},
	})
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(gctx) }()
	t.Cleanup(func() {
		gcancel()
		if err := <-gwDone; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	f := gatewayFixture{gw: gw, service: e.service, nc: e.nc, subjects: e.subjects}
	for deadline := time.Now().Add(20 * time.Second); asked.Load() < 3; time.Sleep(50 * time.Millisecond) {
		before := asked.Load()
		c, err := f.dial(t)
		if c != nil {
			t.Fatal("a connection to a cpg that has not synchronized the groups was accepted")
		}
		if asked.Load() > before && !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("the colocated cpg not ready: dial %v, want EAGAIN (CS_ERR_TRY_AGAIN)", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never asked the colocated cpg (last dial: %v)", err)
		}
	}
}
