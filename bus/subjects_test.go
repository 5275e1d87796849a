package bus

import "testing"

func TestSubjects(t *testing.T) {
	s, err := NewSubjects(DefaultPrefix("my.cluster"))
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		s.BusStatus(3):                "corobus.my_cluster.bus.3.status",
		s.Log(2, "TOTEM"):             "corobus.my_cluster.log.2.TOTEM",
		s.Log(2, "a.b c"):             "corobus.my_cluster.log.2.a_b_c",
		s.Blackbox(1):                 "corobus.my_cluster.blackbox.1",
		s.All():                       "corobus.my_cluster.>",
		s.Join("x", "y"):              "corobus.my_cluster.x.y",
		s.CPGConfChg(2, "a.b c=\xff"): "corobus.my_cluster.cpg.2.confchg.a=2Eb=20c=3D=FF",
		s.CPGConfChg(2, ""):           "corobus.my_cluster.cpg.2.confchg.=",
		s.CPGGroups(1):                "corobus.my_cluster.cpg.1.groups",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	for _, bad := range []string{"", "a..b", "a.*", "a.>", "a b"} {
		if _, err := NewSubjects(bad); err == nil {
			t.Errorf("NewSubjects(%q) accepted", bad)
		}
	}
}

func TestNodeOfServer(t *testing.T) {
	for name, want := range map[string]uint32{"node1": 1, "node250": 250, "node": 0, "nodeX": 0, "x3": 0, "node0": 0} {
		got, ok := NodeOfServer(name)
		if got != want || ok != (want != 0) {
			t.Errorf("NodeOfServer(%q) = %d, %v", name, got, ok)
		}
		if ok && ServerName(got) != name {
			t.Errorf("ServerName(%d) = %q", got, ServerName(got))
		}
	}
}
