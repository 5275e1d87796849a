package ipc

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem/harness"
	"github.com/corobus/corobus/loader"
	"github.com/corobus/corobus/loader/loadertest"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
	syncsvc "github.com/corobus/corobus/services/sync"
)

// TestColocatedCPGCountsOverload: a libcpg join that the gateway's own
// cpg instance (ipc.colocate, the default placement) answers
// CS_ERR_TRY_AGAIN because a sync runs is the connection's overload, as
// corosync counts it, like one the gateway holds for a cpg running apart.
//
// The sync is held open for good: three nodes run cpg, node 2's instance
// stops (its totem stays), and node 3 dies. Node 1's exchange of
// joinlists in the new view then waits for node 2's, which never comes.
func TestColocatedCPGCountsOverload(t *testing.T) {
	h := harness.New(t, harness.Options{N: 3, Token: time.Second, Join: 30 * time.Millisecond, Consensus: 1200 * time.Millisecond})
	h.WaitView([]int{1, 2, 3}, 15*time.Second)
	svcs := map[int]*cpg.Service{}
	stops := map[int]func(){}
	for id := 1; id <= 3; id++ {
		nc := h.Client(id)
		e := syncsvc.New(nc, syncsvc.Options{Node: uint32(id), Subjects: h.Subjects})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = e.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	for id := 1; id <= 3; id++ {
		nc := h.Client(id)
		svc := cpg.New(cpg.Options{Node: uint32(id), Subjects: h.Subjects, Logger: bustest.Logger(t)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := cpg.ServeWith(ctx, nc, h.Subjects, uint32(id), svc, nil); err != nil && ctx.Err() == nil {
				t.Errorf("cpg on node %d: %v", id, err)
			}
		}()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		svcs[id], stops[id] = svc, stop
	}
	for id := 1; id <= 3; id++ {
		waitUntil(t, fmt.Sprintf("cpg on node %d to synchronize", id), svcs[id].Ready)
	}

	// Node 1's gateway, its cpg colocated.
	nc := h.Client(1)
	loadertest.Start(t, nc, h.Subjects, 1, loader.LocalNamespace(1))
	shm, err := os.MkdirTemp("", "qb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	service := fmt.Sprintf("cbov-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	gw, err := New(Config{
		Conn: nc, Subjects: h.Subjects, Node: 1, Log: bustest.Logger(t), Admit: func(libqb.Creds) bool { return true }, ShmDir: shm,
		Routes: []Route{{Service: service, Component: cpg.ComponentName, Version: cpg.ComponentVersion,
			HeldDuringSync: cpg.HeldDuringSync, Async: cpg.Async, ServiceID: cswire.ServiceCPG}},
		Colocated: map[string]Colocated{cpg.ComponentName: {Subject: cpg.Subject(h.Subjects, 1), Open: svcs[1].OpenColocated}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-gwDone; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	f := gatewayFixture{gw: gw, service: service, nc: nc, subjects: h.Subjects}
	c := f.dialServed(t)
	join := func(group string) cswire.Error {
		t.Helper()
		resp, err := c.Request(cpgwire.EncodeJoin(cpgwire.Name(group), uint32(os.Getpid()), 0), 10*time.Second)
		if err != nil {
			t.Fatalf("join: %v", err)
		}
		return cswire.Error(qbclient.ResponseError(resp))
	}
	if st := join("g"); st != cswire.OK {
		t.Fatalf("join outside a sync: %v", st)
	}
	own := fmt.Sprintf("stats.ipcs.service%d.%d.", cswire.ServiceCPG, os.Getpid())
	if n := statsValue(t, gw, own, "overload"); n != 0 {
		t.Fatalf("overload %d before any sync", n)
	}

	stops[2]()
	h.Kill(3)
	// The same join again: CS_ERR_EXIST until the view changes, then
	// held (CS_ERR_TRY_AGAIN) while the sync runs, which it does for good.
	held := uint64(0)
	for deadline := time.Now().Add(30 * time.Second); held < 3; time.Sleep(10 * time.Millisecond) {
		switch st := join("g"); st {
		case cswire.ErrTryAgain:
			held++
		case cswire.ErrExist:
			if held > 0 {
				t.Fatal("a join ran after one was held: the sync ended")
			}
		default:
			t.Fatalf("join while the view changes: %v", st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d joins held in 30 s: the sync did not start", held)
		}
	}
	// Counted before the answer is written: the client may see it first.
	waitUntil(t, "the held joins to be counted", func() bool { return statsValue(t, gw, own, "overload") >= held })
	if n := statsValue(t, gw, own, "overload"); n != held {
		t.Errorf("overload %d after %d held joins", n, held)
	}
}

// statsValue is the u64 counter of the one connection whose keys start
// with prefix (stats.ipcs.service<id>.<pid>.) in gw's stats map.
func statsValue(t *testing.T, gw *Gateway, prefix, counter string) uint64 {
	t.Helper()
	entries, err := gw.StatsEntries(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var found []uint64
	for _, e := range entries {
		if strings.HasSuffix(e.Key, "."+counter) {
			if e.Value.Type != uint8(objdb.Uint64) || len(e.Value.Data) != 8 {
				t.Fatalf("%s: type %d, %d bytes; want u64", e.Key, e.Value.Type, len(e.Value.Data))
			}
			found = append(found, binary.LittleEndian.Uint64(e.Value.Data))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d connections' %s under %s, want 1: %v", len(found), counter, prefix, entries)
	}
	return found[0]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
