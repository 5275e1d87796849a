package objdb

import (
	"slices"
	"strings"
)

// corosync 1.x's objdb was a tree: objects holding keys and child objects
// (totem → interface → bindnetaddr). corosync 2 flattened it into cmap's
// dotted keys; here the tree is a view over those keys: an object is a key
// prefix ending before a dot, its keys are the entries directly below it,
// its children the next tokens that have something further below.

// Children returns the child objects and the keys directly under object
// ("" is the root) among entries, each sorted.
func Children(entries []Entry, object string) (objects []string, keys []Entry) {
	prefix := ""
	if object != "" {
		prefix = object + "."
	}
	seen := map[string]bool{}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Key, prefix)
		if !ok {
			continue
		}
		if child, _, deeper := strings.Cut(rest, "."); deeper {
			if !seen[child] {
				seen[child] = true
				objects = append(objects, child)
			}
			continue
		}
		keys = append(keys, e)
	}
	slices.Sort(objects)
	return objects, keys
}
