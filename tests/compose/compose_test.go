// Package compose tests the docker compose deployment of deploy/compose on
// the local docker engine: it builds the static binary and a FROM scratch
// image of its own, starts the three-node cluster under a project name of
// its own, checks that the buses form one cluster with a JetStream meta
// leader (from inside a container and from the host through a published
// port) over routes protected by a cluster key made with corobus keygen, that an extra layer service scales on its own, and that stopping
// node3 is seen by nodes 1 and 2. Everything it made is removed at the end,
// pass or fail.
//
// It skips, saying why, under -short or where docker or compose is missing.
package compose

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// confInContainer is where docker-compose.yml mounts deploy/compose/corosync.conf.
const confInContainer = "/etc/corosync/corosync.conf"

// extraObjdb is deploy.replicas of the objdb service in docker-compose.yml.
const extraObjdb = 2

func TestComposeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the docker compose deployment test in -short mode")
	}
	compose := findCompose(t)

	root := repoRoot()
	composeFile := filepath.Join(root, "deploy", "compose", "docker-compose.yml")
	suffix := randomHex(t, 4)
	project := "corobustest" + suffix
	image := "corobus-composetest:" + suffix
	token := randomHex(t, 24)

	// Every step below runs inside one budget that ends well before go
	// test's own -timeout, which would panic past the cleanups and leave
	// containers behind.
	deadline := time.Now().Add(8 * time.Minute)
	if d, ok := t.Deadline(); ok && d.Add(-2*time.Minute).Before(deadline) {
		deadline = d.Add(-2 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	dc := &cluster{
		t:       t,
		ctx:     ctx,
		compose: compose,
		args:    []string{"-f", composeFile, "-p", project},
		env: append(os.Environ(),
			"CORO_IMAGE="+image,
			"CORO_TOKEN="+token,
			// Empty: docker picks free host ports, so that the test never
			// meets a cluster a user runs on the default ports.
			"CORO_NODE1_PORT=", "CORO_NODE2_PORT=", "CORO_NODE3_PORT=",
		),
	}
	// Registered before anything exists, so that a failure half-way still
	// removes whatever was made. Cleanups run last-in first-out: the
	// project goes first, then the image it used.
	t.Cleanup(func() {
		if _, err := dockerCmd(context.Background(), time.Minute, nil, "docker", "rmi", "-f", image); err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Logf("removing image %s: %v", image, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() && dc.started {
			out, _ := dockerCmd(context.Background(), time.Minute, dc.env, dc.compose[0], dc.argv("logs", "--no-color", "--tail=60")...)
			t.Logf("compose logs (last lines per container):\n%s", out)
		}
		if out, err := dockerCmd(context.Background(), 2*time.Minute, dc.env, dc.compose[0], dc.argv("down", "-v", "--remove-orphans", "--timeout", "10")...); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})

	dc.buildDir = buildImage(ctx, t, root, image)
	// The cluster key, made as task compose:up makes it (corobus keygen),
	// outside the checkout: the nodes' routes run TLS derived from it.
	authkey := filepath.Join(t.TempDir(), "authkey")
	if out, err := dockerCmd(ctx, time.Minute, nil, filepath.Join(dc.buildDir, "corobus"), "keygen", "-k", authkey); err != nil {
		t.Fatalf("corobus keygen: %v\n%s", err, out)
	}
	dc.env = append(dc.env, "CORO_AUTHKEY="+authkey)
	t.Logf("built image %s; starting project %s with %s", image, project, strings.Join(compose, " "))

	start := time.Now()
	dc.started = true
	// up returns once node1 is healthy: the objdb service waits for it.
	if out, err := dc.run(4*time.Minute, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	// 1. Three buses, routed to each other, with a JetStream meta leader
	//    and every meta peer online.
	all := []uint32{1, 2, 3}
	for _, id := range all {
		st := dc.eventually(id, 2*time.Minute, "a formed three-node cluster", func(st nodeStatus) error {
			return formed(st, all)
		})
		t.Logf("node%d: %s", id, st.summary())
	}
	t.Logf("cluster formed %s after compose up was called", time.Since(start).Round(time.Second))
	// Every node's routes are protected by the mounted key, none plain.
	for _, id := range all {
		dc.routesProtected(id)
	}

	// 2. From the host, through node1's client port published on 127.0.0.1.
	hostPort := dc.publishedPort("node1", "5400")
	if !strings.HasPrefix(hostPort, "127.0.0.1:") {
		t.Fatalf("node1's client port is published on %s, want 127.0.0.1 only", hostPort)
	}
	bin := filepath.Join(dc.buildDir, "corobus")
	out, err := dockerCmd(ctx, 30*time.Second, nil, bin, "status", "--json",
		"-o", "totem.cluster_name=compose", "--node", "1",
		"--bus", "nats://"+token+"@"+hostPort)
	if err != nil {
		t.Fatalf("status from the host through %s: %v\n%s", hostPort, err, out)
	}
	var hst nodeStatus
	if err := json.Unmarshal([]byte(out), &hst); err != nil {
		t.Fatalf("decoding the host's status of node1: %v\n%s", err, out)
	}
	if err := formed(hst, all); err != nil {
		t.Fatalf("status from the host through %s: %v", hostPort, err)
	}
	t.Logf("from the host via %s: %s", hostPort, hst.summary())

	// 3. One layer scales on its own: node1 runs its own objdb (under
	//    `corobus up`) plus the objdb service's replicas; node2 only its own.
	//    objdb announces itself once its replicated bucket is up, a few
	//    seconds after the cluster forms.
	own := dc.eventually(2, time.Minute, "objdb of its own (started by corobus up)", func(st nodeStatus) error {
		if st.count("objdb") == 0 {
			return errors.New("no objdb instance")
		}
		return nil
	}).count("objdb")
	dc.eventually(1, time.Minute, fmt.Sprintf("%d objdb instances", own+extraObjdb), func(st nodeStatus) error {
		if n := st.count("objdb"); n != own+extraObjdb {
			return fmt.Errorf("%d objdb instances", n)
		}
		return nil
	})
	if out, err := dc.run(2*time.Minute, "up", "-d", "--no-build", "--no-recreate", "--scale", "objdb=3"); err != nil {
		t.Fatalf("compose up --scale objdb=3: %v\n%s", err, out)
	}
	st := dc.eventually(1, time.Minute, fmt.Sprintf("%d objdb instances", own+3), func(st nodeStatus) error {
		if n := st.count("objdb"); n != own+3 {
			return fmt.Errorf("%d objdb instances", n)
		}
		return nil
	})
	t.Logf("scaled objdb to 3 extra instances: node1 layers %s", st.layers())

	// 4. Node 3 stops: nodes 1 and 2 lose its route, see its JetStream
	//    peer offline, keep a meta leader between them, and (where the
	//    status carries totem's ring) install a ring without it.
	if out, err := dc.run(2*time.Minute, "stop", "--timeout", "10", "node3"); err != nil {
		t.Fatalf("compose stop node3: %v\n%s", err, out)
	}
	stopped := time.Now()
	for _, id := range []uint32{1, 2} {
		st := dc.eventually(id, 90*time.Second, "node3 gone", func(st nodeStatus) error {
			return lost(st, 3, []uint32{1, 2})
		})
		t.Logf("node%d after node3 stopped: %s", id, st.summary())
	}
	t.Logf("nodes 1 and 2 saw node3 go %s after compose stop was called", time.Since(stopped).Round(time.Second))

	// 5. Node 3 starts again: found again by its name, with its state
	//    volume, it rejoins the cluster.
	if out, err := dc.run(2*time.Minute, "start", "node3"); err != nil {
		t.Fatalf("compose start node3: %v\n%s", err, out)
	}
	for _, id := range all {
		st := dc.eventually(id, 2*time.Minute, "node3 back in the cluster", func(st nodeStatus) error {
			return formed(st, all)
		})
		t.Logf("node%d after node3 started again: %s", id, st.summary())
	}

	// 6. Node 3 is killed (SIGKILL, no goodbye): nodes 1 and 2 lose its
	//    route, keep or elect a meta leader between them and (with totem's
	//    ring in the status) install a ring without it. Whether a node's
	//    JetStream view calls the killed peer offline is not asserted: with
	//    no shutdown notice from it, nats-server's meta leader was seen to
	//    keep reporting it current for the 90 s waited while a follower said
	//    offline. The summary logged shows what each node says.
	if out, err := dc.run(time.Minute, "kill", "node3"); err != nil {
		t.Fatalf("compose kill node3: %v\n%s", err, out)
	}
	killed := time.Now()
	for _, id := range []uint32{1, 2} {
		st := dc.eventually(id, 90*time.Second, "a cluster of nodes 1 and 2", func(st nodeStatus) error {
			return formed(st, []uint32{1, 2})
		})
		t.Logf("node%d after node3 was killed: %s", id, st.summary())
	}
	t.Logf("nodes 1 and 2 saw node3 killed %s after compose kill was called", time.Since(killed).Round(time.Second))
}

// nodeStatus is what `corobus status --json` prints, as far as the test
// reads it.
type nodeStatus struct {
	Node uint32 `json:"node"`
	Bus  struct {
		Server     string `json:"server"`
		JetStream  bool   `json:"jetstream"`
		MetaLeader string `json:"meta_leader"`
		Routes     []struct {
			Server string `json:"server"`
			Addr   string `json:"addr"`
		} `json:"routes"`
		Peers []struct {
			Server  string `json:"server"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"peers"`
	} `json:"bus"`
	// Totem is absent while the status does not carry the ring.
	Totem *struct {
		State   string   `json:"state"`
		Members []uint32 `json:"members"`
	} `json:"totem"`
	Layers []struct {
		Layer string `json:"layer"`
	} `json:"layers"`
}

func (s nodeStatus) routes() []string {
	var out []string
	for _, r := range s.Bus.Routes {
		out = append(out, r.Server)
	}
	slices.Sort(out)
	return out
}

func (s nodeStatus) peers() []string {
	var out []string
	for _, p := range s.Bus.Peers {
		state := "current"
		if p.Offline {
			state = "offline"
		} else if !p.Current {
			state = "behind"
		}
		out = append(out, p.Server+" "+state)
	}
	return out
}

func (s nodeStatus) count(layer string) int {
	n := 0
	for _, l := range s.Layers {
		if l.Layer == layer {
			n++
		}
	}
	return n
}

func (s nodeStatus) layers() string {
	var out []string
	for _, l := range s.Layers {
		out = append(out, l.Layer)
	}
	return strings.Join(out, " ")
}

func (s nodeStatus) summary() string {
	ring := "totem: not in status"
	if s.Totem != nil {
		ring = fmt.Sprintf("totem: %s members %v", s.Totem.State, s.Totem.Members)
	}
	return fmt.Sprintf("server %s, JetStream %v, meta leader %q, routes %v, JS peers %v, %s, layers [%s]",
		s.Bus.Server, s.Bus.JetStream, s.Bus.MetaLeader, s.routes(), s.peers(), ring, s.layers())
}

func serverNames(ids []uint32) []string {
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprintf("node%d", id))
	}
	return out
}

// formed: JetStream on, routes to every other member, a meta leader among
// the members, every member's meta peer online.
func formed(st nodeStatus, members []uint32) error {
	if !st.Bus.JetStream {
		return errors.New("JetStream off")
	}
	var others []string
	for _, n := range serverNames(members) {
		if n != st.Bus.Server {
			others = append(others, n)
		}
	}
	if got := st.routes(); !slices.Equal(got, others) {
		return fmt.Errorf("routes to %v, want %v", got, others)
	}
	if !slices.Contains(serverNames(members), st.Bus.MetaLeader) {
		return fmt.Errorf("meta leader %q, want one of %v", st.Bus.MetaLeader, serverNames(members))
	}
	for _, n := range serverNames(members) {
		found := false
		for _, p := range st.Bus.Peers {
			if p.Server == n {
				found = true
				if p.Offline {
					return fmt.Errorf("JetStream peer %s offline", n)
				}
			}
		}
		if !found {
			return fmt.Errorf("JetStream peers %v lack %s", st.peers(), n)
		}
	}
	if st.Totem != nil && !slices.Equal(st.Totem.Members, members) {
		return fmt.Errorf("totem members %v, want %v", st.Totem.Members, members)
	}
	return nil
}

// lost: the survivors still form a cluster, without a route to gone, and
// gone's JetStream peer is offline (or no longer listed).
func lost(st nodeStatus, gone uint32, survivors []uint32) error {
	if err := formed(st, survivors); err != nil {
		return err
	}
	name := fmt.Sprintf("node%d", gone)
	for _, p := range st.Bus.Peers {
		if p.Server == name && !p.Offline {
			return fmt.Errorf("JetStream peer %s still online", name)
		}
	}
	return nil
}

// cluster is one compose project.
type cluster struct {
	t        *testing.T
	ctx      context.Context // the test's budget
	compose  []string        // "docker compose" or "docker-compose"
	args     []string        // -f FILE -p PROJECT
	env      []string
	buildDir string
	started  bool // compose up was called
}

func (c *cluster) run(timeout time.Duration, args ...string) (string, error) {
	return dockerCmd(c.ctx, timeout, c.env, c.compose[0], c.argv(args...)...)
}

// argv is the compose command line after its first word.
func (c *cluster) argv(args ...string) []string {
	argv := append(slices.Clone(c.compose[1:]), c.args...)
	return append(argv, args...)
}

// container is the id of a service's (first) container.
func (c *cluster) container(service string) (string, error) {
	out, err := c.run(30*time.Second, "ps", "-q", service)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if id == "" {
		return "", fmt.Errorf("no container for service %s", service)
	}
	return id, nil
}

// fetch runs `corobus status --json` inside node<id>'s container: the
// image has no shell, so the binary is exec'd directly, and the
// container's environment (totem.nodeid, the token) tells it which node it
// is on.
func (c *cluster) fetch(id uint32) (nodeStatus, error) {
	ctr, err := c.container(fmt.Sprintf("node%d", id))
	if err != nil {
		return nodeStatus{}, err
	}
	out, err := dockerCmd(c.ctx, 30*time.Second, nil, "docker", "exec", ctr, "/corobus", "status", "--json", "-c", confInContainer)
	if err != nil {
		return nodeStatus{}, err
	}
	var st nodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nodeStatus{}, fmt.Errorf("decoding node%d's status: %w\n%s", id, err, out)
	}
	return st, nil
}

// eventually polls node<id>'s status until check accepts it, or fails the
// test with the last status and error at the deadline.
func (c *cluster) eventually(id uint32, within time.Duration, what string, check func(nodeStatus) error) nodeStatus {
	c.t.Helper()
	deadline := time.Now().Add(within)
	if d, ok := c.ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		st, err := c.fetch(id)
		if err == nil {
			err = check(st)
		}
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node%d: no %s within %s: %v\nlast status: %s", id, what, within, err, st.summary())
		}
		time.Sleep(time.Second) // poll interval, under the deadline above
	}
}

