package cfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/config/keys"
	"github.com/corobus/corobus/logsys"
	"github.com/corobus/corobus/objdb"
	objdbclient "github.com/corobus/corobus/objdb/client"
	"github.com/corobus/corobus/services/cswire"
)

// Reloader re-reads a node's configuration file and applies it to the
// node's objdb, as corosync_cfg_reload_config does on every node: keys
// the file changed, added or removed are written, and the services that
// follow them (votequorum: quorum.*, nodelist votes; the gateway:
// uidgid.config.*) act on them. corosync keeps a few keys as they are
// (cluster name, transport, crypto, quorum provider, system.*): so does
// corobus, with a notice. A new logging section is checked before
// anything is written and applied by every process of the node, as
// corosync re-reads its logging on reload. What corobus cannot change
// while it runs — the node id, the nodes and their addresses, the
// bus — makes the whole reload fail with the reason, and nothing changes.
type Reloader struct {
	// Load reads the node's configuration again (its file, environment
	// and command line).
	Load func() (*config.Config, error)
	DB   *objdbclient.Client // Internal set
	Log  *slog.Logger
	// Applied is called after a reload's keys are written, before the
	// reload answers: it has the node's services act on them (votequorum
	// re-reads, as corosync's does within the reload).
	Applied func(ctx context.Context) error
	// Logging gives the node's processes a changed logging section (the
	// logging.* keys) and reports any that could not apply it.
	Logging func(ctx context.Context, section map[string]string) error
}

// keptKeys are those corosync's reload leaves as they were.
var keptKeys = regexp.MustCompile(`^(totem\.(secauth|crypto_hash|crypto_cipher|crypto_model|keyfile|key|version|threads|ip_version|rrp_mode|netmtu|transport|cluster_name)|quorum\.provider|system\..*)$`)

// refusedKeys are those corobus applies only at start.
var refusedKeys = regexp.MustCompile(`^(totem\.nodeid|bus\..*|objdb\..*|loader\..*|ipc\..*|service\..*)$`)

// nodelistFixed are a nodelist entry's keys that fix the bus's routes and
// the node's identity.
var nodelistFixed = regexp.MustCompile(`^nodelist\.node\.\d+\.(nodeid|ring\d+_addr|bus_port|client_port)$`)

// Reload re-reads and applies the configuration.
func (r *Reloader) Reload(ctx context.Context) ReloadResult {
	set := func(key string, t objdb.Type, v string) {
		val, err := objdb.ParseValue(t, v)
		if err == nil {
			err = r.DB.Set(ctx, key, val)
		}
		if err != nil {
			r.Log.Warn("reload: status key not written", "key", key, "err", err)
		}
	}
	set("config.totemconfig_reload_in_progress", objdb.Uint8, "1")
	res := r.reload(ctx, func() { set("config.reload_in_progress", objdb.Uint8, "1") })
	set("config.reload_status", objdb.Int32, fmt.Sprint(int32(res.Code)))
	set("config.totemconfig_reload_in_progress", objdb.Uint8, "0")
	set("config.reload_in_progress", objdb.Uint8, "0")
	if res.Code == cswire.OK && r.Applied != nil {
		if err := r.Applied(ctx); err != nil {
			r.Log.Warn("reload: a service did not act on the new configuration", "err", err)
		}
	}
	switch {
	case res.Code != cswire.OK:
		r.Log.Error("configuration not reloaded: "+res.Reason, "code", res.Code)
	default:
		r.Log.Info("configuration reloaded", "changed", res.Changed, "kept", res.Ignored)
	}
	return res
}

