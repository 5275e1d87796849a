// Package config loads a node's configuration: built-in defaults, then a
// file (corosync.conf brace syntax or YAML), then COROBUS_ environment
// variables, then command-line overrides. Keys keep corosync's names
// (totem.token, nodelist.node.0.ring0_addr, …) so that an existing
// corosync.conf works unchanged and objdb can hold the result under the keys
// corosync's clients expect.
package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/corobus/corobus/config/corosyncconf"
	"github.com/corobus/corobus/config/keys"
)

// EnvPrefix starts every environment variable that sets a key. A double
// underscore stands for a dot, because corosync's key names contain single
// underscores (COROBUS_TOTEM__CLUSTER_NAME sets totem.cluster_name).
const EnvPrefix = "COROBUS_"

// Options say where a configuration comes from. Everything is explicit so
// that tests load configurations without touching the process environment.
type Options struct {
	// File is a corosync.conf (brace syntax) or a YAML file (.yaml/.yml).
	// Empty means the embedded default: a one-node cluster on 127.0.0.1.
	File string
	// Environ is the environment to read COROBUS_ variables from, usually
	// os.Environ(). Nil reads none.
	Environ []string
	// Overrides are key=value pairs from the command line; they win over
	// everything else.
	Overrides []string
	// UserStateDir is where the embedded default keeps its state; empty
	// means $XDG_STATE_HOME/corobus or ~/.local/state/corobus.
	UserStateDir string
}

// Config is a loaded, validated configuration.
type Config struct {
	k *koanf.Koanf
	// set holds what the file (or the embedded default), the environment
	// and the command line said, without the defaults: what corosync
	// would have in cmap.
	set       *koanf.Koanf
	file      string
	overrides []string
	// embedded is true when no file was given.
	embedded bool
	// positions are the file's lines of its keys and sections (brace
	// syntax only), for mistakes found after the keys were read one by
	// one: a node without an id, two nodes with one id.
	positions map[string]int
}

// Node is one entry of the nodelist.
type Node struct {
	Index int    // N in nodelist.node.N
	ID    uint32 // nodelist.node.N.nodeid
	// Name is what logs and `corobus status` call the node:
	// nodelist.node.N.name, else ring0_addr when it is a host name (as
	// corosync's tools name a node), else "node<ID>".
	Name       string
	Addr       string // nodelist.node.N.ring0_addr
	BusPort    int    // nodelist.node.N.bus_port: NATS route listener
	ClientPort int    // nodelist.node.N.client_port: NATS client listener
}

// Default ports. The route port reuses corosync's well-known mcastport
// number (knet uses it over UDP, the bus over TCP); the client port sits
// just below it.
const (
	DefaultBusPort    = 5405
	DefaultClientPort = 5400
)

// defaults are the values corosync itself assumes when a key is absent,
// taken from the key schema. They are a layer of their own so that `corobus
// cmap` shows them like any configured key.
func defaults() map[string]any {
	out := map[string]any{}
	for _, k := range keys.All() {
		if k.Default != "" && !strings.Contains(k.Pattern, "*") {
			out[k.Pattern] = k.Default
		}
	}
	return out
}

// embeddedDefault is the node that `corobus up` runs with no file: one node,
// loopback, state under the user's state directory.
func embeddedDefault(stateDir string) map[string]any {
	// What a minimal corosync.conf says: version 2, a cluster name, a
	// quorum provider, the nodelist.
	return map[string]any{
		"totem.version":               "2",
		"totem.cluster_name":          "corobus",
		"quorum.provider":             "corosync_votequorum",
		"nodelist.node.0.nodeid":      "1",
		"nodelist.node.0.name":        "node1",
		"nodelist.node.0.ring0_addr":  "127.0.0.1",
		"nodelist.node.0.bus_port":    strconv.Itoa(DefaultBusPort),
		"nodelist.node.0.client_port": strconv.Itoa(DefaultClientPort),
		"system.state_dir":            stateDir,
	}
}

// UserStateDir is the embedded default's state directory for the current
// user: $XDG_STATE_HOME/corobus, else ~/.local/state/corobus.
func UserStateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "corobus"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the user's state directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "corobus"), nil
}