// routesProtected fails the test unless node<id> logged that its routes
// run TLS derived from the key mounted at /etc/corosync/authkey (and never
// that they are plain).
func (c *cluster) routesProtected(id uint32) {
	c.t.Helper()
	node := fmt.Sprintf("node%d", id)
	out, err := c.run(30*time.Second, "logs", "--no-color", node)
	if err != nil {
		c.t.Fatalf("compose logs %s: %v", node, err)
	}
	var prot string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "neither authenticated nor encrypted") {
			c.t.Fatalf("%s runs plain routes: %s", node, l)
		}
		if strings.Contains(l, "routes protected") {
			prot = l
		}
	}
	if !strings.Contains(prot, "derived from the cluster key") || !strings.Contains(prot, "/etc/corosync/authkey") {
		c.t.Fatalf("%s did not log routes protected by the mounted key; its log:\n%s", node, out)
	}
	c.t.Logf("%s: %s", node, strings.TrimSpace(prot[strings.Index(prot, "routes protected"):]))
}

// publishedPort is host:port of a service's published container port.
func (c *cluster) publishedPort(service, port string) string {
	c.t.Helper()
	out, err := c.run(30*time.Second, "port", service, port)
	if err != nil {
		c.t.Fatalf("compose port %s %s: %v\n%s", service, port, err, out)
	}
	hp := strings.TrimSpace(out)
	if hp == "" || strings.HasSuffix(hp, ":0") {
		c.t.Fatalf("compose port %s %s: %q is not a published port", service, port, hp)
	}
	return hp
}

