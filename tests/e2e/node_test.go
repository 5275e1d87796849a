package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
)

// TestEmbeddedDefaultUpStatusStop: `corobus up` with no file, `corobus
// status` finds it, SIGTERM exits 0 and leaves no child process.
func TestEmbeddedDefaultUpStatusStop(t *testing.T) {
	b := ownNetwork(t, buildBinary(t))
	port := freePort(t)
	// The embedded default's state lives under XDG_STATE_HOME; its client
	// port is moved so that the test does not meet a node a user runs.
	env := []string{"XDG_STATE_HOME=" + t.TempDir(), "COROBUS_NODELIST__NODE__0__CLIENT_PORT=" + strconv.Itoa(port)}
	start := time.Now()
	p := b.up(t, env)
	var st nodeStatus
	eventually(t, 20*time.Second, "status reports the node", func() (err error) {
		if err := checkAlive(p); err != nil {
			return err
		}
		st, err = b.status(t, env)
		if err == nil && !st.Bus.JetStream {
			err = errors.New("JetStream off")
		}
		return err
	})
	t.Logf("status answered %s after start", time.Since(start).Round(time.Millisecond))
	if st.Node != 1 || st.Bus.MetaLeader != "node1" {
		t.Errorf("status = node %d, meta leader %q; want node 1 led by node1", st.Node, st.Bus.MetaLeader)
	}

	// Every layer of the node is up and listed, its service processes
	// among them (docs/subjects.md, $SRV); cmap and cpg run in the
	// gateway by default (ipc.colocate), whose process is ipc.
	eventually(t, 20*time.Second, "status lists the layers", func() error {
		st, err := b.status(t, env)
		if err != nil {
			return err
		}
		for _, want := range []string{"bus", "objdb", "ipc", "cfg", "quorum", "votequorum"} {
			found := false
			for _, l := range st.Layers {
				found = found || l.Layer == want
			}
			if !found {
				return fmt.Errorf("layer %s not listed: %+v", want, st.Layers)
			}
		}
		return nil
	})

	// The walk: set totem.token through cmap and read it back.
	if out, err := b.run(t, env, "cmap", "-s", "totem.token", "u32", "5000"); err != nil {
		t.Fatalf("cmap -s: %v\n%s", err, out)
	}
	out, err := b.run(t, env, "cmap", "-g", "totem.token")
	if err != nil || out != "totem.token (u32) = 5000\n" {
		t.Errorf("cmap -g totem.token = %q, %v", out, err)
	}
	if _, err := b.run(t, env, "cmap", "-s", "nodelist.node.0.nodeid", "u32", "9"); err == nil || !strings.Contains(err.Error(), "CS_ERR_ACCESS") {
		t.Errorf("setting a read-only key: %v, want CS_ERR_ACCESS", err)
	}
	cmapctlStatusesAndFlags(t, b, env)

	kids := descendants(p.cmd.Process.Pid)
	if len(kids) == 0 {
		t.Fatal("corobus up has no child process: the bus should run in its own")
	}
	if err := p.stop(t); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("corobus up exited %d after SIGTERM, want 0\n%s", ee.ExitCode(), p.out.String())
		}
		t.Fatal(err)
	}
	for _, k := range kids {
		if alive(k) {
			t.Errorf("child %d still running after corobus up exited", k)
		}
	}
}

// cmapctlStatusesAndFlags checks what scripts written for corosync-cmapctl
// rely on: a listing that finds nothing exits 1, silently (one prefix with
// keys among several is enough for 0); -m default is the icmap; -C resets
// statistics.
func cmapctlStatusesAndFlags(t *testing.T, b binary, env []string) {
	t.Helper()
	for _, tc := range []struct {
		args   []string
		status int
		out    string // a line the output has ("" for none at all)
	}{
		{[]string{"cmap", "nosuch."}, 1, ""},
		{[]string{"cmap", "-q", "nosuch."}, 1, ""},
		{[]string{"cmap", "-m", "stats", "nosuch."}, 1, ""},
		{[]string{"cmap", "nosuch.", "totem.token"}, 0, "totem.token (u32) = 5000"},
		{[]string{"cmap", "-m", "default", "totem.token"}, 0, "totem.token (u32) = 5000"},
		{[]string{"cmap", "-C", "all"}, 0, ""},
		{[]string{"cmap", "-C", "totem"}, 0, ""},
	} {
		out, err := b.run(t, env, tc.args...)
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Errorf("corobus %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if status != tc.status || (tc.out == "" && out != "") || !strings.Contains(out, tc.out) {
			t.Errorf("corobus %s: status %d, output %q (%v); want %d and %q", strings.Join(tc.args, " "), status, out, err, tc.status, tc.out)
		}
	}
}