// Load builds a Config from its layers and validates it. A mistake in the
// file is reported as file:line with what was expected; an unknown key by
// its name.
func Load(opts Options) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults(), "."), nil); err != nil {
		return nil, fmt.Errorf("loading defaults: %w", err)
	}
	set := koanf.New(".")
	c := &Config{k: k, set: set, file: opts.File, embedded: opts.File == ""}

	var positions map[string]int
	if opts.File == "" {
		dir := opts.UserStateDir
		if dir == "" {
			d, err := UserStateDir()
			if err != nil {
				return nil, err
			}
			dir = d
		}
		for _, l := range []*koanf.Koanf{k, set} {
			if err := l.Load(confmap.Provider(embeddedDefault(dir), "."), nil); err != nil {
				return nil, fmt.Errorf("loading the embedded default: %w", err)
			}
		}
	} else {
		fileK := koanf.New(".")
		var p interface {
			koanf.Parser
			Positions() map[string]int
		}
		switch strings.ToLower(filepath.Ext(opts.File)) {
		case ".yaml", ".yml":
			p = newYAMLParser(opts.File)
		default:
			p = corosyncconf.New(opts.File)
		}
		if err := fileK.Load(file.Provider(opts.File), p); err != nil {
			var se *corosyncconf.SyntaxError
			if errors.As(err, &se) {
				return nil, se
			}
			return nil, fmt.Errorf("%s: %w", opts.File, err)
		}
		positions = p.Positions()
		if err := checkKeys(opts.File, fileK, positions); err != nil {
			return nil, err
		}
		for _, l := range []*koanf.Koanf{k, set} {
			if err := l.Merge(fileK); err != nil {
				return nil, fmt.Errorf("%s: merging: %w", opts.File, err)
			}
		}
	}

	env, err := envLayer(opts.Environ)
	if err != nil {
		return nil, err
	}
	if err := checkKeys("environment", env, nil); err != nil {
		return nil, err
	}
	for _, l := range []*koanf.Koanf{k, set} {
		if err := l.Merge(env); err != nil {
			return nil, fmt.Errorf("merging environment: %w", err)
		}
	}

	over := koanf.New(".")
	for _, kv := range opts.Overrides {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("override %q: expected key=value", kv)
		}
		if err := over.Set(key, val); err != nil {
			return nil, fmt.Errorf("override %q: %w", kv, err)
		}
	}
	if err := checkKeys("command line", over, nil); err != nil {
		return nil, err
	}
	for _, l := range []*koanf.Koanf{k, set} {
		if err := l.Merge(over); err != nil {
			return nil, fmt.Errorf("merging overrides: %w", err)
		}
	}

	c.overrides = append([]string(nil), opts.Overrides...)
	c.positions = positions
	if _, err := c.Nodes(); err != nil {
		return nil, c.located(err)
	}
	return c, nil
}

// keyError is a mistake about one key or section found once the keys were
// read: Load names the file's line of Key, else of Section.
type keyError struct {
	Key, Section string
	Msg          string
}

func (e *keyError) Error() string { return e.Key + ": " + e.Msg }

// located prefixes err with the file, and the line when it is a keyError
// whose key or section the file gave.
func (c *Config) located(err error) error {
	var ke *keyError
	if errors.As(err, &ke) {
		for _, p := range []string{ke.Key, ke.Section} {
			if line, ok := c.positions[p]; ok && p != "" {
				return fmt.Errorf("%s:%d: %w", c.file, line, err)
			}
		}
	}
	return c.errf("%v", err)
}

