package pacemaker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/tests/netcluster"
)

// variant is an engine and the totem.token of its corosync.conf.
type variant struct {
	name    string
	backend netcluster.Backend
	// token is totem.token; 0 leaves it out of the file (the engine's
	// default: corosync's 3000 ms).
	token time.Duration
}

var variants = []variant{
	{"corobus", netcluster.Corobus, 0},
	{"corobus-token1000", netcluster.Corobus, time.Second},
	{"corosync", netcluster.Corosync, 0},
	{"corosync-token1000", netcluster.Corosync, time.Second},
}

// backendEnv selects the variants TestPacemaker runs: a comma-separated
// list of their names, or "all". Unset, it runs corobus (what CI runs).
const backendEnv = "TEST_PACEMAKER_BACKEND"

// Generous deadlines: the machine may be loaded, and Pacemaker's own
// timers (dc-deadtime 20 s, the join and election rounds) come first.
const (
	ringTimeout   = 3 * time.Minute
	onlineTimeout = 6 * time.Minute
	actionTimeout = 4 * time.Minute
	stopTimeout   = 6 * time.Minute
)

// TestPacemaker runs Debian's Pacemaker, unmodified, on three nodes and
// fails a resource over: cold start until every node shows three nodes
// online and one DC; stonith-enabled=false and one ocf:pacemaker:Dummy
// per node; a node killed whole (its resource started on a survivor) and
// restarted (it rejoins, its resource comes back); a clean shutdown
// (corosync-cfgtool -H refused while Pacemaker runs, accepted once it
// stopped); a partition of one node (its side loses quorum and stops its
// resource; the other side keeps its own and takes that one over). The
// engine is chosen by TEST_PACEMAKER_BACKEND (default corobus; the
// corosync variants are the reference, same code).
func TestPacemaker(t *testing.T) {
	sel := os.Getenv(backendEnv)
	if sel == "" {
		sel = "corobus"
	}
	var chosen []variant
	for _, name := range strings.Split(sel, ",") {
		name = strings.TrimSpace(name)
		if name == "all" {
			chosen = append(chosen, variants...)
			continue
		}
		i := slices.IndexFunc(variants, func(v variant) bool { return v.name == name })
		if i < 0 {
			var names []string
			for _, v := range variants {
				names = append(names, v.name)
			}
			t.Fatalf("%s=%q: unknown variant %q (one or more of %s, or all)", backendEnv, sel, name, strings.Join(names, ", "))
		}
		chosen = append(chosen, variants[i])
	}
	for _, v := range chosen {
		t.Run(v.name, func(t *testing.T) { exercise(t, v) })
	}
}

// timings are what the test measures, for the comparison in
// docs/pacemaker.md (logged, never asserted).
type timings struct {
	ring, online                  time.Duration // cold start → engines' ring; → every crm_mon: 3 online, one DC
	killOffline, killFailover     time.Duration // kill → survivors show it offline; → its resource started on a survivor
	rejoin                        time.Duration // restart → it shows online on every node
	engineKillOffline             time.Duration // the engine alone killed → the others show the node offline
	engineRejoin                  time.Duration // the engine restarted under pacemakerd → 3 online
	shutdownFailover, cfgShutdown time.Duration // pacemaker stop → resource elsewhere; cfgtool -H → engine gone
	partitionQuorumLost           time.Duration // partition → the lone node shows no quorum and has stopped its resource
	partitionFailover, heal       time.Duration // partition → its resource started on the majority; heal → one cluster
}

