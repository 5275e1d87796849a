package keys

import "strings"

// Index answers Lookup without rebuilding and re-splitting the table at
// each call: keys without a wildcard are found in a map, the others
// matched against patterns split once. Build one with NewIndex and keep it
// (objdb checks every client write against it).
type Index struct {
	exact    map[string]int
	wildcard []indexed
	keys     []Key
}

type indexed struct {
	i   int // position in keys: the first match in table order wins
	pat []string
}

// NewIndex indexes the table.
func NewIndex() *Index {
	x := &Index{exact: map[string]int{}, keys: table()}
	for i, k := range x.keys {
		if strings.Contains(k.Pattern, "*") {
			x.wildcard = append(x.wildcard, indexed{i, strings.Split(k.Pattern, ".")})
		} else if _, dup := x.exact[k.Pattern]; !dup {
			x.exact[k.Pattern] = i
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
	var toks []string
	for _, w := range x.wildcard {
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
