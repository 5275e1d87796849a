// Package loadertest runs a real loader for tests of the packages that
// resolve components through one (loader, svcmgr, …).
package loadertest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
)

// Start runs node's loader, searching path, on nc until the end of the
// test.
func Start(t testing.TB, nc *nats.Conn, subjects bus.Subjects, node uint32, path ...string) {
	t.Helper()
	s, err := loader.NewServer(loader.ServerConfig{Conn: nc, Subjects: subjects, Node: node, SearchPath: path, Log: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "corobus-loader", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddEndpoints(svc); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = svc.Stop() })
}
