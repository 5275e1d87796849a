// Package corosyncconf reads and writes corosync.conf's brace syntax as a
// koanf parser, so that an existing corosync.conf configures corobus
// unchanged.
//
// The syntax, as corosync 3's coroparse reads it: one item per line;
// "name {" opens a section, "}" alone closes it, "key: value" sets a key
// (the value is the rest of the line, trimmed); lines whose first non-blank
// character is '#' and blank lines are ignored. A line is tested for '{'
// first, then ':', then '}', as coroparse does.
//
// Repeated sections are named the way corosync names them in cmap:
// nodelist.node.N (N counting from 0 in file order), totem.interface.L (L
// the section's linknumber or ringnumber, default 0),
// logging.logger_subsys.S (S its subsys value), and corosync 1.x's
// service.N blocks. In uidgid sections each "uid: X" / "gid: X" becomes the
// key uidgid.config.uid.X / uidgid.config.gid.X with value 1, X the numeric
// id (a user or group name is resolved, as corosync does).
package corosyncconf

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// SyntaxError is a mistake in a file: where, and what was expected.
type SyntaxError struct {
	File string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Parser implements koanf.Parser for corosync.conf. One Parser reads one
// file: Positions reports the lines of the keys it read last.
type Parser struct {
	file      string
	positions map[string]int
}

// New returns a parser; filename appears in error messages only.
func New(filename string) *Parser { return &Parser{file: filename} }

// Positions maps each flattened key of the last Unmarshal to its line, and
// each section's path (nodelist.node.0, totem.interface.1) to the line that
// opens it, so that a mistake found in a section as a whole (a node without
// an address, an empty section of no known kind) still names a line.
func (p *Parser) Positions() map[string]int { return p.positions }

// maxKeyLen is ICMAP_KEYNAME_MAXLEN: a longer path cannot be a cmap key.
const maxKeyLen = 255

// section is one open section while parsing.
type section struct {
	name   string // its token in the key path, once known
	kind   string // how its name is chosen: "", "node", "interface", "logger_subsys", "service", "uidgid"
	line   int
	values map[string]any
	// items keep (key, value, line) of sections whose final name depends
	// on a value inside them (interface, logger_subsys).
	items []item
	sub   []*section
}

type item struct {
	key, value string
	line       int
}

// Unmarshal parses a whole file into nested maps whose leaves are strings.
func (p *Parser) Unmarshal(b []byte) (map[string]any, error) {
	p.positions = map[string]int{}
	root := &section{values: map[string]any{}}
	stack := []*section{root}
	counters := map[string]int{} // per parent path + kind: next index
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	path := func() []string {
		var out []string
		for _, s := range stack[1:] {
			out = append(out, s.name)
		}
		return out
	}
	for sc.Scan() {
		line++
		raw := strings.TrimRight(sc.Text(), "\r")
		text := strings.Trim(raw, " \t\u00a0")
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cur := stack[len(stack)-1]
		if i := strings.IndexByte(text, '{'); i >= 0 {
			name := strings.TrimSpace(text[:i])
			if name == "" {
				return nil, p.errf(line, "missing section name before \"{\"")
			}
			if rest := strings.TrimSpace(text[i+1:]); rest != "" {
				return nil, p.errf(line, "unexpected %q after \"{\": a section opens alone on its line", rest)
			}
			if strings.ContainsAny(name, " \t.") {
				return nil, p.errf(line, "expected a section name, found %q", name)
			}
			s := &section{name: name, line: line, values: map[string]any{}}
			parentPath := strings.Join(path(), ".")
			switch joinPath(parentPath, name) {
			case "nodelist.node", "service", "totem.interface", "logging.logger_subsys", "uidgid":
				s.kind = name
			}
			if s.kind == "node" || s.kind == "service" {
				k := parentPath + "/" + name
				s.name = strconv.Itoa(counters[k])
				counters[k]++
				s.sub = nil
				// The repeated section hangs below a container named
				// after it: nodelist.node.0, service.0.
				container, ok := cur.values[name].(map[string]any)
				if !ok {
					container = map[string]any{}
					cur.values[name] = container
				}
				container[s.name] = s.values
				s.name = name + "." + s.name
			} else if s.kind == "" || s.kind == "uidgid" {
				if existing, ok := cur.values[name].(map[string]any); ok {
					// A section given twice merges, as coroparse's
					// map does.
					s.values = existing
				} else {
					cur.values[name] = s.values
				}
			}
			if len(joinPath(parentPath, s.name)) > maxKeyLen {
				return nil, p.errf(line, "section makes the key path longer than %d characters", maxKeyLen)
			}
			if s.kind != "interface" && s.kind != "logger_subsys" {
				p.markSection(joinPath(parentPath, s.name), line)
			}
			cur.sub = append(cur.sub, s)
			stack = append(stack, s)
			continue
		}
		if i := strings.IndexByte(text, ':'); i >= 0 {
			key := strings.TrimSpace(text[:i])
			value := strings.Trim(text[i+1:], " \t\u00a0")
			if key == "" {
				return nil, p.errf(line, "expected \"key: value\", found an empty key")
			}
			if strings.ContainsAny(key, " \t.") {
				return nil, p.errf(line, "expected \"key: value\", found key %q", key)
			}
			switch cur.kind {
			case "interface", "logger_subsys":
				cur.items = append(cur.items, item{key, value, line})
				continue
			case "uidgid":
				if key != "uid" && key != "gid" {
					return nil, p.errf(line, "expected uid or gid in a uidgid section, found %q", key)
				}
				id, err := resolveID(key, value)
				if err != nil {
					return nil, p.errf(line, "%v", err)
				}
				// corosync keeps configured ids apart from ids set at run
				// time: uidgid.config.uid.<uid> = 1 (u8).
				cfgSec, _ := cur.values["config"].(map[string]any)
				if cfgSec == nil {
					cfgSec = map[string]any{}
					cur.values["config"] = cfgSec
				}
				sub, _ := cfgSec[key].(map[string]any)
				if sub == nil {
					sub = map[string]any{}
					cfgSec[key] = sub
				}
				sub[id] = "1"
				p.positions["uidgid.config."+key+"."+id] = line
				continue
			}
			full := joinPath(strings.Join(path(), "."), key)
			if len(full) > maxKeyLen {
				return nil, p.errf(line, "key path %q is longer than %d characters", full, maxKeyLen)
			}
			cur.values[key] = value
			p.positions[full] = line
			continue
		}
		if strings.Contains(text, "}") {
			if text != "}" {
				return nil, p.errf(line, "expected \"}\" alone on its line, found %q", text)
			}
			if len(stack) == 1 {
				return nil, p.errf(line, "unexpected \"}\": no section is open")
			}
			closed := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if err := p.closeKeyed(stack[len(stack)-1], closed, strings.Join(path(), ".")); err != nil {
				return nil, err
			}
			continue
		}
		return nil, p.errf(line, "expected \"key: value\", \"name {\" or \"}\", found %q", text)
	}
	if err := sc.Err(); err != nil {
		return nil, p.errf(line, "reading: %v", err)
	}
	if len(stack) > 1 {
		open := stack[len(stack)-1]
		return nil, p.errf(line, "missing \"}\" for section %q opened at line %d", strings.Join(path(), "."), open.line)
	}
	return root.values, nil
}

// closeKeyed files a section whose name comes from a value inside it:
// totem.interface by its linknumber (or ringnumber), logging.logger_subsys
// by its subsys.
func (p *Parser) closeKeyed(parent, s *section, parentPath string) error {
	var nameKey, def string
	switch s.kind {
	case "interface":
		def = "0"
		for _, it := range s.items {
			if it.key == "linknumber" || it.key == "ringnumber" {
				nameKey = it.value
			}
		}
	case "logger_subsys":
		for _, it := range s.items {
			if it.key == "subsys" {
				nameKey = it.value
			}
		}
		if nameKey == "" {
			return p.errf(s.line, "logger_subsys section without a subsys key")
		}
	default:
		return nil
	}
	if nameKey == "" {
		nameKey = def
	}
	if strings.ContainsAny(nameKey, " \t.") {
		return p.errf(s.line, "%s section named %q: expected a name without dots or blanks", s.kind, nameKey)
	}
	container, ok := parent.values[s.kind].(map[string]any)
	if !ok {
		container = map[string]any{}
		parent.values[s.kind] = container
	}
	vals, ok := container[nameKey].(map[string]any)
	if !ok {
		vals = map[string]any{}
		container[nameKey] = vals
	}
	p.markSection(joinPath(parentPath, s.kind+"."+nameKey), s.line)
	for _, it := range s.items {
		vals[it.key] = it.value
		p.positions[joinPath(parentPath, s.kind+"."+nameKey+"."+it.key)] = it.line
	}
	return nil
}

// markSection records the line of a section's first opening: a section
// given twice merges, and the first is where a reader looks.
func (p *Parser) markSection(path string, line int) {
	if _, ok := p.positions[path]; !ok {
		p.positions[path] = line
	}
}

func joinPath(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func (p *Parser) errf(line int, format string, args ...any) error {
	return &SyntaxError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Marshal writes nested maps back in brace syntax, keys sorted; numbered
// children of nodelist.node and service become repeated sections, keyed
// children of totem.interface and logging.logger_subsys get their key
// (linknumber, subsys) back, and uidgid.uid.X becomes "uid: X".
func (p *Parser) Marshal(m map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeSection(&buf, m, "", 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeSection(buf *bytes.Buffer, m map[string]any, path string, depth int) error {
	indent := strings.Repeat("\t", depth)
	keys := slices.Sorted(maps.Keys(m))
	// Plain values first, then sections: how corosync.conf is written.
	for _, k := range keys {
		if _, isMap := m[k].(map[string]any); !isMap {
			fmt.Fprintf(buf, "%s%s: %v\n", indent, k, m[k])
		}
	}
	for _, k := range keys {
		sub, isMap := m[k].(map[string]any)
		if !isMap {
			continue
		}
		full := joinPath(path, k)
		switch full {
		case "nodelist.node", "service", "totem.interface", "logging.logger_subsys":
			idx := slices.SortedFunc(maps.Keys(sub), numericFirst)
			for _, i := range idx {
				child, ok := sub[i].(map[string]any)
				if !ok {
					return fmt.Errorf("%s.%s: expected a section", full, i)
				}
				child = maps.Clone(child)
				// The section's name goes back inside it, under the key
				// it came from.
				switch k {
				case "interface":
					_, ring := child["ringnumber"]
					if _, link := child["linknumber"]; !link && !ring {
						child["linknumber"] = i
					}
				case "logger_subsys":
					child["subsys"] = i
				}
				fmt.Fprintf(buf, "%s%s {\n", indent, k)
				if err := writeSection(buf, child, full+"."+i, depth+1); err != nil {
					return err
				}
				fmt.Fprintf(buf, "%s}\n", indent)
			}
			continue
		}
		if path == "uidgid.config" && (k == "uid" || k == "gid") {
			for _, id := range slices.Sorted(maps.Keys(sub)) {
				fmt.Fprintf(buf, "%s%s: %s\n", indent, k, id)
			}
			continue
		}
		if full == "uidgid.config" {
			// Written back inline in the uidgid section.
			if err := writeSection(buf, sub, full, depth); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(buf, "%s%s {\n", indent, k)
		if err := writeSection(buf, sub, full, depth+1); err != nil {
			return err
		}
		fmt.Fprintf(buf, "%s}\n", indent)
		if depth == 0 {
			buf.WriteByte('\n')
		}
	}
	return nil
}

// numericFirst orders "2" before "10", and names after numbers.
func numericFirst(a, b string) int {
	ai, aerr := strconv.Atoi(a)
	bi, berr := strconv.Atoi(b)
	switch {
	case aerr == nil && berr == nil:
		return ai - bi
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// resolveID turns a uid or gid item's value into a numeric id: numbers as
// they are, names through the user and group databases.
func resolveID(kind, value string) (string, error) {
	if _, err := strconv.ParseUint(value, 10, 32); err == nil {
		return value, nil
	}
	if kind == "uid" {
		u, err := user.Lookup(value)
		if err != nil {
			return "", fmt.Errorf("uidgid: unknown user %q", value)
		}
		return u.Uid, nil
	}
	g, err := user.LookupGroup(value)
	if err != nil {
		return "", fmt.Errorf("uidgid: unknown group %q", value)
	}
	return g.Gid, nil
}
