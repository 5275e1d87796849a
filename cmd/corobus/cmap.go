package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cmap"
	"github.com/corobus/corobus/services/cswire"
)

// cmapCommand is what corosync-cmapctl's command line asks: its action
// (the last one given, as the tool takes it), the map, and the operands
// (the keys or prefixes, or -s's KEY TYPE VALUE).
type cmapCommand struct {
	action            cmapAction
	trackPrefix       bool
	mapName           string
	clear, file       string
	quiet, showBinary bool
	args              []string
}

type cmapAction int

const (
	cmapList cmapAction = iota
	cmapGet
	cmapSet
	cmapDelete
	cmapDeletePrefix
	cmapTrack
	cmapLoadFile
	cmapClear
)

// cmapClearable are the arguments corosync-cmapctl's -C takes: the
// stats.clear.<what> key it sets.
var cmapClearable = []string{"knet", "totem", "ipc", "schedmiss", "all"}

// runCmap is corosync-cmapctl over the bus: the same command line, read
// the same way (getopt), the same output lines, messages and statuses.
func runCmap(ctx context.Context, a *app, args []string) error {
	cmd, nf, err := parseCmap(a, args)
	if err != nil {
		return err
	}
	nc, err := a.connect(nf, "corobus-cmap", 0)
	if err != nil {
		return err
	}
	defer nc.Close()
	p := cmapPrinter{w: a.stdout, quiet: cmd.quiet, showBinary: cmd.showBinary}
	if cmd.mapName == "stats" {
		return cmapStats(ctx, a, nc, p, cmd)
	}
	c := client.New(nc.nc, nc.subjects, nc.node)

	switch cmd.action {
	case cmapGet:
		for _, key := range cmd.args {
			v, err := c.Get(ctx, key)
			if err != nil {
				return toolFailure(a.stderr, "Can't get key %s. Error %s", key, csError(key, err))
			}
			p.print(key, v)
		}
	case cmapSet:
		key := cmd.args[0]
		v, err := cmapValue(a, cmd.args[1], cmd.args[2])
		if err != nil {
			return err
		}
		if err := c.Set(ctx, key, v); err != nil {
			return toolFailure(a.stderr, "Failed to set key %s. Error %s", key, csError(key, err))
		}
	case cmapDelete:
		for _, key := range cmd.args {
			if err := c.Delete(ctx, key); err != nil {
				return toolFailure(a.stderr, "Can't delete key %s. Error %s", key, csError(key, err))
			}
		}
	case cmapDeletePrefix:
		for _, prefix := range cmd.args {
			if err := cmapDeleteWithPrefix(ctx, a, c, prefix); err != nil {
				return err
			}
		}
	case cmapTrack:
		events := make(chan client.Change, 1024)
		for _, key := range cmd.args {
			stop, err := c.Track(key, cmd.trackPrefix, func(ch client.Change) { events <- ch })
			if err != nil {
				return toolFailure(a.stderr, "Failed to add tracking function. Error %s", csError(key, err))
			}
			defer stop()
		}
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
	case cmapLoadFile:
		return cmapLoad(ctx, a, c, cmd.file)
	default:
		prefixes := cmd.args
		if len(prefixes) == 0 {
			prefixes = []string{""}
		}
		empty := 0
		for _, pre := range prefixes {
			entries, err := c.List(ctx, pre)
			if err != nil {
				return toolFailure(a.stderr, "Failed to initialize iteration. Error %s", csError(pre, err))
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

// parseCmap reads corosync-cmapctl's command line.
func parseCmap(a *app, args []string) (cmapCommand, nodeFlags, error) {
	var nf nodeFlags
	cmd := cmapCommand{trackPrefix: true, mapName: "icmap"}
	var mapArg, clearArg, fileArg string
	fs := newFlagSet(a, "cmap", "[-b] [-q] [-m icmap|stats] [-g KEY... | -s KEY TYPE VALUE | -d KEY... | -D PREFIX... | -t KEY... | -T PREFIX... | -p FILE | -C WHAT | PREFIX...] [-c FILE | --bus URL]",
		"Read and change a node's object database the way corosync-cmapctl does: its command line\n"+
			"(options and operands in any order, the last action given wins, -- before a negative\n"+
			"value: -s KEY i8 -- -100), its output, its messages and its exit statuses.\n"+
			"With no action, list every key (or the keys under each PREFIX argument); the status is 1\n"+
			"when nothing was listed (when no PREFIX had a key), as corosync-cmapctl's.\n"+
			"TYPE is one of u8 u16 u32 u64 i8 i16 i32 i64 flt dbl str bin; for bin, VALUE is a file (- for stdin).\n"+
			"A -p file holds lines `key type value`, `^key` (delete) or `^^prefix` (delete by prefix).\n"+
			"Unlike corosync-cmapctl: -t and -T follow changes until interrupted (they read no q from\n"+
			"stdin); a number followed by other characters (12abc) is refused, where the tool takes 12;\n"+
			"a failure gives objdb's reason after the cs_error_t name when it has one; a -p FILE that\n"+
			"cannot be opened exits 1 (the tool: 0); a command-line mistake is prefixed with `corobus cmap: `.")
	nf.register(fs, true)
	fs.Bool("g", false, "print each KEY")
	fs.Bool("s", false, "set KEY (operands KEY TYPE VALUE)")
	fs.Bool("d", false, "delete each KEY")
	fs.Bool("D", false, "delete every key under each PREFIX")
	fs.Bool("t", false, "print changes of each KEY until interrupted")
	fs.Bool("T", false, "print changes of every key under each PREFIX until interrupted")
	fs.StringVar(&fileArg, "p", "", "apply the settings in `FILE`")
	fs.StringVar(&mapArg, "m", "icmap", "the `MAP`: icmap (or default) or stats")
	fs.StringVar(&clearArg, "C", "", "reset the statistics `WHAT` counts: knet, totem, ipc, schedmiss or all (sets stats.clear.WHAT)")
	fs.BoolVar(&cmd.quiet, "q", false, "with -g, print only the value")
	fs.BoolVar(&cmd.showBinary, "b", false, "show binary values")
	rest, err := parseTool(a, fs, args, func(name string) error {
		switch name {
		case "g":
			cmd.action = cmapGet
		case "s":
			cmd.action = cmapSet
		case "d":
			cmd.action = cmapDelete
		case "D":
			cmd.action = cmapDeletePrefix
		case "t":
			// -T after it does not track by prefix again, in the tool.
			cmd.action, cmd.trackPrefix = cmapTrack, false
		case "T":
			cmd.action = cmapTrack
		case "p":
			cmd.action, cmd.file = cmapLoadFile, fileArg
		case "C":
			if !slices.Contains(cmapClearable, clearArg) {
				return errors.New("argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'")
			}
			// corosync-cmapctl forces the stats map, where the key is.
			cmd.action, cmd.clear, cmd.mapName = cmapClear, clearArg, "stats"
		case "m":
			switch mapArg {
			case "icmap", "default": // default: corosync-cmapctl's other name for icmap
				cmd.mapName = "icmap"
			case "stats":
				cmd.mapName = "stats"
			default:
				return errors.New("invalid map name, must be 'default', 'icmap' or 'stats'")
			}
		}
		return nil
	})
	if err != nil {
		return cmd, nf, err
	}
	cmd.args = rest
	if len(rest) == 0 && cmd.action != cmapLoadFile && cmd.action != cmapClear && cmd.action != cmapList {
		return cmd, nf, usagef("Expected key after options")
	}
	if cmd.action == cmapSet && len(rest) < 3 {
		return cmd, nf, usagef("At least 3 parameters are expected for set")
	}
	return cmd, nf, nil
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
func cmapStats(ctx context.Context, a *app, nc *nodeClient, p cmapPrinter, cmd cmapCommand) error {
	read := cmap.MergeStats(cmap.BusStats(nc.nc, nc.subjects, nc.node), cmap.TotemStats(nc.nc, nc.subjects, nc.node))
	switch cmd.action {
	case cmapClear, cmapSet:
		// stats.clear.* resets counters, as corosync's; the rest is
		// read-only.
		key := "stats.clear." + cmd.clear
		if cmd.action == cmapSet {
			key = cmd.args[0]
		}
		if err := cmap.BusStatsClear(nc.nc, nc.subjects, nc.node).Clear(ctx, key); err != nil {
			return toolFailure(a.stderr, "Failed to set key %s. Error %s", key, csError(key, err))
		}
		return nil
	case cmapGet:
		for _, key := range cmd.args {
			v, err := read.Get(ctx, key)
			if err != nil {
				return toolFailure(a.stderr, "Can't get key %s. Error %s", key, csError(key, err))
			}
			p.print(key, objdb.Value{Type: objdb.Type(v.Type), Data: v.Data})
		}
		return nil
	case cmapDelete, cmapDeletePrefix, cmapLoadFile:
		return fmt.Errorf("the stats map is read-only: %s", cswire.ErrAccess)
	case cmapTrack:
		return fmt.Errorf("the stats map cannot be tracked: %s", cswire.ErrNotSupported)
	}
	prefixes := cmd.args
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	empty := 0
	for _, pre := range prefixes {
		entries, err := read(ctx, pre)
		if err != nil {
			return toolFailure(a.stderr, "Failed to initialize iteration. Error %s", csError(pre, err))
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
		// -q drops "KEY (" only, for a bin value too: the tool prints
		// "bin)" (and " = VALUE" with -b), and so does corobus (until
		// 3 Dec it printed the value alone).
		if !p.quiet {
			fmt.Fprintf(p.w, "%s (", key)
		}
		fmt.Fprint(p.w, "bin)")
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

// cmapValue parses a -s value as corosync-cmapctl does — integers in base
// 10 (sscanf's %d, leading blanks and a sign allowed), then checked
// against the type's range — and refuses it with the tool's words; bin
// values come from a file (- for stdin).
func cmapValue(a *app, typ, value string) (objdb.Value, error) {
	t, err := objdb.ParseType(typ)
	if err != nil {
		return objdb.Value{}, toolFailure(a.stderr, "Unknown type %s", typ)
	}
	invalid := func() (objdb.Value, error) {
		return objdb.Value{}, toolFailure(a.stderr, "%s is not valid %s type value", value, typ)
	}
	outOfRange := func() (objdb.Value, error) {
		return objdb.Value{}, toolFailure(a.stderr, "%s is not valid %s integer", value, typ)
	}
	trimmed := strings.TrimLeft(value, " \t\n\v\f\r")
	switch {
	case t == objdb.Binary:
		var b []byte
		if value == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(value)
		}
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return objdb.Value{}, toolFailure(a.stderr, "Can't open input file: %s", errnoText(err))
		}
		return objdb.Value{Type: t, Data: b}, nil
	case t == objdb.String:
		return objdb.Value{Type: t, Data: []byte(value)}, nil
	case !t.Integer():
		if _, err := strconv.ParseFloat(trimmed, t.Size()*8); err != nil {
			return invalid()
		}
	case t == objdb.Int8 || t == objdb.Int16 || t == objdb.Int32 || t == objdb.Int64:
		if _, err := strconv.ParseInt(trimmed, 10, t.Size()*8); err != nil {
			if !errors.Is(err, strconv.ErrRange) {
				return invalid()
			}
			return outOfRange()
		}
		trimmed = strings.TrimPrefix(trimmed, "+")
	default:
		if _, err := strconv.ParseUint(strings.TrimPrefix(trimmed, "+"), 10, t.Size()*8); err != nil {
			// A negative number is out of range: strtoull takes it
			// and wraps it beyond every unsigned type but u64.
			if _, serr := strconv.ParseInt(trimmed, 10, 64); !errors.Is(err, strconv.ErrRange) && serr != nil {
				return invalid()
			}
			return outOfRange()
		}
		trimmed = strings.TrimPrefix(trimmed, "+")
	}
	v, err := objdb.ParseValue(t, trimmed)
	if err != nil {
		return invalid()
	}
	return v, nil
}

// errnoText is strerror's text of a system call's error, as perror
// prints it: "No such file or directory".
func errnoText(err error) string {
	s := err.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// cmapLoad applies a -p file as corosync-cmapctl reads one: a line is
// `key type value` (set, as -s; words are split at spaces only, so a str
// value is one word), `^key` (delete, as -d) or `^^prefix` (delete by
// prefix, as -D); a line whose first non-blank is # is a comment. A delete
// that fails is said and the file goes on; a set that fails ends it, as
// in the tool. Unlike the tool, a file that cannot be opened exits 1 (the
// tool says so and exits 0).
func cmapLoad(ctx context.Context, a *app, c *client.Client, path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return toolFailure(a.stderr, "Couldn't open file.: %s", errnoText(err))
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimLeft(sc.Text(), " \t")
		if text == "" || text[0] == '#' {
			continue
		}
		var words []string
		for _, w := range strings.Split(text, " ") {
			if w != "" {
				words = append(words, w)
			}
		}
		if len(words) == 0 {
			continue
		}
		key := words[0]
		switch {
		case strings.HasPrefix(key, "^^"):
			if err := cmapDeleteWithPrefix(ctx, a, c, key[2:]); err != nil {
				return err
			}
		case strings.HasPrefix(key, "^"):
			if err := c.Delete(ctx, key[1:]); err != nil {
				fmt.Fprintf(a.stderr, "Can't delete key %s. Error %s\n", key[1:], csError(key[1:], err))
			}
		default:
			if len(words) < 3 {
				return toolFailure(a.stderr, "Both type and value for key %s are required", key)
			}
			v, err := cmapValue(a, words[1], words[2])
			if err != nil {
				return err
			}
			if err := c.Set(ctx, key, v); err != nil {
				return toolFailure(a.stderr, "Failed to set key %s. Error %s", key, csError(key, err))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// cmapDeleteWithPrefix is -D as the tool does it: every key under prefix
// deleted one by one, a failure said and the next key tried; the status
// stays 0 but when the keys cannot be listed.
func cmapDeleteWithPrefix(ctx context.Context, a *app, c *client.Client, prefix string) error {
	entries, err := c.List(ctx, prefix)
	if err != nil {
		return toolFailure(a.stderr, "Failed to initialize iteration. Error %s", csError(prefix, err))
	}
	for _, e := range entries {
		if err := c.Delete(ctx, e.Key); err != nil {
			fmt.Fprintf(a.stderr, "Can't delete key %s. Error %s\n", e.Key, csError(e.Key, err))
		}
	}
	return nil
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

// csError is what corosync-cmapctl prints after "Error ": the cs_error_t
// name (cs_strerror), then objdb's reason in parentheses when it says
// more than the name and the key (`key "ab": shorter than 3 characters`).
func csError(key string, err error) string {
	code := cswire.Code(err).String()
	reason := strings.TrimSuffix(strings.TrimSuffix(err.Error(), code), ": ")
	reason = strings.TrimSuffix(reason, ":")
	if reason == "" || reason == code || reason == "key "+key {
		return code
	}
	return code + " (" + reason + ")"
}
