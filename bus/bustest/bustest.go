// Package bustest starts real embedded buses for tests: one node, or a
// cluster of several nodes in one test process, JetStream on. Nothing here
// is a mock: these are the servers `corobus bus` runs.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
)

// Node is one running test bus.
type Node struct {
	ID     uint32
	Server *bus.Server
	Config bus.ServerConfig
}

// Cluster is a set of nodes routed to each other.
type Cluster struct {
	t       testing.TB
	Name    string
	Nodes   []*Node
	configs []bus.ServerConfig
}

// FreePorts reserves n distinct free TCP ports on 127.0.0.1, below the
// kernel's ephemeral range: a port from that range (what listening on
// port 0 gives) may be taken between a server's stop and its restart by
// any outgoing connection of the machine — a node of a test that restarts
// then never listens again. The ports are free when returned, so only
// another test picking the same one at random can collide.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	var ls []net.Listener
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("reserving %d ports in %d-%d: too many taken", n, lo, hi-1)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+mrand.IntN(hi-lo)))
		if err != nil {
			continue // taken
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 10000+1000 {
				return v
			}
		}
	}
	return 32768
}

// Logger returns a test logger that writes through t.Log when -v is given
// and discards otherwise, so that failures stay readable.
//
// Lines logged after the test has ended are dropped: a server's timers
// (nats-server's rate-limited route errors, say) can fire after the
// cleanups, and t.Log then panics ("Log in goroutine after ... has
// completed").
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Writer returns a writer that hands what it is given to t.Log until the
// test ends and drops it after, as Logger's lines: for what is not a
// slog.Logger (a child process's stderr, a logger built with options of
// its own). t.Log shows it when the test fails or with -v.
func Writer(t testing.TB) io.Writer {
	w := &tWriter{t: t}
	t.Cleanup(w.end)
	return w
}

// tWriter writes to t.Log until the test ends.
type tWriter struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(string(p))
	}
	return len(p), nil
}

func (w *tWriter) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

// StartNode starts a one-node bus with JetStream, stopped at the end of the
// test.
func StartNode(t testing.TB) *Node {
	t.Helper()
	return StartCluster(t, 1).Nodes[0]
}

// Options change how StartClusterWith starts its nodes.
type Options struct {
	// RouteKey, when set, protects the routes as totem crypto does: TLS
	// and a route password derived from this cluster key.
	RouteKey []byte
	// Logger, when set, receives every node's log (with a node attribute).
	Logger *slog.Logger
	// Users are the bus users the nodes admit besides the administrator
	// (Conn's connections): nil, the fixed ones (bus.NewUsers).
	Users *bus.Users
	// Absent are nodes of the cluster's configuration that are not
	// started (a fresh cluster with a node down): Start starts one later.
	Absent []int
}

// StartCluster starts n nodes (ids 1..n) routed into one cluster and waits
// until they see each other and JetStream has a meta leader (n > 1).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartClusterWith(t, n, Options{})
}

// StartClusterWith is StartCluster with options.
func StartClusterWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Name: "test"}
	log := o.Logger
	if log == nil {
		log = Logger(t)
	}
	ports := FreePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	for i := range n {
		sc := bus.ServerConfig{
			NodeID:      uint32(i + 1),
			ClusterName: c.Name,
			Listen:      "127.0.0.1",
			ClientPort:  ports[i],
			RouteHost:   "127.0.0.1",
			RoutePort:   ports[n+i],
			StoreDir:    t.TempDir(),
			LameDuck:    time.Second,
			Logger:      log.With("node", i+1),
			Users:       o.Users,
			// One token per node for the test's life: a restarted node
			// admits the connections it admitted before.
			Token: randomToken(t),
			Tags:  []string{ServerTag(i + 1)},
		}
		if n > 1 {
			sc.Routes = routes
		}
		if o.RouteKey != nil {
			rs, err := bus.KeyedRouteSecurity(o.RouteKey, c.Name, uint32(i+1))
			if err != nil {
				t.Fatalf("route security of node %d: %v", i+1, err)
			}
			sc.Route = rs
		}
		c.configs = append(c.configs, sc)
		c.Nodes = append(c.Nodes, nil)
	}
	for i := range n {
		if !slices.Contains(o.Absent, i+1) {
			c.Start(i + 1)
		}
	}
	if n > 1 {
		c.WaitFormed(20 * time.Second)
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			if nd != nil {
				nd.Server.Shutdown(false)
			}
		}
	})
	return c
}

