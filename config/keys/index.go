package keys

import "strings"

// Index answers Lookup without rebuilding and re-splitting the table at
// each call: keys without a wildcard are found in a map, the others
// matched against patterns split once. Build one with NewIndex and keep it
// (objdb checks every client write against it).
type Index struct {
	exact map[string]int
	// wildcard holds the patterns with a wildcard by their first token
	// (in table order, with those whose first token is itself a wildcard
	// merged in); anyFirst holds those alone, for keys whose first token
	// no pattern names. A key under runtime. or test. is checked against
	// no pattern at all: objdb asks for every node-key write.
	wildcard map[string][]indexed
	anyFirst []indexed
	keys     []Key
}

type indexed struct {
	i   int // position in keys: the first match in table order wins
	pat []string
}

// NewIndex indexes the table.
func NewIndex() *Index {
	x := &Index{exact: map[string]int{}, wildcard: map[string][]indexed{}, keys: table()}
	var all []indexed
	for i, k := range x.keys {
		if strings.Contains(k.Pattern, "*") {
			w := indexed{i, strings.Split(k.Pattern, ".")}
			all = append(all, w)
			if strings.Contains(w.pat[0], "*") {
				x.anyFirst = append(x.anyFirst, w)
			}
		} else if _, dup := x.exact[k.Pattern]; !dup {
			x.exact[k.Pattern] = i
		}
	}
	for _, w := range all {
		if first := w.pat[0]; !strings.Contains(first, "*") && x.wildcard[first] == nil {
			for _, v := range all {
				if v.pat[0] == first || strings.Contains(v.pat[0], "*") {
					x.wildcard[first] = append(x.wildcard[first], v)
				}
			}
		}
	}
	return x
}

// Lookup finds the pattern a key matches, as the package's Lookup does.
func (x *Index) Lookup(key string) (Key, bool) {
	best := -1
	if i, ok := x.exact[key]; ok {
		best = i
	}
	first, _, _ := strings.Cut(key, ".")
	cands, ok := x.wildcard[first]
	if !ok {
		cands = x.anyFirst
	}
	var toks []string
	for _, w := range cands {
		if best >= 0 && w.i > best {
			break
		}
		if toks == nil {
			toks = strings.Split(key, ".")
		}
		if match(w.pat, toks) {
			best = w.i
			break
		}
	}
	if best < 0 {
		return Key{}, false
	}
	return x.keys[best], true
}
