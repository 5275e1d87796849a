package netcluster

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// conf is the node's corosync.conf: the same file for both engines, as a
// real cluster would have (a nodelist of ring0_addr; each node finds
// itself by its address), differing between nodes only in state_dir when
// the nodes share a mount namespace, and in Options.FileKeys.
func (c *Cluster) conf(n *Node) string {
	keys := map[string]string{
		"totem.version":                     "2",
		"totem.cluster_name":                "netcluster",
		"totem.transport":                   "knet",
		"totem.token":                       strconv.FormatInt(c.opts.Token.Milliseconds(), 10),
		"totem.crypto_cipher":               "none",
		"totem.crypto_hash":                 "none",
		"logging.to_stderr":                 "yes",
		"logging.to_logfile":                "no",
		"logging.to_syslog":                 "no",
		"logging.timestamp":                 "hires",
		"quorum.provider":                   "corosync_votequorum",
		"system.state_dir":                  n.stateInNode,
		"system.allow_knet_handle_fallback": "yes",
	}
	for _, over := range []map[string]string{c.opts.Keys, c.opts.FileKeys[int(n.ID)]} {
		for k, v := range over {
			if v == "" {
				delete(keys, k) // an empty value removes a default
				continue
			}
			keys[k] = v
		}
	}
	root := &section{}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		root.set(strings.Split(k, "."), keys[k])
	}
	nodelist := root.child("nodelist")
	for _, m := range c.Nodes {
		e := &section{name: "node"}
		e.set([]string{"nodeid"}, strconv.FormatUint(uint64(m.ID), 10))
		e.set([]string{"name"}, m.Name)
		e.set([]string{"ring0_addr"}, m.Addr)
		extra := c.opts.NodeKeys[int(m.ID)]
		ks := make([]string, 0, len(extra))
		for k := range extra {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			e.set(strings.Split(k, "."), extra[k])
		}
		nodelist.subs = append(nodelist.subs, e)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s of a netcluster of %d nodes (tests/netcluster)\n", n.Name, len(c.Nodes))
	for _, s := range root.subs {
		s.write(&b, 0)
	}
	return b.String()
}

// section is one brace block of corosync.conf, keys and sub-blocks in the
// order they were set (sub-blocks may repeat: nodelist's node).
type section struct {
	name string
	keys [][2]string
	subs []*section
}

func (s *section) child(name string) *section {
	for _, c := range s.subs {
		if c.name == name {
			return c
		}
	}
	c := &section{name: name}
	s.subs = append(s.subs, c)
	return c
}

func (s *section) set(path []string, value string) {
	if len(path) == 1 {
		for i := range s.keys {
			if s.keys[i][0] == path[0] {
				s.keys[i][1] = value
				return
			}
		}
		s.keys = append(s.keys, [2]string{path[0], value})
		return
	}
	s.child(path[0]).set(path[1:], value)
}

func (s *section) write(b *strings.Builder, depth int) {
	ind := strings.Repeat("\t", depth)
	fmt.Fprintf(b, "%s%s {\n", ind, s.name)
	for _, kv := range s.keys {
		fmt.Fprintf(b, "%s\t%s: %s\n", ind, kv[0], kv[1])
	}
	for _, c := range s.subs {
		c.write(b, depth+1)
	}
	fmt.Fprintf(b, "%s}\n", ind)
	if depth == 0 {
		b.WriteString("\n")
	}
}
