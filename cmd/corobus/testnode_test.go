package main

import (
	"context"
	"io"
	"testing"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// testBus is one node's bus with the node's real registry of users (each
// layer connects as its own user, with its real grant), and the
// configuration of a one-node cluster "test" to go with it.
type testBus struct {
	a     *app
	users *bus.Users
	cl    *bustest.Cluster
	cfg   *config.Config
	s     bus.Subjects
	local config.Node
}

func startTestBus(t *testing.T) testBus {
	t.Helper()
	a := &app{stdout: io.Discard, stderr: io.Discard}
	users, err := a.users()
	if err != nil {
		t.Fatal(err)
	}
	cl := bustest.StartClusterWith(t, 1, bustest.Options{Users: users})
	cfg, err := config.Load(config.Options{UserStateDir: t.TempDir(), Overrides: []string{"totem.cluster_name=test"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := bus.NewSubjects(cfg.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	local, err := cfg.LocalNode()
	if err != nil {
		t.Fatal(err)
	}
	return testBus{a: a, users: users, cl: cl, cfg: cfg, s: s, local: local}
}

// env is what a layer connecting as user is given on this node.
func (b testBus) env(t *testing.T, user string) layer.Env {
	return layer.Env{Config: b.cfg, Node: b.local, Conn: b.cl.ConnAs(1, user), Subjects: b.s, Log: bustest.Logger(t), Version: "0.0.0-test"}
}

// objdbNode is a testBus with the node's keeper (as the bus process runs
// it, as the administrator) and an objdb layer as its own user: enough
// for the verbs that only read and write keys, and for writes to be
// judged on data.
type objdbNode struct {
	testBus
	ctx   context.Context
	admin *client.Client
}

func startObjdbNode(t *testing.T) objdbNode {
	t.Helper()
	b := startTestBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	kcfg, err := objdb.KeeperConfigFor(layer.Env{Config: b.cfg, Node: b.local, Subjects: b.s, Log: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	kdone := make(chan struct{})
	go func() { defer close(kdone); _ = objdb.RunKeeper(ctx, b.cl.Conn(1), kcfg) }()
	t.Cleanup(func() { cancel(); <-kdone })
	done := make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = objdb.Run(ctx, b.env(t, "objdb")) }()
	t.Cleanup(func() { cancel(); <-done })
	admin := client.New(b.cl.Conn(1), b.s, b.local.ID)
	waitUntil(t, "objdb to serve the configuration", func() bool {
		select {
		case <-done:
			t.Fatalf("objdb: %v", runErr)
		default:
		}
		v, err := admin.Get(ctx, "totem.cluster_name")
		return err == nil && v.String() == "test"
	})
	return objdbNode{testBus: b, ctx: ctx, admin: admin}
}
