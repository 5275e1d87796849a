package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// getopt parses args the way glibc's getopt_long parses the command line
// of corosync-cmapctl, -quorumtool and -cfgtool, so that their verbs take
// a command line the tool takes and read it the same:
//
//   - options and operands may mix: an option after an operand is still
//     an option (`-g KEY -q`), and so is `-100` after `-s KEY i8`: an
//     invalid option, as the tool says; `--` ends the options (`-s KEY i8
//     -- -100`);
//   - one-letter options cluster (`-bs`), and take their argument joined
//     or as the next word (`-kN`, `-k N`);
//   - a word is a long option only with two dashes (`--json`,
//     `--bus=URL`): `-json` is -j -s -o -n.
//
// Each option is set on fs in command-line order, then handed to each (nil
// for none), so that a verb sees its actions in order: the tools act on
// the last one given. The operands are returned. A mistake is reported in
// glibc's words ("invalid option -- 'x'") as a getoptError; each's errors
// are returned as they are.
func getopt(fs *flag.FlagSet, args []string, each func(name string) error) ([]string, error) {
	var operands []string
	set := func(f *flag.Flag, value string) error {
		if err := fs.Set(f.Name, value); err != nil {
			return fmt.Errorf("invalid argument %q for %s: %v", value, spellFlag(f.Name), err)
		}
		if each != nil {
			return each(f.Name)
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return append(operands, args[i+1:]...), nil
		case strings.HasPrefix(arg, "--"):
			name, value, hasValue := strings.Cut(arg[2:], "=")
			f := fs.Lookup(name)
			if f == nil || len(name) == 1 {
				return nil, getoptError("unrecognized option '" + arg + "'")
			}
			if isBoolFlag(f) {
				if hasValue {
					return nil, getoptError("option '--" + name + "' doesn't allow an argument")
				}
				value = "true"
			} else if !hasValue {
				if i+1 == len(args) {
					return nil, getoptError("option '--" + name + "' requires an argument")
				}
				i++
				value = args[i]
			}
			if err := set(f, value); err != nil {
				return nil, err
			}
		case len(arg) > 1 && arg[0] == '-':
			for j := 1; j < len(arg); j++ {
				c := arg[j : j+1]
				f := fs.Lookup(c)
				if f == nil {
					return nil, getoptError("invalid option -- '" + c + "'")
				}
				if isBoolFlag(f) {
					if err := set(f, "true"); err != nil {
						return nil, err
					}
					continue
				}
				value := arg[j+1:]
				if value == "" {
					if i+1 == len(args) {
						return nil, getoptError("option requires an argument -- '" + c + "'")
					}
					i++
					value = args[i]
				}
				if err := set(f, value); err != nil {
					return nil, err
				}
				break
			}
		default:
			operands = append(operands, arg)
		}
	}
	return operands, nil
}

// getoptError is a command line getopt could not read: the tools print
// it with their name, and corosync-quorumtool its usage after it.
type getoptError string

func (e getoptError) Error() string { return string(e) }

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func spellFlag(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// parseTool is parse for the verbs that are a corosync tool: --help as
// parse, then getopt. -h is the tool's: the usage, then done, where it
// comes in the command line, so that an earlier mistake is still reported
// (`-x -h`) and an option's argument is not read as it (`cpg -d -h`: the
// delimiter '-'), as the tools' getopt reads it; a verb whose tool takes
// -h otherwise (corosync-cfgtool: an action) registers its own. It
// returns the operands.
func parseTool(a *app, fs *flag.FlagSet, args []string, each func(name string) error) ([]string, error) {
	ownHelp := fs.Lookup("h") == nil
	if ownHelp {
		fs.Bool("h", false, "display this help")
	}
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "--help" {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
	}
	rest, err := getopt(fs, args, func(name string) error {
		if name == "h" && ownHelp {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return flag.ErrHelp
		}
		if each == nil {
			return nil
		}
		return each(name)
	})
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err // -h, or -V: said, and done
		}
		return nil, usageError{err}
	}
	return rest, nil
}

// strtonum reads a number as corosync's tools' util_strtonum does: base 10
// (strtoll: leading blanks and a sign allowed, nothing after), between min
// and max.
func strtonum(s string, min, max int64) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimLeft(s, " \t\n\v\f\r"), 10, 64)
	if err != nil || n < min || n > max {
		return 0, false
	}
	return n, true
}
