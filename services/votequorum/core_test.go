package votequorum

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/corobus/corobus/services/cswire"
)

// sim is a cluster of votequorum cores joined by an in-order "totem":
// every multicast goes into one queue that deliver hands to each core of
// the sender's partition in the same order. It exercises the algorithm
// alone; the service tests run it over a real bus.
type sim struct {
	t       *testing.T
	cores   map[uint32]*Core
	envs    map[uint32]*simEnv
	queue   []simMsg
	seq     uint64
	part    map[uint32]int // partition of each running node
	running map[uint32]bool
}

type simMsg struct {
	from uint32
	e    Exec
}

type simEnv struct {
	s        *sim
	id       uint32
	keys     map[string]uint32
	quorate  []bool // every QuorumChanged
	timers   map[string]time.Duration
	barrier  uint32
	expected []uint32
	notified int
	nodelist int
	regs     []cswire.Error
}

func (e *simEnv) Mcast(x Exec) error {
	e.s.queue = append(e.s.queue, simMsg{from: e.id, e: x})
	return nil
}
func (e *simEnv) SetKey(key, _ string, v uint32)               { e.keys[key] = v }
func (e *simEnv) QuorumChanged(_ []uint32, q bool, _ RingID)   { e.quorate = append(e.quorate, q) }
func (e *simEnv) NotifyQuorum(any, uint64, bool, []NodeState)  { e.notified++ }
func (e *simEnv) NotifyNodelist(any, uint64, RingID, []uint32) { e.nodelist++ }
func (e *simEnv) NotifyExpected(v uint32)                      { e.expected = append(e.expected, v) }
func (e *simEnv) StartTimer(name string, d time.Duration)      { e.timers[name] = d }
func (e *simEnv) StopTimer(name string)                        { delete(e.timers, name) }
func (e *simEnv) LoadEVBarrier() (uint32, error)               { return e.barrier, nil }
func (e *simEnv) SaveEVBarrier(v uint32) error                 { e.barrier = v; return nil }
func (e *simEnv) QdeviceRegistered(_ any, code cswire.Error)   { e.regs = append(e.regs, code) }

func newSim(t *testing.T) *sim {
	return &sim{t: t, cores: map[uint32]*Core{}, envs: map[uint32]*simEnv{}, part: map[uint32]int{}, running: map[uint32]bool{}}
}