func (r *Reloader) reload(ctx context.Context, started func()) ReloadResult {
	cfg, err := r.Load()
	if err != nil {
		return ReloadResult{Code: cswire.ErrInvalidParam, Reason: fmt.Sprintf("unable to reload the configuration file: %v", err)}
	}
	started()
	want := cfg.Explicit()
	for k := range want {
		// Key material is never in objdb: nothing to compare or write.
		if sk, ok := keys.Lookup(k); ok && sk.Secret {
			delete(want, k)
		}
	}
	have := map[string]string{}
	for _, p := range objdb.ConfigSections() {
		entries, err := r.DB.List(ctx, p)
		if err != nil {
			return ReloadResult{Code: cswire.Code(err), Reason: fmt.Sprintf("reading the node's configuration keys: %v", err)}
		}
		for _, e := range entries {
			if e.Scope == objdb.ScopeNode && e.Key != "nodelist.local_node_pos" {
				have[e.Key] = e.Value
			}
		}
	}
	// Keys outside the sections (bus.*, loader.*, …) were loaded at start
	// too: compare them with the file as it was then, through objdb.
	for k := range want {
		if _, ok := have[k]; ok || inSections(k) {
			continue
		}
		if v, err := r.DB.Get(ctx, k); err == nil {
			have[k] = v.String()
		}
	}
	// totem.token, join and consensus change at run time (the objdb
	// layer hands them to the totem once the reload is done), so a
	// combination the totem would refuse refuses the reload now.
	if subjects, err := bus.NewSubjects(bus.DefaultPrefix(cfg.ClusterName())); err == nil {
		if _, err := totem.FromConfig(cfg, subjects); err != nil {
			return ReloadResult{Code: cswire.ErrInvalidParam, Reason: fmt.Sprintf("the new totem timings: %v", err)}
		}
	}
	var changed, kept, refused []string
	for _, k := range slices.Sorted(maps.Keys(union(have, want))) {
		nv, inNew := want[k]
		ov, inOld := have[k]
		if inNew && inOld && normalize(k, nv) == ov {
			continue
		}
		if !inNew && !inSections(k) {
			continue // not a reloadable section: nothing to remove
		}
		switch {
		case keptKeys.MatchString(k):
			r.Log.Info(fmt.Sprintf("Modified entry '%s' in corosync.conf cannot be changed at run-time", k))
			kept = append(kept, k)
		case refusedKeys.MatchString(k) || nodelistFixed.MatchString(k):
			refused = append(refused, k)
		default:
			changed = append(changed, k)
		}
	}
	if added, removed := nodelistNodes(have, want); len(added)+len(removed) > 0 {
		refused = append(refused, fmt.Sprintf("nodes added %v / removed %v", added, removed))
	}
	if len(refused) > 0 {
		return ReloadResult{Code: cswire.ErrInvalidParam, Ignored: kept, Reason: fmt.Sprintf(
			"%s cannot change while corobus runs (the nodelist's nodes and addresses and the bus are set at start): restart the nodes to apply them",
			strings.Join(refused, ", "))}
	}
	logging := slices.ContainsFunc(changed, func(k string) bool { return strings.HasPrefix(k, "logging.") })
	var section map[string]string
	if logging {
		section = map[string]string{}
		for k, v := range cfg.Flat() {
			if strings.HasPrefix(k, "logging.") {
				section[k] = v
			}
		}
		if _, err := logsys.ConfigFrom(func(k string) string { return section[k] }, logsys.Subsystems()); err != nil {
			return ReloadResult{Code: cswire.ErrInvalidParam, Ignored: kept, Reason: fmt.Sprintf("the new logging section: %v", err)}
		}
	}
	for _, k := range changed {
		nv, inNew := want[k]
		var err error
		if !inNew {
			err = r.DB.Delete(ctx, k)
			if errors.Is(err, cswire.ErrNotExist) {
				err = nil
			}
		} else {
			var v objdb.Value
			v, err = objdb.ParseValue(objdb.TypeOf(k), nv)
			if err != nil {
				v, err = objdb.ParseValue(objdb.String, nv)
			}
			if err == nil {
				err = r.DB.Set(ctx, k, v)
			}
		}
		if err != nil {
			return ReloadResult{Code: cswire.Code(err), Changed: changed, Ignored: kept,
				Reason: fmt.Sprintf("writing %s: %v (the configuration may be partly applied)", k, err)}
		}
	}
	if logging && r.Logging != nil {
		if err := r.Logging(ctx, section); err != nil {
			return ReloadResult{Code: cswire.ErrLibrary, Changed: changed, Ignored: kept,
				Reason: fmt.Sprintf("applying the new logging section: %v", err)}
		}
	}
	return ReloadResult{Code: cswire.OK, Changed: changed, Ignored: kept}
}

func inSections(k string) bool {
	for _, p := range objdb.ConfigSections() {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func union(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// normalize spells a file value as objdb prints it (a number "0x10" as
// "16"), so that an unchanged key compares equal.
func normalize(key, v string) string {
	if val, err := objdb.ParseValue(objdb.TypeOf(key), v); err == nil {
		return val.String()
	}
	return v
}

var nodePos = regexp.MustCompile(`^nodelist\.node\.(\d+)\.nodeid$`)

// nodelistNodes compares the node ids of two nodelists.
func nodelistNodes(have, want map[string]string) (added, removed []string) {
	ids := func(m map[string]string) map[string]bool {
		out := map[string]bool{}
		for k, v := range m {
			if nodePos.MatchString(k) {
				out[normalize(k, v)] = true
			}
		}
		return out
	}
	h, w := ids(have), ids(want)
	for id := range w {
		if !h[id] {
			added = append(added, id)
		}
	}
	for id := range h {
		if !w[id] {
			removed = append(removed, id)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}
