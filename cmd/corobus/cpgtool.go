package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
)

// runCpg is corosync-cpgtool over the bus: the same command line, read
// as the tool's getopt reads it, the same output and messages. It speaks
// libcpg's messages to the node's cpg service (and libcfg's to its cfg
// service for the members' addresses), as corosync-cpgtool does through
// the gateway.
func runCpg(ctx context.Context, a *app, args []string) error {
	cmd, nf, err := parseCpg(a, args)
	if err != nil {
		return err
	}
	c, err := a.connect(nf, "corobus-cpg", 0)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := openComponent(ctx, c.nc, c.subjects, c.node, cpg.ComponentName)
	if err != nil {
		return toolFailure(a.stderr, "Could not initialize corosync cpg API: %v", err)
	}
	defer s.Close()
	// As corosync-cpgtool: its cfg handle (for the members' addresses) is
	// opened before anything is printed, -n included, and a failure to
	// open it is the tool's failure, not a listing without addresses.
	cs, err := openComponent(ctx, c.nc, c.subjects, c.node, cfg.ComponentName)
	if err != nil {
		return toolFailure(a.stderr, "Could not initialize corosync configuration API: %v", err)
	}
	defer cs.Close()
	typ := cpgwire.IterAll
	if cmd.namesOnly {
		typ = cpgwire.IterNameOnly
	}
	items, err := cpgIterate(ctx, s, typ)
	if err != nil {
		return err
	}
	p := cpgPrinter{w: a.stdout, delim: cmd.delim, escape: !cmd.noEscape}
	if cmd.namesOnly {
		p.names(items)
		return nil
	}
	addrs := map[uint32]string{}
	for _, it := range items {
		if _, ok := addrs[it.NodeID]; ok {
			continue
		}
		// A node whose addresses cannot be had prints none, as with the
		// tool.
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
	p.members(items, addrs)
	return nil
}

// cpgCommand is corosync-cpgtool's command line, read.
type cpgCommand struct {
	delim               byte // 0: none
	namesOnly, noEscape bool
}

// parseCpg reads corosync-cpgtool's command line.
func parseCpg(a *app, args []string) (cpgCommand, nodeFlags, error) {
	var cmd cpgCommand
	var nf nodeFlags
	var delimArg string
	fs := newFlagSet(a, "cpg", "[-d DELIMITER] [-e] [-n] [-h] [-c FILE | --bus URL]",
		"Display the closed process groups and their members the way corosync-cpgtool does:\n"+
			"each group, then its members' pids, node ids and addresses; its command line (read as\n"+
			"its getopt reads it: operands are ignored, -d's first character is the delimiter and an\n"+
			"empty -d changes nothing), its output, messages and exit statuses.\n"+
			"Unlike corosync-cpgtool, a command-line mistake is prefixed with `corobus cpg: `.")
	nf.register(fs, true)
	fs.StringVar(&delimArg, "d", "", "`DELIMITER` between fields (its first character): one line per member")
	fs.BoolVar(&cmd.noEscape, "e", false, "don't escape unprintable characters in group names")
	fs.BoolVar(&cmd.namesOnly, "n", false, "display only the group names")
	// corosync-cpgtool ignores its operands: `corosync-cpgtool foo` lists
	// the groups, and so does this verb.
	_, err := parseTool(a, fs, args, func(name string) error {
		if name == "d" && delimArg != "" {
			cmd.delim = delimArg[0]
		}
		return nil
	})
	return cmd, nf, err
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
	if !p.escape {
		return string(n)
	}
	if !cCharIsSigned() {
		return n.Escaped()
	}
	// corosync-cpgtool escapes a byte that is not printable ASCII as the C
	// char it holds it in, printed with %02X: where char is signed, a byte
	// of 0x80 or more is a negative number, printed \xFFFFFFC3 (a UTF-8
	// name's bytes, say), and scripts that read its output see that.
	b := make([]byte, 0, len(n))
	for i := 0; i < len(n); i++ {
		if c := n[i]; c >= 0x80 {
			b = fmt.Appendf(b, "\\x%08X", uint32(int32(int8(c))))
		} else {
			b = append(b, cpgwire.Name(n[i:i+1]).Escaped()...)
		}
	}
	return string(b)
}

// cCharIsSigned tells whether C's char is signed on this machine's
// architecture (x86; not arm64, ppc64le, s390x, riscv64), as Debian's
// corosync-cpgtool is built for it.
func cCharIsSigned() bool {
	return runtime.GOARCH == "amd64" || runtime.GOARCH == "386"
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
