package loader

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Registry is the loader's state: announced instances and the references
// held through it. It is soft state, rebuilt from heartbeats and hold
// messages after a loader restarts. Not safe for concurrent use; the
// Server serializes access.
type Registry struct {
	instances map[string]*instance // by instance id
	holders   map[string]*holder
}

type instance struct {
	ann      Announcement
	lastSeen time.Time
}

type holder struct {
	refs     map[refKey]int
	lastSeen time.Time
	ttl      time.Duration
}

type refKey struct {
	name    string
	version uint32
}

// expiryFactor is how many announcement intervals an instance may miss
// before it is dropped: one lost heartbeat is not a crash.
const expiryFactor = 3

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{instances: map[string]*instance{}, holders: map[string]*holder{}}
}

// Announce applies an announcement received at now. It reports whether
// what the announced name resolves to may have changed (a new instance, a
// state change, a departure); plain heartbeats report false.
func (r *Registry) Announce(a Announcement, now time.Time) (changed bool, err error) {
	if err := a.wellFormed(); err != nil {
		return false, err
	}
	old, known := r.instances[a.Instance]
	if a.State == Leaving {
		delete(r.instances, a.Instance)
		return known, nil
	}
	if a.State == "" {
		a.State = Serving
	}
	r.instances[a.Instance] = &instance{ann: a, lastSeen: now}
	return !known || old.ann.State != a.State || old.ann.Subject != a.Subject || old.ann.Version != a.Version, nil
}