// ServerTag is node id's JetStream placement tag: a stream created with
// Placement{Tags: []string{ServerTag(id)}} is put on node id's server.
func ServerTag(id int) string { return "node:" + strconv.Itoa(id) }

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("drawing a token: %v", err)
	}
	return hex.EncodeToString(b)
}

// Start (re)starts node id with its original configuration and store.
func (c *Cluster) Start(id int) *Node {
	c.t.Helper()
	sc := c.configs[id-1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, sc)
	if err != nil {
		c.t.Fatalf("starting node %d: %v", id, err)
	}
	nd := &Node{ID: uint32(id), Server: srv, Config: sc}
	c.Nodes[id-1] = nd
	return nd
}

// Stop shuts node id down (abruptly: no lame duck, like a crash of the
// process, though the store is flushed).
func (c *Cluster) Stop(id int) {
	c.t.Helper()
	if nd := c.Nodes[id-1]; nd != nil {
		nd.Server.Shutdown(false)
		c.Nodes[id-1] = nil
	}
}

// WaitFormed waits until every running node has routes to every other
// running node and JetStream has a meta leader.
func (c *Cluster) WaitFormed(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := c.formed()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not formed after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) formed() error {
	running := 0
	for _, nd := range c.Nodes {
		if nd != nil {
			running++
		}
	}
	for _, nd := range c.Nodes {
		if nd == nil {
			continue
		}
		st, err := nd.Server.Status()
		if err != nil {
			return err
		}
		if len(st.Routes) != running-1 {
			return fmt.Errorf("node %d has %d routes, want %d", nd.ID, len(st.Routes), running-1)
		}
		if st.MetaLeader == "" {
			return fmt.Errorf("node %d sees no JetStream meta leader", nd.ID)
		}
	}
	return nil
}

// ConnAs opens an in-process connection to node id as bus user user (its
// role's permissions only), closed at the end of the test.
func (c *Cluster) ConnAs(id int, user string, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	nd := c.Nodes[id-1]
	if nd == nil {
		c.t.Fatalf("node %d is not running", id)
	}
	nc, err := nd.Server.ConnectAs(user, fmt.Sprintf("test-node%d-%s", id, user), opts...)
	if err != nil {
		c.t.Fatalf("connecting to node %d as %s: %v", id, user, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// Conn opens an in-process client connection to node id as the
// administrator (every permission), closed at the end of the test.
func (c *Cluster) Conn(id int, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	nd := c.Nodes[id-1]
	if nd == nil {
		c.t.Fatalf("node %d is not running", id)
	}
	nc, err := nd.Server.Connect(fmt.Sprintf("test-node%d", id), opts...)
	if err != nil {
		c.t.Fatalf("connecting to node %d: %v", id, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// URL is node id's client URL, without credentials: host and port.
func (c *Cluster) URL(id int) string {
	return c.Nodes[id-1].Server.ClientURL()
}

// AdminURL is node id's client URL with the administrator's token (a TCP
// connection, for child processes); via, when not empty, replaces its
// host:port (a proxy in front of the node).
func (c *Cluster) AdminURL(id int, via string) string {
	u, err := url.Parse(c.Nodes[id-1].Server.AdminURL())
	if err != nil {
		c.t.Fatalf("node %d's URL: %v", id, err)
	}
	if via != "" {
		u.Host = via
	}
	return u.String()
}
