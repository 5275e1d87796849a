package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cswire"
)

// runCmap is corosync-cmapctl over the bus: the same flags, the same
// output lines.
// cmapAction is what corosync-cmapctl's flags ask of a map: at most one of
// the actions is set; rest is the arguments after the flags (-s's TYPE
// VALUE, or the prefixes to list).
type cmapAction struct {
	get, set, del, delPrefix, track, trackPrefix, file, clear string
	rest                                                      []string
}

// cmapClearable are the arguments corosync-cmapctl's -C takes: the
// stats.clear.<what> key it sets.
var cmapClearable = []string{"knet", "totem", "ipc", "schedmiss", "all"}

func runCmap(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var act cmapAction
	var mapName string
	var quiet, showBinary bool
	fs := newFlagSet(a, "cmap", "[-b] [-q] [-m icmap|stats] [-g KEY | -s KEY TYPE VALUE | -d KEY | -D PREFIX | -t KEY | -T PREFIX | -p FILE | -C WHAT | PREFIX...] [-c FILE | --bus URL]",
		"Read and change a node's object database the way corosync-cmapctl does.\n"+
			"With no action, list every key (or the keys under each PREFIX argument); the status is 1\n"+
			"when nothing was listed (when no PREFIX had a key), as corosync-cmapctl's.\n"+
			"TYPE is one of u8 u16 u32 u64 i8 i16 i32 i64 flt dbl str bin; for bin, VALUE is a file (- for stdin).\n"+
			"A -p file holds lines `key type value`, `^key` (delete) or `^^prefix` (delete by prefix).")
	nf.register(fs, true)
	fs.StringVar(&act.get, "g", "", "print `KEY`")
	fs.StringVar(&act.set, "s", "", "set `KEY` (followed by TYPE VALUE)")
	fs.StringVar(&act.del, "d", "", "delete `KEY`")
	fs.StringVar(&act.delPrefix, "D", "", "delete every key under `PREFIX`")
	fs.StringVar(&act.track, "t", "", "print changes of `KEY` until interrupted")
	fs.StringVar(&act.trackPrefix, "T", "", "print changes of every key under `PREFIX` until interrupted")
	fs.StringVar(&act.file, "p", "", "apply the settings in `FILE`")
	fs.StringVar(&mapName, "m", "icmap", "the `MAP`: icmap (or default) or stats")
	fs.StringVar(&act.clear, "C", "", "reset the statistics `WHAT` counts: knet, totem, ipc, schedmiss or all (sets stats.clear.WHAT)")
	fs.BoolVar(&quiet, "q", false, "with -g, print only the value")
	fs.BoolVar(&showBinary, "b", false, "show binary values")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	switch mapName {
	case "icmap", "stats":
	case "default": // corosync-cmapctl's other name for icmap
		mapName = "icmap"
	default:
		return usagef("-m %s: expected icmap, default or stats", mapName)
	}
	if act.clear != "" {
		if !slices.Contains(cmapClearable, act.clear) {
			return usagef("argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'")
		}
		// corosync-cmapctl forces the stats map, where the key is.
		mapName = "stats"
	}
	nc, err := a.connect(nf, "corobus-cmap", 0)
	if err != nil {
		return err
	}
	defer nc.Close()
	act.rest = fs.Args()
	p := cmapPrinter{w: a.stdout, quiet: quiet, showBinary: showBinary}
	if mapName == "stats" {
		return cmapStats(ctx, nc, p, act)
	}
	c := client.New(nc.nc, nc.subjects, nc.node)

	switch {
	case act.get != "":
		v, err := c.Get(ctx, act.get)
		if err != nil {
			return fmt.Errorf("can't get value of %s: %s", act.get, csReason(err))
		}
		p.print(act.get, v)
	case act.set != "":
		if len(act.rest) != 2 {
			return usagef("-s %s: expected TYPE VALUE", act.set)
		}
		v, err := cmapValue(a, act.rest[0], act.rest[1])
		if err != nil {
			return err
		}
		if err := c.Set(ctx, act.set, v); err != nil {
			return fmt.Errorf("can't set key %s: %s", act.set, csReason(err))
		}
	case act.del != "":
		if err := c.Delete(ctx, act.del); err != nil {
			return fmt.Errorf("can't delete key %s: %s", act.del, csReason(err))
		}
	case act.delPrefix != "":
		if _, err := c.DeletePrefix(ctx, act.delPrefix); err != nil {
			return fmt.Errorf("can't delete keys with prefix %s: %s", act.delPrefix, csReason(err))
		}
	case act.track != "" || act.trackPrefix != "":
		key, prefix := act.track, false
		if act.trackPrefix != "" {
			key, prefix = act.trackPrefix, true
		}
		events := make(chan client.Change, 1024)
		stop, err := c.Track(key, prefix, func(ch client.Change) { events <- ch })
		if err != nil {
			return err
		}
		defer stop()
		if err := nc.nc.Flush(); err != nil {
			return fmt.Errorf("subscribing for changes: %w", err)
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case ch := <-events:
				v := ch.New
				if ch.Kind == "delete" {
					v = ch.Old
				}
				fmt.Fprintf(a.stdout, "%s> ", ch.Kind)
				if v != nil {
					p.print(ch.Key, *v)
				} else {
					fmt.Fprintln(a.stdout, ch.Key)
				}
			}
		}
	case act.file != "":
		return cmapLoad(ctx, a, c, act.file)
	default:
		prefixes := act.rest
		if len(prefixes) == 0 {
			prefixes = []string{""}
		}
		empty := 0
		for _, pre := range prefixes {
			entries, err := c.List(ctx, pre)
			if err != nil {
				return fmt.Errorf("can't list keys with prefix %s: %s", pre, csReason(err))
			}
			if len(entries) == 0 {
				empty++
			}
			for _, e := range entries {
				t, _ := objdb.ParseType(e.Type)
				p.print(e.Key, objdb.Value{Type: t, Data: e.Data})
			}
		}
		return cmapListStatus(empty, len(prefixes))
	}
	return nil
}