func exercise(t *testing.T, v variant) {
	requirePacemaker(t)
	netcluster.RequireBackend(t, v.backend)
	opts := netcluster.Options{
		Nodes:        3,
		Backend:      v.backend,
		MountNS:      true, // a machine of its own: /run/crm, /var/lib/pacemaker, /dev/shm …
		NoStart:      true,
		ReadyTimeout: ringTimeout,
		StopTimeout:  2 * time.Minute,
	}
	// Each engine is told where systemd's notification socket is, as
	// corosync.service (Type=notify) tells it.
	notify := newNotifier(t)
	opts.Env = []string{"NOTIFY_SOCKET=" + notify.Path}
	if v.token == 0 {
		opts.Keys = map[string]string{"totem.token": ""}
	} else {
		opts.Token = v.token
	}
	nc := netcluster.Start(t, opts)
	pc := &pcmkCluster{t: t, nc: nc, notify: notify, pcmk: map[uint32]*pacemakerd{}}
	// Registered after netcluster's: runs first, while the logs exist.
	t.Cleanup(pc.keepLogs)
	var tm timings
	all := nc.Nodes

	// Cold start: the engines, then Pacemaker on each once its engine is
	// in the ring (systemd starts pacemaker after corosync is ready).
	t0 := time.Now()
	for _, n := range all {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	pc.waitReady()
	tm.ring = time.Since(t0)
	for _, n := range all {
		pc.startPacemaker(n)
	}
	pc.eventually(onlineTimeout, "cold start: crm_mon on every node shows 3 nodes online and one DC", func() error {
		_, err := pc.converged(all)
		return err
	})
	tm.online = time.Since(t0)
	t.Logf("%s: cold start → engines ready %s, → crm_mon on every node: 3 online, one DC, quorum %s", v.name, round(tm.ring), round(tm.online))

	// Configuration: no fencing device here, so no fencing; one Dummy
	// per node, each preferring its node.
	n1 := nc.Node(1)
	if _, err := pc.run(n1, "crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update", "false"); err != nil {
		pc.fatalf("%v", err)
	}
	for _, n := range all {
		rsc := rscOf(n)
		prim := fmt.Sprintf(`<primitive id=%q class="ocf" provider="pacemaker" type="Dummy"><operations><op id="%s-monitor-30s" name="monitor" interval="30s"/></operations></primitive>`, rsc, rsc)
		if _, err := pc.run(n1, "cibadmin", "--create", "--scope", "resources", "--xml-text", prim); err != nil {
			pc.fatalf("%v", err)
		}
		loc := fmt.Sprintf(`<rsc_location id="%s-prefers-%s" rsc=%q node=%q score="100"/>`, rsc, n.Name, rsc, n.Name)
		if _, err := pc.run(n1, "cibadmin", "--create", "--scope", "constraints", "--xml-text", loc); err != nil {
			pc.fatalf("%v", err)
		}
	}
	pc.eventually(actionTimeout, "every Dummy started on its node", func() error {
		return pc.placed(all, all, nil)
	})
	for _, n := range all {
		m, err := pc.mon(n)
		if err != nil {
			pc.fatalf("%v", err)
		}
		if m.Summary.Options.StonithEnabled {
			pc.fatalf("node %d: crm_mon says stonith-enabled is still true", n.ID)
		}
	}

	// A node killed whole: its resource is started on a survivor.
	k := pc.nonDC(all, nil)
	rest := others(all, k)
	t0 = time.Now()
	pc.killNode(k)
	pc.eventually(actionTimeout, fmt.Sprintf("after node %d was killed, the survivors show it offline", k.ID), func() error {
		_, err := pc.converged(rest)
		return err
	})
	tm.killOffline = time.Since(t0)
	pc.eventually(actionTimeout, fmt.Sprintf("after node %d was killed, %s started on a survivor", k.ID, rscOf(k)), func() error {
		return pc.placed(rest, rest, map[string][]*netcluster.Node{rscOf(k): rest})
	})
	tm.killFailover = time.Since(t0)
	t.Logf("%s: node %d killed → offline on the survivors %s, → %s started on a survivor %s", v.name, k.ID, round(tm.killOffline), rscOf(k), round(tm.killFailover))

	// The killed node restarted: it rejoins and its resource comes back.
	t0 = time.Now()
	pc.reboot(k)
	pc.startNode(k)
	pc.eventually(onlineTimeout, fmt.Sprintf("node %d restarted: every node shows 3 online", k.ID), func() error {
		_, err := pc.converged(all)
		return err
	})
	tm.rejoin = time.Since(t0)
	pc.eventually(actionTimeout, fmt.Sprintf("node %d restarted: every Dummy on its node again", k.ID), func() error {
		return pc.placed(all, all, nil)
	})
	t.Logf("%s: node %d restarted → 3 online on every node %s", v.name, k.ID, round(tm.rejoin))

	// The engine alone killed (kill -9 corosync, or every corobus
	// process of the node) under a running Pacemaker, then started again
	// as an administrator (or systemd) would: pacemakerd stays, its
	// cluster daemons exit ("Lost connection to cluster layer") and it
	// respawns them once it reaches the engine again. The node must come
	// back whole: it did not on corobus when the gateway refused a cpg
	// connection made before the first synchronization with EACCES (a
	// fatal error to pacemaker-fenced) instead of CS_ERR_TRY_AGAIN, and
	// pacemakerd then shut the whole node down.
	e := pc.nonDC(all, nil)
	rest = others(all, e)
	t0 = time.Now()
	pc.killEngine(e)
	pc.eventually(actionTimeout, fmt.Sprintf("node %d's engine killed: the others show it offline", e.ID), func() error {
		_, err := pc.converged(rest)
		return err
	})
	tm.engineKillOffline = time.Since(t0)
	if !pc.pacemakerRunning(e) {
		pc.fatalf("node %d: pacemakerd exited when its engine was killed (it waits for the engine to come back)", e.ID)
	}
	t0 = time.Now()
	if err := e.Start(); err != nil {
		pc.fatalf("%v", err)
	}
	pc.waitReady()
	pc.eventually(onlineTimeout, fmt.Sprintf("node %d's engine restarted under its pacemakerd: every node shows 3 online", e.ID), func() error {
		_, err := pc.converged(all)
		return err
	})
	tm.engineRejoin = time.Since(t0)
	pc.eventually(actionTimeout, fmt.Sprintf("node %d's engine restarted: every Dummy on its node, once", e.ID), func() error {
		return pc.placed(all, all, nil)
	})
	t.Logf("%s: node %d's engine killed → offline on the others %s; engine restarted → 3 online (pacemakerd respawned its daemons) %s", v.name, e.ID, round(tm.engineKillOffline), round(tm.engineRejoin))

	// A clean shutdown: the engine asks its clients; Pacemaker refuses
	// while it runs, and once it stopped (resources moved away) the
	// engine goes.
	s := pc.nonDC(all, k)
	rest = others(all, s)
	// corosync-cfgtool exits 0 either way: what it printed tells.
	out, err := pc.run(s, "corosync-cfgtool", "-H")
	if err != nil {
		pc.fatalf("%v", err)
	}
	if !strings.Contains(out, "Could not shutdown (error = 10)") { // CS_ERR_BUSY: a client said no
		pc.fatalf("node %d: corosync-cfgtool -H while Pacemaker runs was not refused (Pacemaker refuses): %q", s.ID, out)
	}
	t.Logf("%s: node %d: corosync-cfgtool -H while Pacemaker runs: %q", v.name, s.ID, strings.TrimSpace(out))
	if !s.Running() {
		pc.fatalf("node %d: the engine exited although Pacemaker refused the shutdown", s.ID)
	}
	pc.eventually(actionTimeout, "after the refused shutdown, every node still shows 3 online", func() error {
		_, err := pc.converged(all)
		return err
	})
	t0 = time.Now()
	if err := pc.stopPacemaker(s, stopTimeout); err != nil {
		pc.fatalf("%v", err)
	}
	if _, err := os.Stat(stateFile(s, rscOf(s))); err == nil {
		pc.fatalf("node %d: Pacemaker stopped but %s's state file is still there: it did not stop its resource", s.ID, rscOf(s))
	}
	pc.eventually(actionTimeout, fmt.Sprintf("Pacemaker stopped on node %d: %s started on another node", s.ID, rscOf(s)), func() error {
		return pc.placed(rest, rest, map[string][]*netcluster.Node{rscOf(s): rest})
	})
	tm.shutdownFailover = time.Since(t0) // from the stop: it moves the resource before it exits
	t0 = time.Now()
	if out, err := pc.run(s, "corosync-cfgtool", "-H"); err != nil || strings.Contains(out, "Could not") {
		pc.fatalf("node %d: corosync-cfgtool -H with Pacemaker stopped: %q, %v", s.ID, out, err)
	}
	pc.eventually(actionTimeout, fmt.Sprintf("node %d's engine exits after corosync-cfgtool -H", s.ID), func() error {
		if s.Running() {
			return errors.New("still running")
		}
		return nil
	})
	tm.cfgShutdown = time.Since(t0)
	if err := s.ExitErr(); err != nil {
		pc.fatalf("node %d: the engine's clean shutdown ended with %v", s.ID, err)
	}
	pc.eventually(actionTimeout, fmt.Sprintf("node %d shut down: the others keep quorum and every resource", s.ID), func() error {
		if _, err := pc.converged(rest); err != nil {
			return err
		}
		return pc.placed(rest, rest, map[string][]*netcluster.Node{rscOf(s): rest})
	})
	t.Logf("%s: node %d: Pacemaker stopped → %s elsewhere %s; corosync-cfgtool -H → engine exited %s", v.name, s.ID, rscOf(s), round(tm.shutdownFailover), round(tm.cfgShutdown))
	pc.startNode(s)
	pc.eventually(onlineTimeout, fmt.Sprintf("node %d started again: every node shows 3 online", s.ID), func() error {
		_, err := pc.converged(all)
		return err
	})
	pc.eventually(actionTimeout, fmt.Sprintf("node %d started again: every Dummy on its node", s.ID), func() error {
		return pc.placed(all, all, nil)
	})

	// A partition of one node: its side loses quorum and stops its
	// resource; the other side keeps quorum and its own resources (not
	// restarted) and starts the lone node's.
	p := pc.nonDC(all, nil)
	rest = others(all, p)
	before := map[uint32]stamp{}
	for _, n := range rest {
		before[n.ID] = pc.stamp(n)
	}
	var ids []int
	for _, n := range rest {
		ids = append(ids, int(n.ID))
	}
	t0 = time.Now()
	if err := nc.Partition(ids); err != nil {
		pc.fatalf("%v", err)
	}
	pc.eventually(actionTimeout, fmt.Sprintf("node %d cut off: it has no quorum and has stopped %s", p.ID, rscOf(p)), func() error {
		m, err := pc.mon(p)
		if err != nil {
			return err
		}
		if m.Summary.DC.WithQuorum {
			return errors.New("crm_mon still says partition with quorum")
		}
		if _, err := os.Stat(stateFile(p, rscOf(p))); err == nil {
			return fmt.Errorf("%s is still running (its state file exists)", rscOf(p))
		}
		on, err := m.runningOn(rscOf(p))
		if err != nil {
			return err
		}
		if on != "" {
			return fmt.Errorf("crm_mon shows %s on %s", rscOf(p), on)
		}
		return nil
	})
	tm.partitionQuorumLost = time.Since(t0)
	pc.eventually(actionTimeout, fmt.Sprintf("node %d cut off: the others have quorum and run every resource", p.ID), func() error {
		if _, err := pc.converged(rest); err != nil {
			return err
		}
		return pc.placed(rest, rest, map[string][]*netcluster.Node{rscOf(p): rest})
	})
	tm.partitionFailover = time.Since(t0)
	for _, n := range rest {
		if now := pc.stamp(n); now != before[n.ID] {
			pc.fatalf("node %d: %s was restarted during the partition (state file %+v, before %+v): the quorate side must keep its resources", n.ID, rscOf(n), now, before[n.ID])
		}
	}
	t.Logf("%s: node %d cut off → it lost quorum and stopped %s %s; → %s started on the majority %s", v.name, p.ID, rscOf(p), round(tm.partitionQuorumLost), rscOf(p), round(tm.partitionFailover))
	t0 = time.Now()
	if err := nc.Heal(); err != nil {
		pc.fatalf("%v", err)
	}
	pc.eventually(onlineTimeout, "healed: every node shows 3 online and one DC", func() error {
		_, err := pc.converged(all)
		return err
	})
	pc.eventually(actionTimeout, "healed: every Dummy on its node, once", func() error {
		return pc.placed(all, all, nil)
	})
	tm.heal = time.Since(t0)
	t.Logf("%s: healed → one cluster, every Dummy on its node %s", v.name, round(tm.heal))

	t.Logf("TIMINGS %s (totem.token %s): cold start→engines ready %s, →all online %s | kill→offline %s, →resource elsewhere %s | rejoin %s | engine kill→offline %s, engine restart→all online %s | pacemaker stop→resource elsewhere %s, cfgtool -H→engine gone %s | partition→lone node inquorate and stopped %s, →resource on majority %s | heal→settled %s",
		v.name, tokenName(v.token), round(tm.ring), round(tm.online), round(tm.killOffline), round(tm.killFailover), round(tm.rejoin), round(tm.engineKillOffline), round(tm.engineRejoin),
		round(tm.shutdownFailover), round(tm.cfgShutdown), round(tm.partitionQuorumLost), round(tm.partitionFailover), round(tm.heal))
}

// reboot empties what a reboot empties on a real machine: /run is tmpfs
// there, while the node's private directory here outlives a kill.
// Without it, the Dummy agent's state file of a killed node would say,
// after its restart, that the resource still runs there. /var/lib
// (Pacemaker's CIB, corosync's ring id) stays, as on a disk. (/dev/shm
// is the node's own tmpfs; the kill already removed the libqb rings of
// the processes it killed, and only those: netcluster's Node.Kill.)
//
// /run here is the node's own mount (MountNS: a directory of the node's);
// it is checked to be other than the test's own (device and inode, as
// stat sees them inside the node) before anything is removed: without
// its own mount this would empty the machine's, so it refuses.
func (pc *pcmkCluster) reboot(n *netcluster.Node) {
	pc.t.Helper()
	var host syscall.Stat_t
	if err := syscall.Stat("/run", &host); err != nil {
		pc.fatalf("reboot of node %d: %v", n.ID, err)
	}
	out, err := pc.run(n, "stat", "-L", "-c", "%d:%i", "/run")
	if err != nil {
		pc.fatalf("reboot of node %d: %v", n.ID, err)
	}
	if strings.TrimSpace(out) == fmt.Sprintf("%d:%d", host.Dev, host.Ino) {
		pc.fatalf("reboot of node %d: its /run is the machine's (no mount of its own): refusing to empty it", n.ID)
	}
	if _, err := pc.run(n, "find", "/run", "-mindepth", "1", "-xdev", "!", "-type", "d", "-delete"); err != nil {
		pc.fatalf("%v", err)
	}
}

// waitReady waits until every running node's engine is ready as systemd
// sees it — READY=1 from the engine's process on $NOTIFY_SOCKET, which is
// when systemd starts pacemaker.service after corosync.service — then
// checks that each answers a client at once (corosync-cmapctl, no retry:
// that is what READY=1 promises), and waits until each lists every
// running node in runtime.members.
func (pc *pcmkCluster) waitReady() {
	pc.t.Helper()
	var up []*netcluster.Node
	var want []uint32
	for _, n := range pc.nc.Nodes {
		if n.Running() {
			up = append(up, n)
			want = append(want, n.ID)
		}
	}
	for _, n := range up {
		deadline := time.After(ringTimeout)
		for {
			pid := n.Pid()
			if pid == 0 {
				pc.fatalf("node %d: the engine exited before it said READY=1: %v", n.ID, n.ExitErr())
			}
			ok, wake := pc.notify.isReady(pid)
			if ok {
				break
			}
			select {
			case <-wake:
			case <-time.After(time.Second):
			case <-deadline:
				pc.fatalf("node %d: the engine (pid %d) did not say READY=1 on $NOTIFY_SOCKET within %s", n.ID, pid, ringTimeout)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := n.CmapMembers(ctx)
		cancel()
		if err != nil {
			pc.fatalf("node %d said READY=1 but does not serve its clients: %v", n.ID, err)
		}
	}
	pc.nc.WaitView(pc.t, ringTimeout, up, want)
	for _, n := range up {
		pc.eventually(ringTimeout, fmt.Sprintf("node %d's clients see members %v", n.ID, want), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := n.CmapMembers(ctx)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("runtime.members: %v", got)
			}
			return nil
		})
	}
}

// startNode starts a node's engine, waits until it is in the ring, and
// starts Pacemaker on it.
func (pc *pcmkCluster) startNode(n *netcluster.Node) {
	pc.t.Helper()
	if err := n.Start(); err != nil {
		pc.fatalf("%v", err)
	}
	pc.waitReady()
	pc.startPacemaker(n)
}

// converged checks that crm_mon on each node of nodes shows exactly those
// nodes online, one DC among them (the same on every node) and quorum,
// and returns the DC's name. A dead engine or pacemakerd fails the test
// at once.
func (pc *pcmkCluster) converged(nodes []*netcluster.Node) (string, error) {
	pc.t.Helper()
	want := names(nodes)
	dc := ""
	for _, n := range nodes {
		pc.mustRun(n)
		m, err := pc.mon(n)
		if err != nil {
			return "", err
		}
		if got := m.online(); !slices.Equal(got, want) {
			return "", fmt.Errorf("node %d shows online %v, want %v", n.ID, got, want)
		}
		if !m.Summary.DC.Present {
			return "", fmt.Errorf("node %d shows no DC", n.ID)
		}
		if !slices.Contains(want, m.Summary.DC.Name) {
			return "", fmt.Errorf("node %d shows DC %s, not one of %v", n.ID, m.Summary.DC.Name, want)
		}
		if dc != "" && m.Summary.DC.Name != dc {
			return "", fmt.Errorf("node %d shows DC %s, another node shows %s", n.ID, m.Summary.DC.Name, dc)
		}
		dc = m.Summary.DC.Name
		if !m.Summary.DC.WithQuorum {
			return "", fmt.Errorf("node %d shows a partition without quorum", n.ID)
		}
		if m.Summary.NodesConfigured.Number != len(pc.nc.Nodes) {
			return "", fmt.Errorf("node %d shows %d nodes configured, want %d", n.ID, m.Summary.NodesConfigured.Number, len(pc.nc.Nodes))
		}
	}
	return dc, nil
}

// placed checks, on each node of viewers, that crm_mon shows each node
// of owners running its own Dummy, and each resource of elsewhere running
// on one of the nodes listed for it; and that each of those resources'
// state file exists on the node running it (the agent really started it
// there) and on no other node of all.
func (pc *pcmkCluster) placed(viewers, owners []*netcluster.Node, elsewhere map[string][]*netcluster.Node) error {
	pc.t.Helper()
	want := map[string][]*netcluster.Node{}
	for _, n := range owners {
		if _, moved := elsewhere[rscOf(n)]; !moved {
			want[rscOf(n)] = []*netcluster.Node{n}
		}
	}
	for rsc, on := range elsewhere {
		want[rsc] = on
	}
	where := map[string]string{}
	for _, n := range viewers {
		pc.mustRun(n)
		m, err := pc.mon(n)
		if err != nil {
			return err
		}
		for rsc, allowed := range want {
			on, err := m.runningOn(rsc)
			if err != nil {
				return fmt.Errorf("node %d: %w", n.ID, err)
			}
			if on == "" {
				return fmt.Errorf("node %d shows %s stopped", n.ID, rsc)
			}
			if !slices.Contains(names(allowed), on) {
				return fmt.Errorf("node %d shows %s on %s, want one of %v", n.ID, rsc, on, names(allowed))
			}
			if w, ok := where[rsc]; ok && w != on {
				return fmt.Errorf("nodes disagree: %s on %s and on %s", rsc, w, on)
			}
			where[rsc] = on
		}
	}
	for rsc, on := range where {
		for _, n := range pc.nc.Nodes {
			_, err := os.Stat(stateFile(n, rsc))
			switch {
			case n.Name == on && err != nil:
				return fmt.Errorf("crm_mon shows %s on %s but its state file is not there: %v", rsc, on, err)
			case n.Name != on && err == nil && n.Running():
				return fmt.Errorf("%s runs on %s but also on node %d (its state file is there)", rsc, on, n.ID)
			}
		}
	}
	return nil
}

// mustRun fails the test at once when node n's engine or pacemakerd has
// died: nothing would bring it back within the deadline.
func (pc *pcmkCluster) mustRun(n *netcluster.Node) {
	pc.t.Helper()
	if !n.Running() {
		pc.fatalf("node %d: the engine exited: %v", n.ID, n.ExitErr())
	}
	if !pc.pacemakerRunning(n) {
		pc.mu.Lock()
		var exit error
		if p := pc.pcmk[n.ID]; p != nil {
			exit = p.exit
		}
		pc.mu.Unlock()
		pc.fatalf("node %d: pacemakerd exited: %v", n.ID, exit)
	}
}

// nonDC is a node of nodes that is not the DC (and not avoid, when there
// is a choice), so that what the test measures is not an election.
func (pc *pcmkCluster) nonDC(nodes []*netcluster.Node, avoid *netcluster.Node) *netcluster.Node {
	pc.t.Helper()
	dc, err := pc.converged(nodes)
	if err != nil {
		pc.fatalf("%v", err)
	}
	var pick *netcluster.Node
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if n.Name == dc {
			continue
		}
		if n != avoid || pick == nil {
			pick = n
		}
		if n != avoid {
			break
		}
	}
	return pick
}

// stamp identifies one start of a node's Dummy: the agent creates its
// state file when it starts and removes it when it stops.
type stamp struct {
	Ino   uint64
	Mtime int64
}

func (pc *pcmkCluster) stamp(n *netcluster.Node) stamp {
	pc.t.Helper()
	st, err := os.Stat(stateFile(n, rscOf(n)))
	if err != nil {
		pc.fatalf("node %d: %v", n.ID, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return stamp{Ino: sys.Ino, Mtime: st.ModTime().UnixNano()}
}

// rscOf is the Dummy that prefers node n.
func rscOf(n *netcluster.Node) string { return fmt.Sprintf("dummy%d", n.ID) }

// stateFile is where ocf:pacemaker:Dummy keeps resource rsc's state on
// node n (${HA_VARRUN}/Dummy-<id>.state, in the node's private /run).
func stateFile(n *netcluster.Node, rsc string) string {
	return hostPath(n, "/run/Dummy-"+rsc+".state")
}

func others(all []*netcluster.Node, not *netcluster.Node) []*netcluster.Node {
	var out []*netcluster.Node
	for _, n := range all {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}

func names(nodes []*netcluster.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

func tokenName(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}
