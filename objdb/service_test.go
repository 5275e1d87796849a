package objdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/layer"
	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cswire"
)

func testEnv(t testing.TB, nc *nats.Conn) layer.Env {
	t.Helper()
	cfg, err := config.Load(config.Options{UserStateDir: t.TempDir(), Overrides: []string{"totem.cluster_name=svc"}})
	if err != nil {
		t.Fatal(err)
	}
	local, _ := cfg.LocalNode()
	subjects, _ := bus.NewSubjects(cfg.Prefix())
	return layer.Env{Config: cfg, Node: local, Conn: nc, Subjects: subjects, Log: bustest.Logger(t), Version: "0.0.0-test"}
}

// clusterEnv is the layer environment of node id of a three-node
// cluster, connected to cl's node id.
func clusterEnv(t testing.TB, cl *bustest.Cluster, id int) layer.Env {
	t.Helper()
	o := []string{"totem.cluster_name=svc", fmt.Sprintf("totem.nodeid=%d", id)}
	for n := 1; n <= 3; n++ {
		o = append(o, fmt.Sprintf("nodelist.node.%d.ring0_addr=127.0.0.1", n-1), fmt.Sprintf("nodelist.node.%d.nodeid=%d", n-1, n))
	}
	cfg, err := config.Load(config.Options{UserStateDir: t.TempDir(), Overrides: o})
	if err != nil {
		t.Fatal(err)
	}
	local, err := cfg.LocalNode()
	if err != nil {
		t.Fatal(err)
	}
	subjects, _ := bus.NewSubjects(cfg.Prefix())
	return layer.Env{Config: cfg, Node: local, Conn: cl.Conn(id), Subjects: subjects, Log: bustest.Logger(t), Version: "0.0.0-test"}
}

// runKeeper runs the keeper of env's node, as its bus process would,
// until the end of the test.
func runKeeper(t testing.TB, env layer.Env) {
	t.Helper()
	cfg, err := objdb.KeeperConfigFor(env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = objdb.RunKeeper(ctx, env.Conn, cfg) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A start loads what the configuration says and removes the keys of its
// sections that an earlier start loaded but the configuration no longer
// has; keys outside the sections (clients' own) stay.
func TestConfigLoadKeepsOnlyWhatTheFileSays(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	dir := t.TempDir()
	envWith := func(overrides ...string) layer.Env {
		t.Helper()
		cfg, err := config.Load(config.Options{UserStateDir: dir, Overrides: append([]string{"totem.cluster_name=svc"}, overrides...)})
		if err != nil {
			t.Fatal(err)
		}
		local, _ := cfg.LocalNode()
		subjects, _ := bus.NewSubjects(cfg.Prefix())
		return layer.Env{Config: cfg, Node: local, Conn: cl.Conn(1), Subjects: subjects, Log: bustest.Logger(t)}
	}
	runKeeper(t, envWith())
	start := func(overrides ...string) {
		t.Helper()
		env := envWith(overrides...)
		subjects := env.Subjects
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = objdb.Run(ctx, env) }()
		c := client.New(cl.Conn(1), subjects, 1)
		deadline := time.Now().Add(20 * time.Second)
		for {
			if v, err := c.Get(ctx, "runtime.config.totem.token"); err == nil && v.String() != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("objdb did not load the configuration")
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		<-done
	}
	start("totem.token=3000", "quorum.two_node=1")
	st, err := objdb.OpenFor(context.Background(), envWith())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, _ := objdb.ParseValue(objdb.String, "mine")
	if err := st.Set(context.Background(), "client.key", v); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get("quorum.two_node"); err != nil || v.String() != "1" {
		t.Fatalf("quorum.two_node = %v (%v)", v, err)
	}
	start("totem.join=70")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errTok := st.Get("totem.token")
		_, errTwo := st.Get("quorum.two_node")
		rt, _ := st.Get("runtime.config.totem.join")
		if errors.Is(errTok, objdb.ErrNotExist) && errors.Is(errTwo, objdb.ErrNotExist) && rt.String() == "70" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a start without them: totem.token %v, quorum.two_node %v, runtime.config.totem.join %v", errTok, errTwo, rt)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := st.Get("client.key"); err != nil {
		t.Errorf("a client's key went with the configuration's: %v", err)
	}
}

// Two objdb processes of one node share its requests (a queue group), and
// both serve the same data.
func TestTwoObjdbProcessesShareTheLoad(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var envs []layer.Env
	runKeeper(t, testEnv(t, cl.Conn(1)))
	for range 2 {
		env := testEnv(t, cl.Conn(1))
		envs = append(envs, env)
		wg.Add(1)
		go func() { defer wg.Done(); _ = objdb.Run(ctx, env) }()
	}
	defer wg.Wait()
	defer cancel()

	c := client.New(cl.Conn(1), envs[0].Subjects, 1)
	// Wait until both have loaded the configuration and registered.
	deadline := time.Now().Add(20 * time.Second)
	for {
		infos, _ := layer.Discover(cl.Conn(1), 200*time.Millisecond)
		if len(infos) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d objdb processes registered, want 2", len(infos))
		}
	}
	v, err := c.Get(ctx, "totem.cluster_name")
	if err != nil || v.String() != "svc" {
		t.Fatalf("totem.cluster_name = %v, %v", v, err)
	}
	// As corosync: totem.token is not in the file, so not in objdb; the
	// value in effect is under runtime.config, a u32.
	if _, err := c.Get(ctx, "totem.token"); !errors.Is(err, cswire.ErrNotExist) {
		t.Errorf("totem.token, which the configuration does not set: %v, want CS_ERR_NOT_EXIST", err)
	}
	if v, err := c.Get(ctx, "runtime.config.totem.token"); err != nil || v.Type != objdb.Uint32 || v.String() != "1000" {
		t.Errorf("runtime.config.totem.token = %v %v (%v), want the u32 1000 in effect", v.Type, v, err)
	}
	for i := range 200 {
		val, _ := objdb.ParseValue(objdb.Uint32, "1")
		if err := c.Set(ctx, "test.share", val); err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
	}
	// Both instances answered some of the 200 sets.
	stats := statsOf(t, cl.Conn(1))
	if len(stats) != 2 || stats[0] == 0 || stats[1] == 0 {
		t.Errorf("requests per objdb process = %v, want both serving", stats)
	}

	// Read-only keys refuse clients, not layers.
	ro, _ := objdb.ParseValue(objdb.Uint32, "9")
	if err := c.Set(ctx, "nodelist.node.0.nodeid", ro); !errors.Is(err, objdb.ErrAccess) {
		t.Errorf("client write of a read-only key: %v, want CS_ERR_ACCESS", err)
	}
	c.Internal = true
	if err := c.Set(ctx, "runtime.totem.x", ro); err != nil {
		t.Errorf("internal write of a read-only key: %v", err)
	}
	if _, err := c.Get(ctx, "no.such.key"); !errors.Is(err, objdb.ErrNotExist) {
		t.Errorf("get of a missing key: %v, want CS_ERR_NOT_EXIST", err)
	}
}