// checkKeys reports the first unknown key or badly typed value of one layer,
// with the file line when the parser knew it: the first in the file, as
// one reads it and as corosync would stop at it, else by name.
func checkKeys(source string, k *koanf.Koanf, positions map[string]int) error {
	flat := k.All()
	names := slices.Sorted(maps.Keys(flat))
	slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(positions[a], positions[b]) })
	for _, key := range names {
		where := source
		if line, ok := positions[key]; ok {
			where = fmt.Sprintf("%s:%d", source, line)
		}
		if m, ok := flat[key].(map[string]any); ok && len(m) == 0 {
			// An empty section: harmless when corosync knows it
			// (nodelist {} then has no node, said by name below), a
			// typo otherwise.
			if !keys.Section(key) {
				return fmt.Errorf("%s: unknown section %s", where, key)
			}
			k.Delete(key)
			continue
		}
		if _, ok := keys.Lookup(key); !ok {
			msg := fmt.Sprintf("%s: unknown key %s", where, key)
			if s := keys.Suggest(key); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			return errors.New(msg)
		}
		if err := keys.Validate(key, fmt.Sprint(flat[key])); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

// envLayer turns COROBUS_A__B_C=v into a.b_c=v.
func envLayer(environ []string) (*koanf.Koanf, error) {
	k := koanf.New(".")
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
		if key == "" {
			continue
		}
		if err := k.Set(key, val); err != nil {
			return nil, fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return k, nil
}

func (c *Config) errf(format string, args ...any) error {
	src := c.file
	if src == "" {
		src = "embedded default"
	}
	return fmt.Errorf("%s: "+format, append([]any{src}, args...)...)
}

// AtKey says where key was given in front of err, a mistake about its
// value found after loading (a log file that cannot be opened): the
// command line when a -o gave it, else the file and line when the file
// gave it, else the file, as a mistake found while loading is said.
func (c *Config) AtKey(key string, err error) error {
	for _, o := range c.overrides {
		if k, _, _ := strings.Cut(o, "="); k == key {
			return fmt.Errorf("command line: %s: %w", key, err)
		}
	}
	return c.located(&keyError{Key: key, Msg: err.Error()})
}

// File is the configuration file, or "" for the embedded default.
func (c *Config) File() string { return c.file }

// Overrides are the command line's key=value pairs, for the processes a
// layer starts, which must see the configuration it sees.
func (c *Config) Overrides() []string { return append([]string(nil), c.overrides...) }

// Embedded reports whether this is the embedded default (no file).
func (c *Config) Embedded() bool { return c.embedded }

// String returns a key's value as a string ("" when absent).
func (c *Config) String(key string) string {
	if !c.k.Exists(key) {
		return ""
	}
	return fmt.Sprint(c.k.Get(key))
}

// Exists reports whether key is set by any layer.
func (c *Config) Exists(key string) bool { return c.k.Exists(key) }

// Uint returns a key as an unsigned integer, or def when absent.
func (c *Config) Uint(key string, def uint64) (uint64, error) {
	s := c.String(key)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, c.errf("%s: expected an unsigned integer, found %q", key, s)
	}
	return v, nil
}

// Bool reads corosync's boolean spellings (yes/no, on/off, true/false, 1/0).
func (c *Config) Bool(key string, def bool) bool {
	switch strings.ToLower(c.String(key)) {
	case "yes", "on", "true", "1":
		return true
	case "no", "off", "false", "0":
		return false
	}
	return def
}

// Millis reads a key holding milliseconds (totem.token, …) as a duration.
func (c *Config) Millis(key string, def time.Duration) (time.Duration, error) {
	v, err := c.Uint(key, uint64(def/time.Millisecond))
	if err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Millisecond, nil
}

// Flat returns every key with its value as a string, defaults included.
func (c *Config) Flat() map[string]string {
	out := make(map[string]string)
	for k, v := range c.k.All() {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// Explicit returns the keys the configuration sets — the file (or the
// embedded default), the environment, the command line — without the
// defaults of absent keys. objdb loads this at start, as corosync loads
// only what corosync.conf says into cmap; effective values of absent keys
// are recorded under runtime.config.* by the layers that use them.
func (c *Config) Explicit() map[string]string {
	out := make(map[string]string)
	for k, v := range c.set.All() {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// ClusterName is totem.cluster_name.
func (c *Config) ClusterName() string { return c.String("totem.cluster_name") }

// Prefix is the subject prefix: bus.prefix, else corobus.<cluster_name>.
func (c *Config) Prefix() string {
	if p := c.String("bus.prefix"); p != "" {
		return p
	}
	return "corobus." + strings.ReplaceAll(c.ClusterName(), ".", "_")
}

// StateDir is system.state_dir.
func (c *Config) StateDir() string { return c.String("system.state_dir") }

// Nodes returns the nodelist in index order.
func (c *Config) Nodes() ([]Node, error) {
	idx := map[int]bool{}
	for key := range c.k.All() {
		rest, ok := strings.CutPrefix(key, "nodelist.node.")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		i, err := strconv.Atoi(n)
		if err != nil {
			return nil, &keyError{Key: "nodelist.node." + n, Msg: "expected a numeric index"}
		}
		idx[i] = true
	}
	var nodes []Node
	seenID := map[uint32]int{}
	for _, i := range slices.Sorted(maps.Keys(idx)) {
		p := fmt.Sprintf("nodelist.node.%d.", i)
		n := Node{Index: i, Name: c.String(p + "name"), Addr: c.String(p + "ring0_addr")}
		sec := strings.TrimSuffix(p, ".")
		id, err := c.Uint(p+"nodeid", 0)
		if err != nil {
			return nil, err
		}
		if !c.Exists(p + "nodeid") {
			// corosync's knet needs it too ("Knet requires an
			// explicit nodeid").
			return nil, &keyError{Key: p + "nodeid", Section: sec, Msg: "missing: every node needs a node id from 1 to 4294967295"}
		}
		if id == 0 || id > 0xffffffff {
			return nil, &keyError{Key: p + "nodeid", Section: sec, Msg: fmt.Sprintf("expected a node id from 1 to 4294967295, found %d", id)}
		}
		n.ID = uint32(id)
		if j, dup := seenID[n.ID]; dup {
			return nil, &keyError{Key: p + "nodeid", Section: sec, Msg: fmt.Sprintf("%d is also the id of nodelist.node.%d", n.ID, j)}
		}
		seenID[n.ID] = i
		if n.Addr == "" {
			return nil, &keyError{Key: p + "ring0_addr", Section: sec, Msg: "missing: every node needs the address of its link 0"}
		}
		bp, err := c.Uint(p+"bus_port", DefaultBusPort)
		if err != nil {
			return nil, err
		}
		cp, err := c.Uint(p+"client_port", DefaultClientPort)
		if err != nil {
			return nil, err
		}
		n.BusPort, n.ClientPort = int(bp), int(cp)
		if n.Name == "" && net.ParseIP(n.Addr) == nil {
			n.Name = n.Addr
		}
		if n.Name == "" {
			n.Name = fmt.Sprintf("node%d", n.ID)
		}
		nodes = append(nodes, n)
	}
	if len(nodes) == 0 {
		return nil, &keyError{Key: "nodelist", Msg: "no node configured (corobus needs a nodelist)"}
	}
	return nodes, nil
}

// LocalNode finds this node in the nodelist: totem.nodeid when set, else the
// only node, else the one node whose ring0_addr is an address of this host.
func (c *Config) LocalNode() (Node, error) {
	nodes, err := c.Nodes()
	if err != nil {
		return Node{}, err
	}
	if c.Exists("totem.nodeid") {
		id, err := c.Uint("totem.nodeid", 0)
		if err != nil {
			return Node{}, err
		}
		for _, n := range nodes {
			if uint64(n.ID) == id {
				return n, nil
			}
		}
		return Node{}, c.located(&keyError{Key: "totem.nodeid", Msg: fmt.Sprintf("%d is not the nodeid of any node of the nodelist", id)})
	}
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	local, err := localAddrs()
	if err != nil {
		return Node{}, err
	}
	var found []Node
	for _, n := range nodes {
		if slices.ContainsFunc(addrIPs(n.Addr), func(ip string) bool { return local[ip] }) {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return Node{}, c.errf("cannot tell which nodelist entry is this node (%d match a local address): set totem.nodeid", len(found))
	}
	return found[0], nil
}

// addrIPs are the IP addresses a ring0_addr stands for, spelled as
// localAddrs spells them: itself when it is one, else what the host's
// resolver gives for the name. corosync resolves a name there (pcs writes
// the nodes' host names as ring0_addr) and finds itself by it; until 3 Dec
// corobus compared the name with its addresses and gave up ("set
// totem.nodeid"). A name that does not resolve matches nothing.
func addrIPs(addr string) []string {
	if ip := net.ParseIP(addr); ip != nil {
		return []string{addr, ip.String()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, addr)
	if err != nil {
		return []string{addr}
	}
	out := []string{addr}
	for _, ip := range ips {
		out = append(out, ip.IP.String())
	}
	return out
}

func localAddrs() (map[string]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	out := map[string]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out[ipn.IP.String()] = true
		}
	}
	return out, nil
}