// settings builds a nodelist of n nodes with extra quorum keys.
func settings(t *testing.T, n int, id uint32, extra map[string]string) Settings {
	flat := map[string]string{"quorum.provider": ProviderVotequorum}
	for i := 0; i < n; i++ {
		flat[fmt.Sprintf("nodelist.node.%d.nodeid", i)] = fmt.Sprint(i + 1)
		flat[fmt.Sprintf("nodelist.node.%d.ring0_addr", i)] = fmt.Sprintf("10.0.0.%d", i+1)
	}
	for k, v := range extra {
		flat[k] = v
	}
	s, err := ParseSettings(flat, int(id)-1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start boots node id (keeping its env, so a restart keeps its disk).
func (s *sim) start(id uint32, st Settings) {
	env := s.envs[id]
	if env == nil {
		env = &simEnv{s: s, id: id, keys: map[string]uint32{}, timers: map[string]time.Duration{}}
		s.envs[id] = env
	}
	c, err := NewCore(id, st, env, slog.New(slog.DiscardHandler))
	if err != nil {
		s.t.Fatalf("node %d: %v", id, err)
	}
	s.cores[id] = c
	s.running[id] = true
	s.part[id] = 0
}

func (s *sim) kill(id uint32) {
	delete(s.running, id)
	// Messages still queued from it are lost with it.
	s.queue = slices.DeleteFunc(s.queue, func(m simMsg) bool { return m.from == id })
}

// deliver hands every queued message to the running members of the
// sender's partition, in queue order.
func (s *sim) deliver() {
	for len(s.queue) > 0 {
		m := s.queue[0]
		s.queue = s.queue[1:]
		for _, id := range s.ids() {
			if s.part[id] == s.part[m.from] {
				s.cores[id].Deliver(m.from, m.e)
			}
		}
	}
}

func (s *sim) ids() []uint32 {
	var out []uint32
	for id := range s.running {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// view runs one synchronization round in each partition, as the sync
// engine does: init everywhere, process until done (delivering what it
// sent), activate.
func (s *sim) view() {
	s.seq += 4
	parts := map[int][]uint32{}
	for _, id := range s.ids() {
		parts[s.part[id]] = append(parts[s.part[id]], id)
	}
	for _, members := range parts {
		ring := RingID{NodeID: members[0], Seq: s.seq}
		for _, id := range members {
			s.cores[id].SyncInit(members, members, ring)
		}
		for _, id := range members {
			s.cores[id].SyncProcess()
		}
		s.deliver()
		for _, id := range members {
			s.cores[id].SyncActivate()
		}
		s.deliver()
	}
}

// round runs one round of ring over members in which only the cores of
// hosts take part, as when a joining node's votequorum has not
// registered with its sync engine yet.
func (s *sim) round(ring RingID, members, hosts []uint32) {
	for _, id := range hosts {
		s.cores[id].SyncInit(members, members, ring)
	}
	for _, id := range hosts {
		s.cores[id].SyncProcess()
	}
	s.deliver()
	for _, id := range hosts {
		s.cores[id].SyncActivate()
	}
	s.deliver()
}

func (s *sim) quorate(id uint32) bool { return s.cores[id].quorate }

func (s *sim) expectQuorate(t *testing.T, want bool, ids ...uint32) {
	t.Helper()
	for _, id := range ids {
		if got := s.quorate(id); got != want {
			in, _ := s.cores[id].GetInfo(id)
			t.Fatalf("node %d quorate = %v, want %v (%+v)", id, got, want, in)
		}
	}
}

func TestThreeNodesKillOneThenTwo(t *testing.T) {
	s := newSim(t)
	for id := uint32(1); id <= 3; id++ {
		s.start(id, settings(t, 3, id, nil))
	}
	s.view()
	s.expectQuorate(t, true, 1, 2, 3)
	in, _ := s.cores[1].GetInfo(0)
	if in.ExpectedVotes != 3 || in.TotalVotes != 3 || in.Quorum != 2 || in.Flags&InfoQuorate == 0 {
		t.Fatalf("info %+v", in)
	}
	s.kill(3)
	s.view()
	s.expectQuorate(t, true, 1, 2)
	if st, _ := s.cores[1].GetInfo(3); st.State != StateDead {
		t.Fatalf("node 3 state %d, want dead", st.State)
	}
	s.kill(2)
	s.view()
	s.expectQuorate(t, false, 1)
	if q := s.envs[1].quorate; q[len(q)-1] {
		t.Fatalf("the survivor's last quorum callback says quorate")
	}
	s.start(2, settings(t, 3, 2, nil))
	s.start(3, settings(t, 3, 3, nil))
	s.view()
	s.expectQuorate(t, true, 1, 2, 3)
}

// A ring's round run again (a joining node's services registering after
// it formed, services/sync) tells the trackers once, as corosync's one
// round does: the nodelist once per ring, the quorum notification when
// every member has spoken (corosync's trackers never see a member of the
// view dead). Every rerun repeated both, and the first said the joining
// node was dead.
func TestRerunOfARingNotifiesOnce(t *testing.T) {
	s := newSim(t)
	for id := uint32(1); id <= 3; id++ {
		s.start(id, settings(t, 3, id, nil))
	}
	s.view()
	s.kill(3)
	s.view()
	e := s.envs[1]
	lists, quorums := e.nodelist, e.notified
	s.start(3, settings(t, 3, 3, nil))
	ring := RingID{NodeID: 1, Seq: s.seq + 4}
	s.round(ring, []uint32{1, 2, 3}, []uint32{1, 2}) // node 3's votequorum not registered yet
	if in, _ := s.cores[1].GetInfo(3); in.State != StateDead {
		t.Fatalf("node 3 without votequorum in the round: state %d, want dead", in.State)
	}
	if e.notified != quorums || e.timers[TimerSilent] != SilentMemberWait {
		t.Fatalf("a round with node 3 silent: %d quorum notifications, timers %v; want none, and the wait armed", e.notified-quorums, e.timers)
	}
	s.round(ring, []uint32{1, 2, 3}, []uint32{1, 2, 3}) // it registered: the round again
	s.round(ring, []uint32{1, 2, 3}, []uint32{1, 2, 3}) // another service did
	if in, _ := s.cores[1].GetInfo(3); in.State != StateMember {
		t.Fatalf("node 3 after the rerun: state %d, want member", in.State)
	}
	if n := e.nodelist - lists; n != 1 {
		t.Errorf("node 1's trackers got %d nodelist notifications for one ring, want 1", n)
	}
	if n := e.notified - quorums; n != 1 {
		t.Errorf("node 1's trackers got %d quorum notifications for one ring, want 1", n)
	}
	if _, armed := e.timers[TimerSilent]; armed {
		t.Errorf("the wait for a silent member is still armed")
	}
}

// A member whose votequorum never speaks holds the trackers' quorum
// notification only until the wait is over.
func TestSilentMemberHoldsTheNotificationForAWhile(t *testing.T) {
	s := newSim(t)
	for id := uint32(1); id <= 3; id++ {
		s.start(id, settings(t, 3, id, nil))
	}
	s.view()
	s.kill(3)
	s.view()
	e := s.envs[1]
	quorums := e.notified
	s.round(RingID{NodeID: 1, Seq: s.seq + 4}, []uint32{1, 2, 3}, []uint32{1, 2})
	if e.notified != quorums {
		t.Fatalf("told before the wait was over")
	}
	s.cores[1].Timer(TimerSilent)
	if e.notified != quorums+1 {
		t.Fatalf("%d quorum notifications once the wait was over, want 1", e.notified-quorums)
	}
}

func TestRestartedInstanceAnnouncesNothingBeforeItsFirstSync(t *testing.T) {
	s := newSim(t)
	s.start(1, settings(t, 3, 1, nil))
	if len(s.envs[1].quorate) != 0 {
		t.Fatalf("a quorum callback before the first sync: %v", s.envs[1].quorate)
	}
}

func TestTwoNode(t *testing.T) {
	s := newSim(t)
	two := map[string]string{"quorum.two_node": "1"}
	s.start(1, settings(t, 2, 1, two))
	s.start(2, settings(t, 2, 2, two))
	s.view()
	s.expectQuorate(t, true, 1, 2)
	in, _ := s.cores[1].GetInfo(0)
	if in.Flags&InfoTwoNode == 0 || in.Flags&InfoWaitForAll == 0 || in.Quorum != 1 {
		t.Fatalf("two_node info %+v (two_node implies wait_for_all)", in)
	}
	s.kill(2)
	s.view()
	s.expectQuorate(t, true, 1)
}

func TestTwoNodeColdStartWaitsForBoth(t *testing.T) {
	s := newSim(t)
	two := map[string]string{"quorum.two_node": "1"}
	s.start(1, settings(t, 2, 1, two))
	s.view()
	s.expectQuorate(t, false, 1)
	s.start(2, settings(t, 2, 2, two))
	s.view()
	s.expectQuorate(t, true, 1, 2)
}

func TestWaitForAllAtColdStart(t *testing.T) {
	s := newSim(t)
	wfa := map[string]string{"quorum.wait_for_all": "1"}
	s.start(1, settings(t, 3, 1, wfa))
	s.start(2, settings(t, 3, 2, wfa))
	s.view()
	// Two of three is a majority, but not everybody has been seen yet.
	s.expectQuorate(t, false, 1, 2)
	if s.envs[1].keys["runtime.votequorum.wait_for_all_status"] != 1 {
		t.Fatalf("wait_for_all_status not set")
	}
	s.start(3, settings(t, 3, 3, wfa))
	s.view()
	s.expectQuorate(t, true, 1, 2, 3)
	s.kill(3)
	s.view()
	// Once quorate, losing a node is judged by votes again.
	s.expectQuorate(t, true, 1, 2)
}

func TestCancelWaitForAll(t *testing.T) {
	s := newSim(t)
	wfa := map[string]string{"quorum.wait_for_all": "1"}
	s.start(1, settings(t, 3, 1, wfa))
	s.start(2, settings(t, 3, 2, wfa))
	s.view()
	s.expectQuorate(t, false, 1, 2)
	st := settings(t, 3, 1, map[string]string{"quorum.wait_for_all": "1", "quorum.cancel_wait_for_all": "1"})
	s.cores[1].Refresh(st)
	s.deliver()
	s.expectQuorate(t, true, 1, 2)
}

func TestLastManStanding(t *testing.T) {
	s := newSim(t)
	lms := map[string]string{"quorum.last_man_standing": "1", "quorum.last_man_standing_window": "2000"}
	for id := uint32(1); id <= 4; id++ {
		s.start(id, settings(t, 4, id, lms))
	}
	s.view()
	s.expectQuorate(t, true, 1, 2, 3, 4)
	s.kill(4)
	s.view()
	s.expectQuorate(t, true, 1, 2, 3)
	if d := s.envs[1].timers[TimerLMS]; d != 2*time.Second {
		t.Fatalf("last_man_standing timer %v, want the 2s window", d)
	}
	// The window passes: expected votes step down to the members.
	for _, id := range []uint32{1, 2, 3} {
		s.cores[id].Timer(TimerLMS)
	}
	s.deliver()
	in, _ := s.cores[1].GetInfo(0)
	if in.ExpectedVotes != 3 || in.Quorum != 2 {
		t.Fatalf("after the window: %+v, want expected 3 quorum 2", in)
	}
	s.kill(3)
	s.view()
	s.expectQuorate(t, true, 1, 2)
	for _, id := range []uint32{1, 2} {
		s.cores[id].Timer(TimerLMS)
	}
	in, _ = s.cores[1].GetInfo(0)
	if in.ExpectedVotes != 2 {
		t.Fatalf("after the second window: %+v", in)
	}
	// Without LMS, 2 of 4 would have been inquorate.
}

func TestAutoTieBreakerEvenSplit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		atbNode string
		winner  []uint32
		loser   []uint32
	}{
		{"lowest", "", []uint32{1, 2}, []uint32{3, 4}},
		{"highest", "highest", []uint32{3, 4}, []uint32{1, 2}},
		{"list", "4 1", []uint32{3, 4}, []uint32{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t)
			extra := map[string]string{"quorum.auto_tie_breaker": "1"}
			if tc.atbNode != "" {
				extra["quorum.auto_tie_breaker_node"] = tc.atbNode
			}
			for id := uint32(1); id <= 4; id++ {
				s.start(id, settings(t, 4, id, extra))
			}
			s.view()
			s.expectQuorate(t, true, 1, 2, 3, 4)
			for _, id := range tc.loser {
				s.part[id] = 1
			}
			s.view()
			s.expectQuorate(t, true, tc.winner...)
			s.expectQuorate(t, false, tc.loser...)
		})
	}
}

func TestAutoTieBreakerOddClusterNeedsWaitForAll(t *testing.T) {
	s := newSim(t)
	s.start(1, settings(t, 3, 1, map[string]string{"quorum.auto_tie_breaker": "1"}))
	if in, _ := s.cores[1].GetInfo(0); in.Flags&InfoAutoTieBreaker != 0 {
		t.Fatalf("ATB stayed on in an odd cluster without wait_for_all")
	}
	flat := map[string]string{"quorum.provider": ProviderVotequorum, "nodelist.node.0.nodeid": "1",
		"nodelist.node.1.nodeid": "2", "nodelist.node.2.nodeid": "3",
		"quorum.auto_tie_breaker": "1", "quorum.last_man_standing": "1"}
	st, _ := ParseSettings(flat, 0)
	if _, err := NewCore(1, st, &simEnv{keys: map[string]uint32{}, timers: map[string]time.Duration{}}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatalf("ATB with LMS in an odd cluster started")
	}
}

func TestSetExpectedAndVotes(t *testing.T) {
	s := newSim(t)
	s.start(1, settings(t, 1, 1, nil))
	s.view()
	if code := s.cores[1].SetExpected(2); code != cswire.ErrInvalidParam {
		t.Fatalf("expected 2 with 1 vote: %v, want CS_ERR_INVALID_PARAM (it would lose quorum)", code)
	}
	if code := s.cores[1].SetVotes(1, 2); code != cswire.OK {
		t.Fatalf("setvotes: %v", code)
	}
	s.deliver()
	in, _ := s.cores[1].GetInfo(0)
	if in.Votes != 2 || in.ExpectedVotes != 2 || in.Quorum != 2 || !s.quorate(1) {
		t.Fatalf("after setvotes 2: %+v", in)
	}
	if code := s.cores[1].SetVotes(7, 1); code != cswire.ErrNameNotFound {
		t.Fatalf("setvotes of an unknown node: %v", code)
	}
	if code := s.cores[1].SetVotes(1, 1); code != cswire.ErrInvalidParam {
		t.Fatalf("setvotes 1 (quorum 2 > total 1): %v", code)
	}
}

func TestExpectedVotesTrackingSurvivesRestart(t *testing.T) {
	s := newSim(t)
	track := map[string]string{"quorum.expected_votes_tracking": "1"}
	for id := uint32(1); id <= 3; id++ {
		s.start(id, settings(t, 3, id, track))
	}
	s.view()
	if s.envs[1].barrier != 3 {
		t.Fatalf("barrier %d, want 3", s.envs[1].barrier)
	}
	s.kill(1)
	s.start(1, settings(t, 3, 1, track))
	if in, _ := s.cores[1].GetInfo(0); in.ExpectedVotes != 3 {
		t.Fatalf("restarted node expects %d", in.ExpectedVotes)
	}
}

func TestQdeviceRegistration(t *testing.T) {
	s := newSim(t)
	dev := map[string]string{"quorum.device.model": "net"}
	s.start(1, settings(t, 2, 1, dev))
	s.start(2, settings(t, 2, 2, dev))
	s.view()
	c := s.cores[1]
	conn := new(int)
	if code, pending := c.QdeviceRegister(conn, "Qdevice"); code != cswire.OK || !pending {
		t.Fatalf("register: %v %v", code, pending)
	}
	s.deliver()
	if r := s.envs[1].regs; len(r) != 1 || r[0] != cswire.OK {
		t.Fatalf("registration result %v", r)
	}
	in, _ := c.GetInfo(0)
	if in.Flags&InfoQdeviceRegistered == 0 || in.QdeviceVotes != 1 || in.QdeviceName != "Qdevice" {
		t.Fatalf("info after register: %+v", in)
	}
	if code := c.QdevicePoll("Qdevice", true, RingID{NodeID: 9}); code != cswire.ErrMessageError {
		t.Fatalf("poll for another ring: %v", code)
	}
	if code := c.QdevicePoll("Qdevice", true, c.ring); code != cswire.OK {
		t.Fatalf("poll: %v", code)
	}
	s.deliver()
	in, _ = c.GetInfo(0)
	if in.Flags&InfoQdeviceCastVote == 0 || in.TotalVotes != 3 {
		t.Fatalf("info after poll: %+v", in)
	}
	// With the device's vote, node 1 keeps quorum alone.
	s.kill(2)
	s.view()
	c.QdevicePoll("Qdevice", true, c.ring)
	s.deliver()
	s.expectQuorate(t, true, 1)
	if code := c.QdeviceUnregister("Qdevice"); code != cswire.OK {
		t.Fatalf("unregister: %v", code)
	}
}

func TestParseSettingsRejectsGarbage(t *testing.T) {
	if _, err := ParseSettings(map[string]string{"quorum.two_node": "yes please"}, -1); err == nil {
		t.Fatalf("a non-numeric two_node parsed")
	}
	if _, err := NewCore(1, Settings{Provider: ProviderVotequorum}, &simEnv{keys: map[string]uint32{}}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatalf("started without nodelist or expected_votes")
	}
}