// Expire drops instances silent for expiryFactor intervals and holders
// that stopped restating their references; it returns the names whose
// resolution may have changed.
func (r *Registry) Expire(now time.Time) []string {
	var names []string
	for id, in := range r.instances {
		if now.Sub(in.lastSeen) > expiryFactor*in.ann.interval() {
			delete(r.instances, id)
			names = append(names, in.ann.Name)
		}
	}
	for id, h := range r.holders {
		if now.Sub(h.lastSeen) > expiryFactor*h.ttl {
			delete(r.holders, id)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// NextExpiry is when Expire would next drop something, if anything is
// registered: the earliest instance or holder deadline.
func (r *Registry) NextExpiry() (time.Time, bool) {
	var next time.Time
	for _, in := range r.instances {
		if d := in.lastSeen.Add(expiryFactor * in.ann.interval()); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	for _, h := range r.holders {
		if d := h.lastSeen.Add(expiryFactor * h.ttl); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next, !next.IsZero()
}

// candidate is one (namespace, name, version) with serving instances.
type candidate struct {
	ann       Announcement // of its oldest serving instance
	instances int
}

// candidates returns, per namespace, the serving versions of name that
// answer a reference to version: the version itself, or one that declares
// it replaces it.
func (r *Registry) candidates(name string, version uint32) map[string]map[uint32]*candidate {
	out := map[string]map[uint32]*candidate{}
	for _, in := range r.instances {
		a := in.ann
		if a.Name != name || a.State != Serving {
			continue
		}
		if a.Version != version && !slices.Contains(a.Replaces, version) {
			continue
		}
		byVer := out[a.Namespace]
		if byVer == nil {
			byVer = map[uint32]*candidate{}
			out[a.Namespace] = byVer
		}
		c := byVer[a.Version]
		if c == nil {
			c = &candidate{ann: a}
			byVer[a.Version] = c
		} else if a.Started.Before(c.ann.Started) {
			c.ann = a
		}
		c.instances++
	}
	return out
}

// Resolve finds what a reference to (name, version) reaches along path:
// the first namespace that has a serving match wins (as the first
// directory of LCRSODIR, LD_LIBRARY_PATH and ld.so.conf did), and within
// it the highest serving version among the requested one and those that
// replace it, so that a replacement takes over as soon as it serves.
func (r *Registry) Resolve(name string, version uint32, path []string) (Target, error) {
	cands := r.candidates(name, version)
	for _, ns := range path {
		byVer := cands[ns]
		if len(byVer) == 0 {
			continue
		}
		best := slices.Max(slices.Collect(maps.Keys(byVer)))
		c := byVer[best]
		return Target{Name: name, Requested: version, Version: best, Namespace: ns, Subject: c.ann.Subject, Instances: c.instances}, nil
	}
	return Target{}, fmt.Errorf("%s version %d on search path %s: %w", name, version, strings.Join(path, " "), ErrNotFound)
}

// Retirement is an instance that a serving replacement in its namespace
// has superseded, and that replacement.
type Retirement struct {
	Instance string
	By       Target
}

// Superseded lists the serving instances that should retire: some serving
// component in the same namespace declares it replaces their version.
func (r *Registry) Superseded() []Retirement {
	var out []Retirement
	for id, in := range r.instances {
		a := in.ann
		if a.State != Serving {
			continue
		}
		byVer := r.candidates(a.Name, a.Version)[a.Namespace]
		var best uint32
		found := false
		for v := range byVer {
			if v != a.Version && (!found || v > best) {
				best, found = v, true
			}
		}
		if found {
			c := byVer[best]
			out = append(out, Retirement{Instance: id, By: Target{
				Name: a.Name, Requested: a.Version, Version: best, Namespace: a.Namespace, Subject: c.ann.Subject, Instances: c.instances,
			}})
		}
	}
	slices.SortFunc(out, func(x, y Retirement) int { return strings.Compare(x.Instance, y.Instance) })
	return out
}

// Reference counts one more reference of (name, version) by holder.
func (r *Registry) Reference(holderID, name string, version uint32, now time.Time) {
	h := r.holder(holderID, now)
	h.refs[refKey{name, version}]++
}

// Release drops one reference; releasing what is not held is a no-op (the
// count is soft state and may have expired).
func (r *Registry) Release(holderID, name string, version uint32, now time.Time) {
	h := r.holder(holderID, now)
	k := refKey{name, version}
	if h.refs[k] > 1 {
		h.refs[k]--
	} else {
		delete(h.refs, k)
	}
}

// Hold replaces what a holder holds with its restatement.
func (r *Registry) Hold(m HoldMsg, now time.Time) {
	h := r.holder(m.Holder, now)
	if m.IntervalMS > 0 {
		h.ttl = time.Duration(m.IntervalMS) * time.Millisecond
	}
	clear(h.refs)
	for _, ref := range m.Refs {
		if ref.Count > 0 {
			h.refs[refKey{ref.Name, ref.Version}] = ref.Count
		}
	}
}

func (r *Registry) holder(id string, now time.Time) *holder {
	h := r.holders[id]
	if h == nil {
		h = &holder{refs: map[refKey]int{}, ttl: DefaultHoldInterval}
		r.holders[id] = h
	}
	h.lastSeen = now
	return h
}

// List describes every component, its instances and the references that
// resolve to it along path.
func (r *Registry) List(path []string) []ComponentInfo {
	type cKey struct {
		ns, name string
		version  uint32
	}
	byKey := map[cKey]*ComponentInfo{}
	for _, in := range r.instances {
		a := in.ann
		k := cKey{a.Namespace, a.Name, a.Version}
		ci := byKey[k]
		if ci == nil {
			ci = &ComponentInfo{Name: a.Name, Version: a.Version, Namespace: a.Namespace, Subject: a.Subject, Priority: a.Priority,
				Interfaces: a.Interfaces, Dependencies: a.Dependencies, Replaces: a.Replaces}
			byKey[k] = ci
		}
		ci.Instances = append(ci.Instances, InstanceInfo{ID: a.Instance, Node: a.Node, PID: a.PID, State: a.State,
			Started: a.Started, LastSeen: in.lastSeen, Stats: a.Stats})
	}
	for _, h := range r.holders {
		for k, n := range h.refs {
			t, err := r.Resolve(k.name, k.version, path)
			if err != nil {
				continue
			}
			if ci := byKey[cKey{t.Namespace, t.Name, t.Version}]; ci != nil {
				ci.Refs += n
			}
		}
	}
	out := make([]ComponentInfo, 0, len(byKey))
	for _, ci := range byKey {
		slices.SortFunc(ci.Instances, func(x, y InstanceInfo) int { return strings.Compare(x.ID, y.ID) })
		out = append(out, *ci)
	}
	slices.SortFunc(out, func(x, y ComponentInfo) int {
		return cmp.Or(strings.Compare(x.Name, y.Name), cmp.Compare(x.Version, y.Version), strings.Compare(x.Namespace, y.Namespace))
	})
	return out
}