// cmapListStatus is a listing's exit status as corosync-cmapctl's: 1,
// silently, when no prefix had a key (scripts test a prefix's existence
// so), else 0. One prefix with keys among several is enough.
func cmapListStatus(empty, prefixes int) error {
	if empty > 0 && empty >= prefixes {
		return exitStatus(1)
	}
	return nil
}

// cmapStats serves -m stats: the node's stats map, computed by its IPC
// gateway and totem when asked (docs/objdb.md), as corosync-cmapctl -m
// stats lists it — read-only but for stats.clear.*, and not tracked.
func cmapStats(ctx context.Context, nc *nodeClient, p cmapPrinter, act cmapAction) error {
	read := cmap.MergeStats(cmap.BusStats(nc.nc, nc.subjects, nc.node), cmap.TotemStats(nc.nc, nc.subjects, nc.node))
	switch {
	case act.clear != "":
		key := "stats.clear." + act.clear
		if err := cmap.BusStatsClear(nc.nc, nc.subjects, nc.node).Clear(ctx, key); err != nil {
			return fmt.Errorf("can't set key %s: %s", key, csReason(err))
		}
		return nil
	case act.get != "":
		v, err := read.Get(ctx, act.get)
		if err != nil {
			return fmt.Errorf("can't get value of %s: %s", act.get, csReason(err))
		}
		p.print(act.get, objdb.Value{Type: objdb.Type(v.Type), Data: v.Data})
		return nil
	case act.set != "":
		// stats.clear.* resets counters, as corosync's; the rest is
		// read-only.
		if err := cmap.BusStatsClear(nc.nc, nc.subjects, nc.node).Clear(ctx, act.set); err != nil {
			return fmt.Errorf("can't set key %s: %s", act.set, csReason(err))
		}
		return nil
	case act.del != "" || act.delPrefix != "" || act.file != "":
		return fmt.Errorf("the stats map is read-only: %s", cswire.ErrAccess)
	case act.track != "" || act.trackPrefix != "":
		return fmt.Errorf("the stats map cannot be tracked: %s", cswire.ErrNotSupported)
	}
	prefixes := act.rest
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	empty := 0
	for _, pre := range prefixes {
		entries, err := read(ctx, pre)
		if err != nil {
			return fmt.Errorf("can't list keys with prefix %s: %s", pre, csReason(err))
		}
		if len(entries) == 0 {
			empty++
		}
		for _, e := range entries {
			p.print(e.Key, objdb.Value{Type: objdb.Type(e.Value.Type), Data: e.Value.Data})
		}
	}
	return cmapListStatus(empty, len(prefixes))
}

