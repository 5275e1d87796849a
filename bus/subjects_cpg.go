package bus

import "fmt"

// CPGConfChg is where node's cpg service publishes every configuration
// change of a group as it applies it (JSON); the group name is one token
// (GroupToken), so `…cpg.<node>.confchg.*` follows every group.
func (s Subjects) CPGConfChg(node uint32, group string) string {
	return s.Join("cpg", nodeToken(node), "confchg", GroupToken(group))
}

// CPGRing is where node's cpg service publishes each view it has
// synchronized the groups in (JSON: what libcpg's totem confchg callback
// carries).
func (s Subjects) CPGRing(node uint32) string {
	return s.Join("cpg", nodeToken(node), "ring")
}

// CPGGroups is served by node's cpg service: the groups and their members,
// as cpg_iteration_* walks them (JSON).
func (s Subjects) CPGGroups(node uint32) string {
	return s.Join("cpg", nodeToken(node), "groups")
}

// GroupToken spells a CPG group name (up to 128 arbitrary bytes) as one
// subject token, reversibly: letters, digits, '-' and '_' as they are,
// every other byte =XX (two upper-case hex digits); the empty name is "=".
func GroupToken(name string) string {
	if name == "" {
		return "="
	}
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b = append(b, c)
		} else {
			b = fmt.Appendf(b, "=%02X", c)
		}
	}
	return string(b)
}
