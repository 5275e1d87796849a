package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// objdbNode is one node's bus with its keeper and an objdb layer as its
// own user, configured as cluster "test": enough for the verbs that only
// read and write keys.
type objdbNode struct {
	cl    *bustest.Cluster
	admin *client.Client
}

func startObjdbNode(t *testing.T) objdbNode {
	t.Helper()
	a := &app{}
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
	ctx, cancel := context.WithCancel(context.Background())
	kcfg, err := objdb.KeeperConfigFor(layer.Env{Config: cfg, Node: local, Subjects: s, Log: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	kdone := make(chan struct{})
	go func() { defer close(kdone); _ = objdb.RunKeeper(ctx, cl.Conn(1), kcfg) }()
	t.Cleanup(func() { cancel(); <-kdone })
	env := layer.Env{Config: cfg, Node: local, Conn: cl.ConnAs(1, "objdb"), Subjects: s, Log: bustest.Logger(t), Version: "0.0.0-test"}
	done := make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = objdb.Run(ctx, env) }()
	t.Cleanup(func() { cancel(); <-done })
	admin := client.New(cl.Conn(1), s, local.ID)
	waitUntil(t, "objdb to serve the configuration", func() bool {
		select {
		case <-done:
			t.Fatalf("objdb: %v", runErr)
		default:
		}
		v, err := admin.Get(ctx, "totem.cluster_name")
		return err == nil && v.String() == "test"
	})
	return objdbNode{cl: cl, admin: admin}
}

// run runs a verb in-process against the node, over TCP as the
// administrator, as a user's --bus URL would.
func (n objdbNode) run(t *testing.T, verb string, args ...string) (string, error) {
	t.Helper()
	code, stdout, stderr := runVerb(n.cl.AdminURL(1, ""), verb, args...)
	if code != 0 {
		return stdout, errors.New(strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// runVerb runs a verb in-process against the bus at busURL, configured
// as cluster "test" (bustest's).
func runVerb(busURL, verb string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut, version: "test"}
	args = append([]string{verb}, args...)
	args = append(args, "--bus", busURL, "-o", "totem.cluster_name=test")
	code = a.main(context.Background(), args)
	return code, out.String(), errOut.String()
}

// `corobus bench cmap` left its key (test.bench.k, a cluster key) in the
// cluster until 3 Dec: a benchmark must leave the cluster as it found it,
// a key it created deleted, a key it borrowed (--key) given back its old
// value and type.
func TestBenchCmapLeavesTheClusterAsItWas(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	n := startObjdbNode(t)
	ctx := context.Background()

	out, err := n.run(t, "bench", "cmap", "--seconds", "0.2")
	if err != nil || !strings.Contains(out, "RESULT cmap_set_uint32") {
		t.Fatalf("bench cmap: %v\n%s", err, out)
	}
	if v, err := n.admin.Get(ctx, "test.bench.k"); !errors.Is(err, objdb.ErrNotExist) {
		t.Errorf("after bench cmap, test.bench.k = %v (%v); want it deleted", v, err)
	}

	for _, key := range []string{"test.mine", "runtime.mine"} { // a cluster key, a node key
		mine := objdb.Value{Type: objdb.String, Data: []byte("keep me\x00")}
		if err := n.admin.Set(ctx, key, mine); err != nil {
			t.Fatal(err)
		}
		out, err = n.run(t, "bench", "cmap", "--seconds", "0.2", "--key", key)
		if err != nil {
			t.Fatalf("bench cmap --key %s: %v\n%s", key, err, out)
		}
		if v, err := n.admin.Get(ctx, key); err != nil || v.Type != objdb.String || v.String() != "keep me" {
			t.Errorf("after bench cmap --key %s, %s = %v (type %v, %v); want the str it held before", key, key, v, v.Type, err)
		}
	}
}
