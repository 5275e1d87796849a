package bus

import (
	"fmt"
	"strings"
)

// Subjects builds every subject corobus publishes or serves. It is the one
// place where subject names are spelled, so docs/subjects.md has a single
// source to be checked against. The zero value is not useful: build one with
// NewSubjects.
type Subjects struct {
	prefix string
}

// DefaultPrefix is the subject prefix of a cluster when bus.prefix is unset.
func DefaultPrefix(clusterName string) string {
	return "corobus." + SanitizeToken(clusterName)
}

// NewSubjects returns a builder for subjects under prefix (e.g.
// "corobus.mycluster"). The prefix must be a valid NATS subject without
// wildcards.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		return Subjects{}, fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
			return Subjects{}, fmt.Errorf("subject prefix %q: invalid token %q", prefix, tok)
		}
	}
	return Subjects{prefix: prefix}, nil
}

// Prefix is the prefix every subject starts with.
func (s Subjects) Prefix() string { return s.prefix }

// Join appends tokens to the prefix. Callers outside this package use the
// named helpers below; Join is exported for layers added later (and for
// tests) so that they still build subjects through this type.
func (s Subjects) Join(tokens ...string) string {
	return s.prefix + "." + strings.Join(tokens, ".")
}

// All is the wildcard that matches every subject of the cluster.
func (s Subjects) All() string { return s.prefix + ".>" }

// BusStatus is served by each node's bus process: a request returns the
// node's bus state as JSON.
func (s Subjects) BusStatus(node uint32) string {
	return s.Join("bus", nodeToken(node), "status")
}

// Log is where a node's layers publish log records of one subsystem.
func (s Subjects) Log(node uint32, subsys string) string {
	return s.Join("log", nodeToken(node), SanitizeToken(subsys))
}

// Blackbox is requested to dump the flight recorders of a node's layers;
// every layer process answers (scatter-gather).
func (s Subjects) Blackbox(node uint32) string {
	return s.Join("blackbox", nodeToken(node))
}

func nodeToken(node uint32) string { return fmt.Sprintf("%d", node) }

// SanitizeToken turns an arbitrary name into a single subject token: NATS
// forbids '.', whitespace and the wildcards inside a token, so those become
// '_'. An empty name becomes "_".
func SanitizeToken(name string) string {
	if name == "" {
		return "_"
	}
	b := []byte(name)
	for i, c := range b {
		switch c {
		case '.', ' ', '\t', '\r', '\n', '*', '>':
			b[i] = '_'
		}
	}
	return string(b)
}