// buildImage builds the static binary into a fresh build context with
// deploy/compose's Dockerfile and builds the image from it.
func buildImage(ctx context.Context, t *testing.T, root, image string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	// No -trimpath, which `task static` and the Dockerfile's comment use:
	// it changes the build of every package, so the image's binary would
	// share nothing with what `go test ./...` has just compiled. Without
	// it only the packages that CGO_ENABLED=0 changes (net's dependents)
	// are compiled again: 50 of 302, 73 → 41 s on a 2-vCPU machine with
	// the rest cached, and it was 200 s of a loaded CI run. The binary
	// behaves the same; only the source paths it records differ.
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", filepath.Join(dir, "corobus"), "./cmd/corobus")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the static binary: %v\n%s", err, out)
	}
	for _, name := range []string{"Dockerfile", ".dockerignore"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "compose", name))
		if err != nil {
			t.Fatalf("reading the image's %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatalf("writing the build context: %v", err)
		}
	}
	if out, err := dockerCmd(ctx, 3*time.Minute, nil, "docker", "build", "-q", "-t", image, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	return dir
}

// findCompose skips the test unless a docker engine answers and a compose
// is installed: `docker compose` (the plugin) preferred, else docker-compose.
func findCompose(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("skipping the docker compose deployment test: no docker command on PATH")
	}
	if out, err := dockerCmd(context.Background(), 30*time.Second, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("skipping the docker compose deployment test: the docker engine does not answer: %v\n%s", err, out)
	}
	if _, err := dockerCmd(context.Background(), 30*time.Second, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		if _, err := dockerCmd(context.Background(), 30*time.Second, nil, "docker-compose", "version"); err == nil {
			return []string{"docker-compose"}
		}
	}
	t.Skip("skipping the docker compose deployment test: neither `docker compose` nor docker-compose works")
	return nil
}

// dockerCmd runs a command within timeout (and within ctx) and returns its
// stdout; a failure's error carries its stderr.
func dockerCmd(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env // nil: the test's own environment
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %s)", ctx.Err(), timeout)
		}
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

func repoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..")
}
