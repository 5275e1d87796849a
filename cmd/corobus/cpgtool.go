package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
)

// runCpg is corosync-cpgtool over the bus: the same flags, the same
// output. It speaks libcpg's messages to the node's cpg service (and
// libcfg's to its cfg service for the members' addresses), as
// corosync-cpgtool does through the gateway.
func runCpg(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var delim string
	var namesOnly, noEscape bool
	fs := newFlagSet(a, "cpg", "[-d DELIMITER] [-e] [-n] [-c FILE | --bus URL]",
		"Display the closed process groups and their members the way corosync-cpgtool does:\n"+
			"each group, then its members' pids, node ids and addresses.")
	nf.register(fs, true)
	fs.StringVar(&delim, "d", "", "`DELIMITER` between fields (one character): one line per member")
	fs.BoolVar(&noEscape, "e", false, "don't escape unprintable characters in group names")
	fs.BoolVar(&namesOnly, "n", false, "display only the group names")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("cpg takes no arguments (got %q)", fs.Args())
	}
	c, err := a.connect(nf, "corobus-cpg", 0)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := openComponent(ctx, c.nc, c.subjects, c.node, cpg.ComponentName)
	if err != nil {
		return fmt.Errorf("could not initialize corosync cpg API: %w", err)
	}
	defer s.Close()
	var d byte
	if delim != "" {
		d = delim[0]
	}
	typ := cpgwire.IterAll
	if namesOnly {
		typ = cpgwire.IterNameOnly
	}
	items, err := cpgIterate(ctx, s, typ)
	if err != nil {
		return err
	}
	p := cpgPrinter{w: a.stdout, delim: d, escape: !noEscape}
	if namesOnly {
		p.names(items)
		return nil
	}
	addrs := map[uint32]string{}
	if cs, err := openComponent(ctx, c.nc, c.subjects, c.node, cfg.ComponentName); err == nil {
		defer cs.Close()
		for _, it := range items {
			if _, ok := addrs[it.NodeID]; ok {
				continue
			}
			b, err := cs.call(ctx, cfg.EncodeNodeID(cfg.ReqGetNodeAddrs, it.NodeID))
			if err != nil {
				continue
			}
			if ips, code, err := cfg.DecodeNodeAddrs(b); err == nil && code == cswire.OK {
				var l []string
				for _, ip := range ips {
					l = append(l, ip.String())
				}
				addrs[it.NodeID] = strings.Join(l, " ")
			}
		}
	}
	p.members(items, addrs)
	return nil
}

// cpgIterate walks cpg_iteration_initialize/next/finalize.
func cpgIterate(ctx context.Context, s *compSession, typ uint32) ([]cpgwire.Description, error) {
	b, err := s.call(ctx, cpgwire.EncodeIterInit(typ, ""))
	if err != nil {
		return nil, err
	}
	r, err := cpgwire.DecodeResponse(cpgwire.ReqIterInit, b)
	if err != nil {
		return nil, err
	}
	if r.Error != cswire.OK {
		return nil, fmt.Errorf("cannot initialize cpg iterator error %d", r.Error)
	}
	var out []cpgwire.Description
	for {
		b, err := s.call(ctx, cpgwire.EncodeIterHandle(cpgwire.ReqIterNext, r.Handle))
		if err != nil {
			return nil, err
		}
		n, err := cpgwire.DecodeResponse(cpgwire.ReqIterNext, b)
		if err != nil {
			return nil, err
		}
		if n.Error == cswire.ErrNoSections {
			break
		}
		if n.Error != cswire.OK {
			return nil, fmt.Errorf("cpg iteration error %d", n.Error)
		}
		out = append(out, n.Desc)
	}
	_, _ = s.call(ctx, cpgwire.EncodeIterHandle(cpgwire.ReqIterFinalize, r.Handle))
	return out, nil
}

// cpgPrinter prints what corosync-cpgtool prints.
type cpgPrinter struct {
	w      io.Writer
	delim  byte
	escape bool
}

func (p cpgPrinter) group(n cpgwire.Name) string {
	if p.escape {
		return n.Escaped()
	}
	return string(n)
}

// names is corosync-cpgtool -n: one name a line, or, with a delimiter,
// every name followed by it on one line.
func (p cpgPrinter) names(items []cpgwire.Description) {
	for _, it := range items {
		sep := "\n"
		if p.delim != 0 {
			sep = string(p.delim)
		}
		fmt.Fprint(p.w, p.group(it.Group)+sep)
	}
	if p.delim != 0 {
		fmt.Fprintln(p.w)
	}
}

// members is corosync-cpgtool's full output: each group's name, then its
// members' pid, node id and addresses; with a delimiter, a header and one
// line per member.
func (p cpgPrinter) members(items []cpgwire.Description, addrs map[uint32]string) {
	if p.delim != 0 {
		fmt.Fprintf(p.w, "GRP_NAME%cPID%cNODEID\n", p.delim, p.delim)
	} else {
		fmt.Fprintf(p.w, "Group Name\t%10s\t%10s\n", "PID", "Node ID")
	}
	// As corosync-cpgtool: the previous group starts as the empty name,
	// so a first group named "" gets no heading line.
	var last cpgwire.Name
	for _, it := range items {
		if p.delim != 0 {
			fmt.Fprintf(p.w, "%s%c%d%c%d\n", p.group(it.Group), p.delim, it.PID, p.delim, it.NodeID)
			continue
		}
		if last != it.Group {
			fmt.Fprintln(p.w, p.group(it.Group))
			last = it.Group
		}
		fmt.Fprintf(p.w, "\t\t%10d\t%10d (%s)\n", it.PID, it.NodeID, addrs[it.NodeID])
	}
}
