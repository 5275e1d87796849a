// Package harness runs N totem nodes in one test process, each on its own
// embedded nats-server, with every route between two servers going through
// a fault-injecting proxy per directed pair (bus/faultproxy). Tests kill and
// restart nodes, partition and heal the cluster, delay and cut routes, and
// a Recorder keeps everything each node delivered for the Checker.
package harness

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/faultproxy"
	"github.com/corobus/corobus/bus/totem"
)

// Options shape a harness cluster.
type Options struct {
	N int
	// Token, Join and Consensus are the totem timeouts (short in tests).
	Token, Join, Consensus time.Duration
	// HandoffRun is totem.Config.HandoffRun (zero: the default).
	HandoffRun int
	// ConfigVersions are nodes' totem.config_version by id, read at each
	// start (0 when absent).
	ConfigVersions map[int]uint64
	// Adjust, when set, changes node id's totem configuration at each
	// start (after everything above is applied).
	Adjust func(id int, cfg *totem.Config)
	// Name is the cluster and subject-prefix name; unique per cluster.
	Name   string
	Logger *slog.Logger
}

// Cluster is N nodes with proxied routes.
type Cluster struct {
	t        testing.TB
	opts     Options
	Subjects bus.Subjects
	ports    []int
	dirs     []string              // per node, kept across restarts (ringid_<node>)
	proxies  [][]*faultproxy.Proxy // proxies[i][j]: node i dials node j
	Rec      *Recorder

	mu    sync.Mutex
	nodes []*Node
}

// Node is one running node: its server and its totem.
type Node struct {
	ID     uint32
	Server *server.Server
	Conn   *nats.Conn
	Totem  *totem.Node
	Stream int // the Recorder stream of this incarnation
	cancel context.CancelFunc
	done   chan struct{}
}

// New starts the cluster (every node up) and stops it at the end of t.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "h" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.ConfigVersions = maps.Clone(opts.ConfigVersions) // SetConfigVersion writes it
	if opts.ConfigVersions == nil {
		opts.ConfigVersions = map[int]uint64{}
	}
	subj, err := bus.NewSubjects("corobus." + opts.Name)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opts: opts, Subjects: subj, Rec: NewRecorder(), nodes: make([]*Node, opts.N)}
	// Below the ephemeral range (bustest.FreePorts): the proxies listen
	// on port 0, in that range, and a proxy given the port a node was
	// just given dialled itself for every connection it accepted — a
	// fresh-clone run saw the harness run out of file descriptors for
	// 25 s while a node waited for its port.
	c.ports = bustest.FreePorts(t, opts.N)
	for range opts.N {
		c.dirs = append(c.dirs, t.TempDir())
	}
	c.proxies = make([][]*faultproxy.Proxy, opts.N)
	for i := range opts.N {
		c.proxies[i] = make([]*faultproxy.Proxy, opts.N)
		for j := range opts.N {
			if i == j {
				continue
			}
			p, err := faultproxy.Start(net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports[j])))
			if err != nil {
				t.Fatal(err)
			}
			c.proxies[i][j] = p
		}
	}
	t.Cleanup(c.close)
	for i := range opts.N {
		c.Start(i + 1)
	}
	return c
}

func (c *Cluster) close() {
	for i := range c.opts.N {
		c.Kill(i + 1)
	}
	for _, row := range c.proxies {
		for _, p := range row {
			if p != nil {
				p.Close()
			}
		}
	}
}

// TotemConfig is the totem configuration of node id.
func (c *Cluster) TotemConfig(id int) totem.Config {
	tc := totem.DefaultConfig(uint32(id), c.Subjects)
	if c.opts.Token > 0 {
		tc.Token = c.opts.Token
	}
	if c.opts.Join > 0 {
		tc.Join = c.opts.Join
	}
	if c.opts.Consensus > 0 {
		tc.Consensus = c.opts.Consensus
	}
	tc.HandoffRun = c.opts.HandoffRun
	tc.Addr = "127.0.0.1"
	for i := 1; i <= c.opts.N; i++ {
		tc.Expected = append(tc.Expected, uint32(i))
	}
	tc.ConfigVersion = c.opts.ConfigVersions[id]
	tc.StateDir = c.dirs[id-1]
	tc.Logger = c.opts.Logger.With("node", id)
	if c.opts.Adjust != nil {
		c.opts.Adjust(id, &tc)
	}
	return tc
}