// TestLocalThreeNodeCluster starts the three nodes of deploy/local, sees one
// NATS cluster with a JetStream meta leader, stops one, and sees the others
// report it gone.
func TestLocalThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three real nodes: skipped in -short")
	}
	// deploy/local's fixed ports: in a network namespace of the test's
	// own, where it can, they meet no other test's or user's node.
	b := ownNetwork(t, buildBinary(t))
	// deploy/local runs with crypto on: the nodes share a key made by
	// corobus keygen, as cluster.sh makes one.
	key := filepath.Join(t.TempDir(), "authkey")
	if out, err := b.run(t, nil, "keygen", "-k", key); err != nil {
		t.Fatalf("corobus keygen: %v\n%s", err, out)
	}
	var args [3][]string
	var procs [3]*upProcess
	for i := range 3 {
		// Each node keeps its state (and its client token) in a fresh
		// directory; client verbs get the same flags to find both.
		args[i] = []string{"-c", repoFile("deploy", "local", fmt.Sprintf("node%d.conf", i+1)), "-o", "system.state_dir=" + t.TempDir(), "-o", "totem.keyfile=" + key}
		procs[i] = b.up(t, nil, args[i]...)
	}
	eventually(t, 60*time.Second, "three nodes form one cluster", func() error {
		if err := checkAlive(procs[:]...); err != nil {
			return err
		}
		for i := range 3 {
			st, err := b.status(t, nil, args[i]...)
			if err != nil {
				return err
			}
			if len(st.Bus.Routes) != 2 {
				return fmt.Errorf("node %d has %d routes, want 2", i+1, len(st.Bus.Routes))
			}
			if st.Bus.MetaLeader == "" {
				return fmt.Errorf("node %d sees no JetStream meta leader", i+1)
			}
			if st.Totem == nil || len(st.Totem.Members) != 3 {
				return fmt.Errorf("node %d: totem members %+v, want 1 2 3", i+1, st.Totem)
			}
		}
		return nil
	})

	if err := procs[2].stop(t); err != nil {
		t.Fatalf("stopping node 3: %v", err)
	}
	eventually(t, 30*time.Second, "nodes 1 and 2 report node 3 gone", func() error {
		if err := checkAlive(procs[:2]...); err != nil {
			return err
		}
		for i := range 2 {
			st, err := b.status(t, nil, args[i]...)
			if err != nil {
				return err
			}
			for _, r := range st.Bus.Routes {
				if r.Server == "node3" {
					return fmt.Errorf("node %d still has a route to node3", i+1)
				}
			}
			gone := false
			for _, p := range st.Bus.Peers {
				if p.Server == "node3" && p.Offline {
					gone = true
				}
			}
			if !gone {
				return fmt.Errorf("node %d does not report node3 offline: %+v", i+1, st.Bus.Peers)
			}
			if st.Totem == nil || len(st.Totem.Members) != 2 {
				return fmt.Errorf("node %d: totem members %+v, want 1 2", i+1, st.Totem)
			}
		}
		return nil
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	return bustest.FreePorts(t, 1)[0]
}

// TestTypoInConfigStartsNothing: a mistake in the file is reported with
// file:line and what was expected, and `corobus up` exits without starting
// anything.
func TestTypoInConfigStartsNothing(t *testing.T) {
	b := buildBinary(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "corosync.conf")
	body := "totem {\n\tversion: 2\n\ttokn: 3000\n}\nnodelist {\n\tnode {\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\nsystem {\n\tstate_dir: " + dir + "\n}\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := b.run(t, nil, "up", "-c", conf)
	if err == nil {
		t.Fatalf("corobus up started with a typo in its file:\n%s", out)
	}
	for _, want := range []string{conf + ":3", "unknown key totem.tokn", "totem.token"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if _, statErr := os.Stat(filepath.Join(dir, "jetstream")); statErr == nil {
		t.Errorf("a JetStream store was created: something started")
	}
}

// TestInProcStopsInOrder: `corobus up --inproc` runs every layer in one
// process, and SIGTERM stops them as up's children stop, in reverse order,
// each completely before the next — so the service manager unloads its
// services while objdb and the loader still serve: each service is asked
// to exit and unloaded, its reference released and its keys removed.
func TestInProcStopsInOrder(t *testing.T) {
	b := ownNetwork(t, buildBinary(t))
	port := freePort(t)
	env := []string{"XDG_STATE_HOME=" + t.TempDir(), "COROBUS_NODELIST__NODE__0__CLIENT_PORT=" + strconv.Itoa(port)}
	p := b.up(t, env, "--inproc")
	services := []string{"cfg", "quorum", "votequorum"}
	eventually(t, 60*time.Second, "the node's services serving", func() error {
		if err := checkAlive(p); err != nil {
			return err
		}
		out := p.out.String()
		for _, s := range services {
			if !regexp.MustCompile(`service engine loaded .*service=` + s + `\b`).MatchString(out) {
				return fmt.Errorf("service %s not loaded yet", s)
			}
		}
		return nil
	})
	if err := p.stop(t); err != nil {
		t.Fatalf("corobus up --inproc after SIGTERM: %v\n%s", err, p.out.String())
	}
	out := p.out.String()
	for _, s := range services {
		if !regexp.MustCompile(`service engine unloaded exit_asks=[1-9]\d* service=` + s + `\b`).MatchString(out) {
			t.Errorf("service %s was not asked to exit and unloaded", s)
		}
	}
	for _, bad := range []string{"removing a service's keys", "releasing a service's reference"} {
		if strings.Contains(out, bad) {
			t.Errorf("the stop logged %q: a layer the service manager needs stopped before it", bad)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