// statsOf returns the number of set requests each objdb process served.
func statsOf(t *testing.T, nc *nats.Conn) []int {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, _ := nc.SubscribeSync(inbox)
	defer func() { _ = sub.Unsubscribe() }()
	_ = nc.PublishRequest("$SRV.STATS.corobus-objdb", inbox, nil)
	var out []int
	for {
		m, err := sub.NextMsg(300 * time.Millisecond)
		if err != nil {
			return out
		}
		var st struct {
			Endpoints []struct {
				Name     string `json:"name"`
				Requests int    `json:"num_requests"`
			} `json:"endpoints"`
		}
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Endpoints {
			if e.Name == objdb.OpSet {
				out = append(out, e.Requests)
			}
		}
	}
}

// Key material in the configuration (totem.key, bus.token) never reaches
// objdb, where every admitted cmap client and every node could read it.
func TestSecretKeysAreNotLoaded(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := config.Load(config.Options{UserStateDir: t.TempDir(), Overrides: []string{
		"totem.cluster_name=svc", "totem.key=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"bus.token=sekrit", "totem.token=4321"}})
	if err != nil {
		t.Fatal(err)
	}
	local, _ := cfg.LocalNode()
	subjects, _ := bus.NewSubjects(cfg.Prefix())
	env := layer.Env{Config: cfg, Node: local, Conn: cl.Conn(1), Subjects: subjects, Log: bustest.Logger(t), Version: "0.0.0-test"}
	runKeeper(t, env)
	done := make(chan struct{})
	go func() { defer close(done); _ = objdb.Run(ctx, env) }()
	defer func() { cancel(); <-done }()
	c := client.New(cl.Conn(1), subjects, 1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if v, err := c.Get(ctx, "totem.token"); err == nil && v.String() == "4321" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("objdb did not load the configuration")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, k := range []string{"totem.key", "bus.token"} {
		if v, err := c.Get(ctx, k); !errors.Is(err, objdb.ErrNotExist) {
			t.Errorf("%s is in objdb: %v, %v", k, v, err)
		}
	}
}
