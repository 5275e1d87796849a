package cpg

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/corobus/corobus/services/cpg/cpgwire"
)

// proc is one process of a group, cluster-wide (corosync's process_info).
type proc struct {
	group cpgwire.Name
	node  uint32
	pid   uint32
	// seq orders processes with the same (node, pid): corosync keeps its
	// process list sorted by node and pid, a newcomer after its equals.
	seq uint64
}

func (p proc) addr(reason uint32) cpgwire.Address {
	return cpgwire.Address{NodeID: p.node, PID: p.pid, Reason: reason}
}

// procTable is this node's picture of every group: the same on every node
// of a view, because it changes only through the ordered multicast and
// the sync at the same points of every member's stream.
type procTable struct {
	groups map[cpgwire.Name][]proc // each sorted by (node, pid)
	seq    uint64
}

func newProcTable() procTable { return procTable{groups: map[cpgwire.Name][]proc{}} }

func byNodePID(a, b proc) int { return cmp.Or(cmp.Compare(a.node, b.node), cmp.Compare(a.pid, b.pid)) }

// has reports whether (node, pid) is a member of group.
func (t *procTable) has(group cpgwire.Name, node, pid uint32) bool {
	_, ok := slices.BinarySearchFunc(t.groups[group], proc{node: node, pid: pid}, byNodePID)
	return ok
}

// add makes (node, pid) a member of group; false if it was one already.
func (t *procTable) add(group cpgwire.Name, node, pid uint32) bool {
	l := t.groups[group]
	i, ok := slices.BinarySearchFunc(l, proc{node: node, pid: pid}, byNodePID)
	if ok {
		return false
	}
	t.seq++
	t.groups[group] = slices.Insert(l, i, proc{group: group, node: node, pid: pid, seq: t.seq})
	return true
}

// remove takes (node, pid) out of group; false if it was not a member.
func (t *procTable) remove(group cpgwire.Name, node, pid uint32) bool {
	l := t.groups[group]
	i, ok := slices.BinarySearchFunc(l, proc{node: node, pid: pid}, byNodePID)
	if !ok {
		return false
	}
	l = slices.Delete(l, i, i+1)
	if len(l) == 0 {
		delete(t.groups, group)
	} else {
		t.groups[group] = l
	}
	return true
}

// nodeIn reports whether any process of node is a member of group:
// corosync delivers a message only from a node it knows in the group.
func (t *procTable) nodeIn(group cpgwire.Name, node uint32) bool {
	for _, p := range t.groups[group] {
		if p.node == node {
			return true
		}
	}
	return false
}

// members lists group's members, in corosync's order (by node, then pid).
func (t *procTable) members(group cpgwire.Name) []cpgwire.Address {
	l := t.groups[group]
	out := make([]cpgwire.Address, len(l))
	for i, p := range l {
		out[i] = p.addr(cpgwire.ReasonUndefined)
	}
	return out
}

// all is every process in corosync's process_info order: by node and
// pid, equals in the order they came.
func (t *procTable) all() []proc {
	var out []proc
	for _, l := range t.groups {
		out = append(out, l...)
	}
	slices.SortFunc(out, func(a, b proc) int { return cmp.Or(byNodePID(a, b), cmp.Compare(a.seq, b.seq)) })
	return out
}

// sortedGroups lists group names in byte order: corosync sends the
// confchgs of a sync's downlist and joinlists one group at a time in the
// order of its (string-keyed) map.
func sortedGroups[V any](m map[cpgwire.Name]V) []cpgwire.Name {
	names := make([]cpgwire.Name, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b cpgwire.Name) int { return bytes.Compare([]byte(a), []byte(b)) })
	return names
}

// iteration builds what cpg_iteration_initialize walks, as corosync
// builds it: the process list "grouped by" name, each process inserted
// right after the first item of its group, and a group not seen yet at
// the front — so groups come in reverse order of first appearance and,
// within a group, its first process, then the others in reverse. NAME_ONLY
// keeps one item per group with node and pid 0; ONE_GROUP only group's.
func (t *procTable) iteration(typ uint32, group cpgwire.Name) []cpgwire.Description {
	var items []cpgwire.Description
	for _, p := range t.all() {
		d := cpgwire.Description{Group: p.group, NodeID: p.node, PID: p.pid}
		first := slices.IndexFunc(items, func(x cpgwire.Description) bool { return x.Group == p.group })
		switch typ {
		case cpgwire.IterNameOnly:
			if first >= 0 {
				continue
			}
			d.NodeID, d.PID = 0, 0
		case cpgwire.IterOneGroup:
			if p.group != group {
				continue
			}
		}
		items = slices.Insert(items, first+1, d)
	}
	return items
}
