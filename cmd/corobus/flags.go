package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/corobus/corobus/config"
)

// nodeFlags say which node a command is about: the embedded default with no
// flag, -c FILE for the node FILE configures, --bus URL for any node.
type nodeFlags struct {
	file      string
	overrides multiFlag
	busURL    string
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (n *nodeFlags) register(fs *flag.FlagSet, withBus bool) {
	fs.StringVar(&n.file, "c", "", "configuration `file` (corosync.conf syntax, or .yaml); default: the embedded one-node default (a verb that asks a node: the file of the node running in this network namespace, if any)")
	fs.StringVar(&n.file, "config", "", "same as -c")
	fs.Var(&n.overrides, "o", "override a configuration key: `key=value` (repeatable)")
	if withBus {
		fs.StringVar(&n.busURL, "bus", "", "bus `URL` of any node (nats://TOKEN@host:port); overrides -c")
	}
}

func (n *nodeFlags) load(a *app) (*config.Config, error) {
	return config.Load(config.Options{File: n.file, Environ: a.environ, Overrides: n.overrides})
}

// loadRunning is load for a client verb: with neither -c nor --bus, the
// configuration of the node running in this network namespace
// (whereis.go), its overrides then this command's; none running: the
// embedded default, as load.
func (n *nodeFlags) loadRunning(a *app) (*config.Config, error) {
	if n.file != "" || n.busURL != "" {
		return n.load(a)
	}
	w, err := findRunning()
	if err != nil {
		return n.load(a)
	}
	return config.Load(config.Options{File: w.File, Environ: a.environ, Overrides: append(w.Overrides, n.overrides...)})
}

// newFlagSet builds a flag set whose --help prints a summary line first and
// whose errors go to the app's stderr.
func newFlagSet(a *app, name, synopsis, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: corobus %s %s\n\n%s\n", name, synopsis, summary)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(w, "\nflags:\n")
			printFlags(w, fs)
		}
	}
	return fs
}

// printFlags lists fs's flags spelled as the usage lines spell them — a
// one-letter flag with one dash (-c FILE), a word with two (--bus URL) —
// an alias ("same as -c") on its flag's line, the argument's name in
// capitals, and a non-zero default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	spell := func(name string) string {
		if len(name) == 1 {
			return "-" + name
		}
		return "--" + name
	}
	aliases := map[string][]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if of, ok := strings.CutPrefix(f.Usage, "same as -"); ok {
			aliases[strings.TrimLeft(of, "-")] = append(aliases[strings.TrimLeft(of, "-")], f.Name)
		}
	})
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, "same as -") {
			return
		}
		names := []string{spell(f.Name)}
		for _, a := range aliases[f.Name] {
			names = append(names, spell(a))
		}
		arg, usage := flag.UnquoteUsage(f)
		head := strings.Join(names, ", ")
		if arg != "" {
			if strings.Trim(arg, "abcdefghijklmnopqrstuvwxyz") == "" {
				arg = strings.ToUpper(arg) // file → FILE, as the usage lines say
			}
			head += " " + arg
		}
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "[]" && d != "0s" {
			usage += fmt.Sprintf(" (default %s)", d)
		}
		fmt.Fprintf(w, "  %s\n    \t%s\n", head, usage)
	})
}

// parse parses the flags of a verb that takes no operands, sending --help
// to stdout (so `corobus x --help | less` works) and turning bad flags and
// any operand into usage errors. Go's flag package stops at the first
// operand and leaves the rest unread: until 3 Dec `corobus up node.conf -o
// totem.token=3000` started the embedded default, without the file and
// without the override, and said nothing.
func parse(a *app, fs *flag.FlagSet, args []string) error {
	if err := parseFlags(a, fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return nil
	}
	op := fs.Arg(0)
	if st, err := os.Stat(op); (err == nil && st.Mode().IsRegular()) || strings.HasSuffix(op, ".conf") ||
		strings.HasSuffix(op, ".yaml") || strings.HasSuffix(op, ".yml") {
		return usagef("unexpected argument %q: a configuration file goes after -c (corobus %s -c %s)", op, fs.Name(), op)
	}
	return usagef("unexpected argument %q (corobus %s --help lists the flags)", op, fs.Name())
}

// parseFlags is parse for a verb that takes operands: they are left in
// fs.Args().
func parseFlags(a *app, fs *flag.FlagSet, args []string) error {
	for _, arg := range args {
		if arg == "-h" || arg == "--help" || arg == "-help" {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// parseInterspersed is parse for a verb whose operands may come before
// its flags: `corobus sub totem.hb --count 1`, `corobus objctl totem -l`,
// as the nats CLI and corosync's tools (getopt) take them. Go's flag
// package stops at the first operand, and the flags after it were taken
// for more operands without a word: two more subjects to follow, two more
// objects to list. Flags are read wherever they are until `--`, after
// which every word is an operand; the operands are returned in order.
func parseInterspersed(a *app, fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := parseFlags(a, fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return operands, nil
		}
		if read := len(args) - len(rest); read > 0 && args[read-1] == "--" {
			return append(operands, rest...), nil
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
}

// queryFlags are the flags of the verbs that ask one node something:
// which node to reach (nodeFlags), --json, and --node to ask another
// node of the cluster through it.
type queryFlags struct {
	nodeFlags
	json bool
	node uint
}

func (q *queryFlags) register(fs *flag.FlagSet, jsonUsage, nodeUsage string) {
	q.nodeFlags.register(fs, true)
	fs.BoolVar(&q.json, "json", false, jsonUsage)
	fs.UintVar(&q.node, "node", 0, nodeUsage+" (a node `ID`)")
}

// printJSON writes v indented, as the --json of every verb prints.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// capitalize starts a one-line summary ("the object database: …") as the
// sentence a --help prints it in.
func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}
