package objdb

import (
	"fmt"
	"strings"
)

// Keys are stored in the KV bucket under a scope: "c" for cluster-wide
// keys, "n<id>" for the keys of node <id> (corosync keeps a cmap per node:
// its configuration and runtime.* are that node's). JetStream KV keys and
// NATS subject tokens allow neither ':' nor empty tokens, both of which a
// corosync key may have, so each token is encoded: '=' → "=3D",
// ':' → "=3A", and an empty token → "=". The encoding is reversible and
// leaves every ordinary key as it is.

// Token encodes one key token for a KV key or a subject.
func encodeToken(t string) string {
	if t == "" {
		return "="
	}
	if !strings.ContainsAny(t, "=:") {
		return t
	}
	t = strings.ReplaceAll(t, "=", "=3D")
	return strings.ReplaceAll(t, ":", "=3A")
}

func decodeToken(t string) (string, error) {
	if t == "=" {
		return "", nil
	}
	if !strings.Contains(t, "=") {
		return t, nil
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '=' {
			b.WriteByte(t[i])
			continue
		}
		if i+2 >= len(t) {
			return "", fmt.Errorf("bad escape in %q", t)
		}
		switch t[i+1 : i+3] {
		case "3D":
			b.WriteByte('=')
		case "3A":
			b.WriteByte(':')
		default:
			return "", fmt.Errorf("bad escape in %q", t)
		}
		i += 2
	}
	return b.String(), nil
}

// EncodeKey turns an objdb key into subject tokens (without the prefix):
// "totem.token" stays "totem.token".
func EncodeKey(key string) string {
	toks := strings.Split(key, ".")
	for i, t := range toks {
		toks[i] = encodeToken(t)
	}
	return strings.Join(toks, ".")
}

// DecodeKey reverses EncodeKey.
func DecodeKey(enc string) (string, error) {
	toks := strings.Split(enc, ".")
	for i, t := range toks {
		d, err := decodeToken(t)
		if err != nil {
			return "", err
		}
		toks[i] = d
	}
	return strings.Join(toks, "."), nil
}

// Scope says where a key lives.
type Scope string

// Scopes.
const (
	ScopeCluster Scope = "cluster"
	ScopeNode    Scope = "node"
)

func clusterScope() string           { return "c" }
func nodeScope(node uint32) string   { return fmt.Sprintf("n%d", node) }
func kvKey(scope, key string) string { return scope + "." + EncodeKey(key) }

// splitKVKey returns the scope token and the objdb key of a KV key.
func splitKVKey(k string) (scope, key string, err error) {
	scope, enc, ok := strings.Cut(k, ".")
	if !ok {
		return "", "", fmt.Errorf("KV key %q has no scope", k)
	}
	key, err = DecodeKey(enc)
	return scope, key, err
}

// nodeLocalPrefixes are the keys a node keeps to itself even when it did
// not load them from its configuration: its runtime state and statistics,
// and the sections of corosync.conf — each node has its own file, so
// `corosync-cmapctl -s totem.token …` on one node changes that node's
// value even where its file left the key out.
func nodeLocalPrefixes() []string {
	// uidgid.: who may connect to this node's IPC, as corosync keeps it
	// in each node's own cmap (pacemakerd admits its group on its node
	// as it starts: a cluster key would need a JetStream quorum first,
	// and would admit the group on every node).
	return append([]string{"runtime.", "stats.", "internal_configuration.", "nodelist.local_node_pos", "config.", "uidgid."}, ConfigSections()...)
}

// ConfigSections are the key prefixes of a node's configuration: what a
// start or a reload loads from the file, and where keys the file no
// longer has are removed.
func ConfigSections() []string {
	return []string{"totem.", "logging.", "quorum.", "nodelist.", "uidgid.config.", "system.", "resources.", "nozzle.", "cfg."}
}