// Start starts node id (server and totem); a running node is left alone.
func (c *Cluster) Start(id int) *Node {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if nd := c.nodes[id-1]; nd != nil {
		return nd
	}
	opts := &server.Options{
		ServerName: bus.ServerName(uint32(id)),
		Host:       "127.0.0.1",
		Port:       -1,
		NoSigs:     true,
		NoLog:      true,
		Cluster: server.ClusterOpts{
			Name: c.opts.Name,
			Host: "127.0.0.1",
			Port: c.ports[id-1],
			// Gossip must not teach a server the real route address of
			// another: that would go round the proxies. Implicit routes
			// to this address fail.
			Advertise: "127.0.0.1:1",
			PoolSize:  -1,
		},
	}
	for j := range c.opts.N {
		if j == id-1 {
			continue
		}
		u, _ := url.Parse("nats-route://" + c.proxies[id-1][j].Addr())
		opts.Routes = append(opts.Routes, u)
	}
	var ns *server.Server
	for attempt := 0; ; attempt++ {
		var err error
		ns, err = server.NewServer(opts)
		if err != nil {
			c.t.Fatalf("node %d: %v", id, err)
		}
		go ns.Start()
		if ns.ReadyForConnections(5 * time.Second) {
			break
		}
		ns.Shutdown()
		if attempt == 4 {
			c.t.Fatalf("node %d: server not ready", id)
		}
		// The route port was taken after freePorts released it (other
		// clusters run in parallel): move to another and retarget the
		// proxies that lead here.
		c.ports[id-1] = bustest.FreePorts(c.t, 1)[0]
		opts.Cluster.Port = c.ports[id-1]
		for i := range c.opts.N {
			if p := c.proxies[i][id-1]; p != nil {
				p.SetTarget(net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports[id-1])))
			}
		}
	}
	// As bus.StartServer does: the node forgets a dead client's listen
	// registration on its server's disconnect events.
	if err := bus.ShareDisconnects(ns); err != nil {
		c.t.Fatalf("node %d: %v", id, err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoEcho(), nats.Name("totem"))
	if err != nil {
		c.t.Fatalf("node %d: %v", id, err)
	}
	nd := &Node{ID: uint32(id), Server: ns, Conn: nc, done: make(chan struct{})}
	nd.Stream = c.Rec.NewStream(uint32(id))
	rec := c.Rec
	stream := nd.Stream
	tn, err := totem.New(nc, c.TotemConfig(id), totem.Callbacks{
		Deliver: func(m *totem.Message) { rec.Deliver(stream, m) },
		ConfChg: func(cc totem.ConfChg) { rec.ConfChg(stream, cc) },
	})
	if err != nil {
		c.t.Fatalf("node %d: %v", id, err)
	}
	nd.Totem = tn
	ctx, cancel := context.WithCancel(context.Background())
	nd.cancel = cancel
	go func() {
		defer close(nd.done)
		if err := tn.Run(ctx); err != nil {
			c.opts.Logger.Error("totem run", "node", id, "err", err)
		}
	}()
	c.nodes[id-1] = nd
	return nd
}

// Kill stops node id abruptly: its totem and its server.
func (c *Cluster) Kill(id int) {
	c.mu.Lock()
	nd := c.nodes[id-1]
	c.nodes[id-1] = nil
	c.mu.Unlock()
	if nd == nil {
		return
	}
	nd.cancel()
	<-nd.done
	nd.Conn.Close()
	nd.Server.Shutdown()
	nd.Server.WaitForShutdown()
	c.Rec.Kill(nd.Stream)
}

// SetConfigVersion sets node id's totem.config_version for its next
// start.
func (c *Cluster) SetConfigVersion(id int, v uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.ConfigVersions[id] = v
}