// cmapPrinter prints `key (type) = value` lines exactly as
// corosync-cmapctl does.
type cmapPrinter struct {
	w                 io.Writer
	quiet, showBinary bool
}

func (p cmapPrinter) print(key string, v objdb.Value) {
	if v.Type == objdb.Binary {
		if p.quiet {
			fmt.Fprintln(p.w, cmapBinary(v.Data))
			return
		}
		fmt.Fprintf(p.w, "%s (bin)", key)
		if p.showBinary {
			if len(v.Data) == 0 {
				fmt.Fprint(p.w, " = *empty*")
			} else {
				fmt.Fprintf(p.w, " = %s", cmapBinary(v.Data))
			}
		}
		fmt.Fprintln(p.w)
		return
	}
	if p.quiet {
		fmt.Fprintln(p.w, v.String())
		return
	}
	fmt.Fprintf(p.w, "%s (%s) = %s\n", key, v.Type, v.String())
}

// cmapBinary escapes binary values as corosync-cmapctl -b does.
func cmapBinary(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		switch {
		case c == '\\':
			s.WriteString(`\\`)
		case c >= ' ' && c < 0x7f:
			s.WriteByte(c)
		default:
			fmt.Fprintf(&s, `\x%02X`, c)
		}
	}
	return s.String()
}

// cmapValue parses a -s value; bin values come from a file, as in
// corosync-cmapctl.
func cmapValue(a *app, typ, value string) (objdb.Value, error) {
	t, err := objdb.ParseType(typ)
	if err != nil {
		return objdb.Value{}, usagef("%v", err)
	}
	if t == objdb.Binary {
		var b []byte
		if value == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(value)
		}
		if err != nil {
			return objdb.Value{}, fmt.Errorf("reading the binary value: %w", err)
		}
		return objdb.Value{Type: t, Data: b}, nil
	}
	v, err := objdb.ParseValue(t, value)
	if err != nil {
		return objdb.Value{}, usagef("%v", err)
	}
	return v, nil
}

// cmapLoad applies a -p file: `key type value` sets, `^key` deletes,
// `^^prefix` deletes by prefix. Lines starting with # are comments.
func cmapLoad(ctx context.Context, a *app, c *client.Client, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		switch {
		case strings.HasPrefix(fields[0], "^^"):
			if _, err := c.DeletePrefix(ctx, fields[0][2:]); err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
		case strings.HasPrefix(fields[0], "^"):
			if err := c.Delete(ctx, fields[0][1:]); err != nil && !errors.Is(err, objdb.ErrNotExist) {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
		default:
			if len(fields) < 3 {
				return fmt.Errorf("%s:%d: expected `key type value`, found %q", path, line, text)
			}
			v, err := cmapValue(a, fields[1], strings.Join(fields[2:], " "))
			if err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
			if err := c.Set(ctx, fields[0], v); err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
		}
	}
	return sc.Err()
}

// csReason says why an objdb call failed: the reason objdb gave, which
// ends with its cs_error_t name (key "ab": shorter than 3 characters:
// CS_ERR_NAME_TOO_LONG), or the name with the error that carried it.
func csReason(err error) string {
	code, msg := cswire.Code(err).String(), err.Error()
	if strings.HasSuffix(msg, code) {
		return msg
	}
	return code + " (" + msg + ")"
}
