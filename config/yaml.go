package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/corobus/corobus/config/corosyncconf"
	"github.com/corobus/corobus/config/keys"
)

// yamlParser reads a YAML configuration as a koanf parser, the way
// corosyncconf reads the brace syntax: every value as it is written (a
// string: `token: 3e3` is refused as a u32, not read as 3000), and the
// line of every key and section (Positions), so that a mistake in a YAML
// file names its line as one in a corosync.conf does. Until 3 Dec YAML
// went through koanf's own parser, which kept no lines: a mistake was
// reported by key only, 3e3 passed as 3000 and an empty value as "<nil>".
type yamlParser struct {
	file      string
	positions map[string]int
}

func newYAMLParser(file string) *yamlParser { return &yamlParser{file: file} }

// Positions maps each flattened key and section path of the last
// Unmarshal to the line that names it.
func (p *yamlParser) Positions() map[string]int { return p.positions }

// Unmarshal reads one YAML document, a map of sections, into nested maps
// whose leaves are strings.
func (p *yamlParser) Unmarshal(b []byte) (map[string]any, error) {
	p.positions = map[string]int{}
	out := map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return out, nil // an empty file: no keys (and so no nodelist, said by Load)
		}
		// yaml.v3 says where in its message: "yaml: line 3: mapping
		// values are not allowed in this context".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if n, what, ok := strings.Cut(rest, ": "); ok {
				if line, err := strconv.Atoi(n); err == nil {
					return nil, p.errf(line, "%s", what)
				}
			}
		}
		return nil, errors.New(msg) // no line to name: Load says the file
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, p.errf(next.Line, "a second YAML document: a configuration is one map of sections")
	}
	if len(doc.Content) == 0 {
		return out, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root.Line, "expected a map of sections (totem:, nodelist:, …), found %s", kindName(root))
	}
	if err := p.mapping(root, "", out); err != nil {
		return nil, err
	}
	return out, nil
}

// mapping reads the pairs of n, a section at path, into out. A key with
// dots (totem.token: 5000) stands for the sections it names.
func (p *yamlParser) mapping(n *yaml.Node, path string, out map[string]any) error {
	given := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return p.errf(k.Line, "expected a key name, found %s", kindName(k))
		}
		if first, dup := given[k.Value]; dup {
			return p.errf(k.Line, "%s is given twice (first at line %d)", joinKey(path, k.Value), first)
		}
		given[k.Value] = k.Line
		toks := strings.Split(k.Value, ".")
		full := joinKey(path, k.Value)
		if len(full) > maxKeyLen {
			return p.errf(k.Line, "key path %q is longer than %d characters", full, maxKeyLen)
		}
		// The sections a dotted key passes through.
		m, at := out, path
		for _, t := range toks[:len(toks)-1] {
			if t == "" {
				return p.errf(k.Line, "expected a key name, found %q", k.Value)
			}
			at = joinKey(at, t)
			sub, err := p.section(m, t, at, k.Line)
			if err != nil {
				return err
			}
			m = sub
		}
		last := toks[len(toks)-1]
		if last == "" {
			return p.errf(k.Line, "expected a key name, found %q", k.Value)
		}
		switch v.Kind {
		case yaml.MappingNode:
			if kk, ok := keys.Lookup(full); ok && !keys.Section(full) {
				return p.errf(k.Line, "%s: expected a value (%s), found a map", full, kk.Type)
			}
			sub, err := p.section(m, last, full, k.Line)
			if err != nil {
				return err
			}
			if err := p.mapping(v, full, sub); err != nil {
				return err
			}
		case yaml.SequenceNode:
			// Repeated sections are maps by index, as objdb names
			// them (nodelist.node.0.ring0_addr).
			return p.errf(k.Line, "%s is a list; YAML gives a repeated section as a map by index, as objdb names it: "+
				"nodelist: {node: {\"0\": {nodeid: 1, ring0_addr: …}}} (docs/configuration.md)", full)
		case yaml.ScalarNode:
			if _, ok := keys.Lookup(full); !ok && keys.Section(full) {
				return p.errf(k.Line, "%s is a section: expected a map of its keys, found %q", full, v.Value)
			}
			if prev, ok := m[last]; ok {
				what := "a value"
				if _, sec := prev.(map[string]any); sec {
					what = "a section"
				}
				return p.errf(k.Line, "%s is given twice (first as %s at line %d)", full, what, p.positions[full])
			}
			// A null (`token:`) is the empty value, as `token:` is in
			// brace syntax.
			val := v.Value
			if v.Tag == "!!null" {
				val = ""
			}
			m[last] = val
			p.positions[full] = k.Line
		default:
			return p.errf(k.Line, "%s: expected a value or a map, found %s", full, kindName(v))
		}
	}
	return nil
}

// section returns out's section name (at path), made when absent; a value
// already there is a conflict.
func (p *yamlParser) section(out map[string]any, name, path string, line int) (map[string]any, error) {
	switch cur := out[name].(type) {
	case map[string]any:
		return cur, nil
	case nil:
		sub := map[string]any{}
		out[name] = sub
		if _, ok := p.positions[path]; !ok {
			p.positions[path] = line
		}
		return sub, nil
	default:
		return nil, p.errf(line, "%s is given twice (first as a value at line %d)", path, p.positions[path])
	}
}

// maxKeyLen is ICMAP_KEYNAME_MAXLEN: a longer path cannot be a cmap key.
const maxKeyLen = 255

func (p *yamlParser) errf(line int, format string, args ...any) error {
	return &corosyncconf.SyntaxError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Marshal is not used: corobus writes no YAML configuration.
func (p *yamlParser) Marshal(map[string]any) ([]byte, error) {
	return nil, errors.New("writing YAML configurations is not supported")
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func joinKey(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}