// Node is node id, nil when it is down.
func (c *Cluster) Node(id int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id-1]
}

// Up lists the running node ids.
func (c *Cluster) Up() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, nd := range c.nodes {
		if nd != nil {
			out = append(out, i+1)
		}
	}
	return out
}

// Partition splits the nodes into groups: routes between groups are paused,
// routes inside a group flow. Nodes in no group are cut off from all.
func (c *Cluster) Partition(groups ...[]int) {
	group := make([]int, c.opts.N)
	for i := range group {
		group[i] = -1 - i
	}
	for g, ids := range groups {
		for _, id := range ids {
			group[id-1] = g
		}
	}
	for i := range c.opts.N {
		for j := range c.opts.N {
			if i == j {
				continue
			}
			if group[i] == group[j] {
				c.proxies[i][j].Resume()
			} else {
				c.proxies[i][j].Pause()
			}
		}
	}
}

// Heal resumes every route and removes every delay.
func (c *Cluster) Heal() {
	for i := range c.opts.N {
		for j := range c.opts.N {
			if i != j {
				c.proxies[i][j].SetDelay(0)
				c.proxies[i][j].Resume()
			}
		}
	}
}

// Delay delays the route between a and b (both directions) by d.
func (c *Cluster) Delay(a, b int, d time.Duration) {
	c.proxies[a-1][b-1].SetDelay(d)
	c.proxies[b-1][a-1].SetDelay(d)
}

// Block stops the route between a and b (both directions) and nothing
// else: a mesh with one link down, where a and b each still reach the
// others. Heal resumes it.
func (c *Cluster) Block(a, b int) {
	c.proxies[a-1][b-1].Pause()
	c.proxies[b-1][a-1].Pause()
}

// Cut breaks the route between a and b: bytes in flight are lost and the
// servers reconnect.
func (c *Cluster) Cut(a, b int) {
	c.proxies[a-1][b-1].Cut()
	c.proxies[b-1][a-1].Cut()
}

// Client opens a plain client connection to node id (an observer).
func (c *Cluster) Client(id int) *nats.Conn {
	c.t.Helper()
	nd := c.Node(id)
	if nd == nil {
		c.t.Fatalf("node %d is down", id)
	}
	nc, err := nats.Connect("", nats.InProcessServer(nd.Server))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// ViewOf reports whether the given nodes are all operational in one ring
// whose members are exactly ids; it returns that ring.
func (c *Cluster) ViewOf(ids []int) (totem.RingID, error) {
	want := make([]uint32, len(ids))
	for i, id := range ids {
		want[i] = uint32(id)
	}
	slices.Sort(want)
	var ring totem.RingID
	for k, id := range ids {
		nd := c.Node(id)
		if nd == nil {
			return ring, fmt.Errorf("node %d is down", id)
		}
		st := nd.Totem.Status()
		if st.State != "operational" || !slices.Equal(st.Members, want) {
			return ring, fmt.Errorf("node %d: %s in ring %s with %v, want %v", id, st.State, st.Ring, st.Members, want)
		}
		if k == 0 {
			ring = st.Ring
		} else if st.Ring != ring {
			return ring, fmt.Errorf("node %d in ring %s, node %d in %s", id, st.Ring, ids[0], ring)
		}
	}
	return ring, nil
}

// WaitView polls until ViewOf(ids) holds, or fails the test at the
// deadline.
func (c *Cluster) WaitView(ids []int, timeout time.Duration) totem.RingID {
	c.t.Helper()
	ring, err := c.PollView(ids, timeout)
	if err != nil {
		c.t.Fatalf("no view %v after %s: %v", ids, timeout, err)
	}
	return ring
}

// PollView polls until ViewOf(ids) holds or the timeout passes.
func (c *Cluster) PollView(ids []int, timeout time.Duration) (totem.RingID, error) {
	deadline := time.Now().Add(timeout)
	for {
		ring, err := c.ViewOf(ids)
		if err == nil {
			return ring, nil
		}
		if time.Now().After(deadline) {
			return ring, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
