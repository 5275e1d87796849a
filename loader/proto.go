// Package loader is corobus's Live Component Replacement (corosync's LCR):
// components announce themselves on the bus, clients Reference a component
// by name and version through a search path of subject namespaces and get
// a handle from the handle database (loader/hdb), and a new version of a
// component that declares it replaces an old one takes over without a
// request being lost or served twice.
//
// Three parts live here: the loader process (Server, `corobus loader`),
// which keeps the registry of announced components and answers resolution
// requests for its node's search path; the client library (Client), which
// caches what a handle resolves to and re-resolves only when the loader
// says something changed, so that a request through a held handle costs no
// loader round trip; and the component library (Component), which serves a
// component's subject, announces it, and implements retirement. The wire
// protocol is in docs/loader.md, so that a component in any language can
// join.
package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/corobus/corobus/bus"
)

// State of a component instance, as it announces it.
type State string

// Instance states.
const (
	// Serving instances are what names resolve to.
	Serving State = "serving"
	// Retiring instances were replaced: they finish the requests they
	// took and answer every later one with a "moved" reply.
	Retiring State = "retiring"
	// Leaving is the last announcement of an instance that stops.
	Leaving State = "leaving"
)

// DefaultInterval is a component instance's default heartbeat: it
// announces itself at least that often, and the loader drops it after 3
// silent intervals. Stopping instances say so (Leaving) at once, and a
// restarted one announces itself at once, so the heartbeat only finds an
// instance that died without a word (SIGKILL, a crash) — at a cost of
// one message per instance per interval to every loader whose search
// path has its namespace and to its node's service manager, all day; at
// 1 s that was most of an idle node's bus traffic.
const DefaultInterval = 5 * time.Second

// DefaultHoldInterval is how often a Client restates the references it
// holds while they do not change (a change is restated at once); the
// loader drops a holder silent for 3 of them.
const DefaultHoldInterval = 5 * time.Second

// Announcement is what a component instance publishes on
// Subjects.LcrAnnounce(namespace, name) when it starts, every Interval after that (its
// heartbeat), and once with State Leaving when it stops.
type Announcement struct {
	Name    string `json:"name"`
	Version uint32 `json:"version"`
	// Namespace is the subject namespace the instance serves in: a
	// search path entry ("node1", "cluster", …).
	Namespace string `json:"namespace"`
	// Subject is what the instance serves; requests go to Subject.<fn>.
	Subject string `json:"subject"`
	// Queue is the queue group every instance of this component and
	// version joins, so that they share the load.
	Queue string `json:"queue"`
	// Instance identifies this instance (unique; its control subject
	// is Subjects.LcrControl(Instance)).
	Instance     string   `json:"instance"`
	Interfaces   []string `json:"interfaces,omitempty"`
	Priority     int      `json:"priority"`
	Dependencies []string `json:"dependencies,omitempty"`
	// Replaces lists the versions of the same component this one takes
	// over from (corosync's versions_replace).
	Replaces   []uint32           `json:"replaces,omitempty"`
	Node       uint32             `json:"node"`
	PID        int                `json:"pid"`
	State      State              `json:"state"`
	IntervalMS int64              `json:"interval_ms"`
	Started    time.Time          `json:"started"`
	Stats      map[string]FnStats `json:"stats,omitempty"`
	// Moved counts the requests answered "moved" since retiring.
	Moved uint64 `json:"moved,omitempty"`
}

// FnStats counts one function's requests: RX received (and served), TX
// replies sent. They become runtime.services.<service>.<fn>.{rx,tx}.
type FnStats struct {
	RX uint64 `json:"rx"`
	TX uint64 `json:"tx"`
}

// interval is the announcement period, with a floor for a missing field.
func (a Announcement) interval() time.Duration {
	if a.IntervalMS <= 0 {
		return time.Second
	}
	return time.Duration(a.IntervalMS) * time.Millisecond
}

// ParseAnnouncement decodes an announcement received on subject and checks
// it: well formed, and on its own subject — the namespaced one, or the
// legacy one of its name. A component may publish only its own name's
// subjects (bus grants), so an announcement on another's subject is
// refused, not taken for that one.
func ParseAnnouncement(subjects bus.Subjects, subject string, data []byte) (Announcement, error) {
	var a Announcement
	if err := json.Unmarshal(data, &a); err != nil {
		return Announcement{}, fmt.Errorf("unreadable component announcement on %s: %w", subject, err)
	}
	if err := a.wellFormed(); err != nil {
		return Announcement{}, err
	}
	if subject != subjects.LcrAnnounce(a.Namespace, a.Name) && subject != subjects.LcrAnnounceLegacy(a.Name) {
		return Announcement{}, fmt.Errorf("announcement of %s in namespace %s on another's subject %s", a.Name, a.Namespace, subject)
	}
	return a, nil
}

func (a Announcement) wellFormed() error {
	switch {
	case a.Name == "":
		return errors.New("announcement without a name")
	case a.Instance == "":
		return fmt.Errorf("announcement of %s without an instance id", a.Name)
	case a.Subject == "" || strings.ContainsAny(a.Subject, " *>"):
		return fmt.Errorf("announcement of %s: subject %q is not a literal subject", a.Name, a.Subject)
	case a.Namespace == "":
		return fmt.Errorf("announcement of %s without a namespace", a.Name)
	}
	return nil
}

// Target is what a reference resolves to.
type Target struct {
	Name string `json:"name"`
	// Requested is the version asked for; Version the version of the
	// component that serves it (higher when a replacement took over).
	Requested uint32 `json:"requested"`
	Version   uint32 `json:"version"`
	Namespace string `json:"namespace"`
	Subject   string `json:"subject"`
	Instances int    `json:"instances"`
}

// RefRequest asks the loader to resolve a component (reference, resolve,
// release operations).
type RefRequest struct {
	Holder  string `json:"holder,omitempty"`
	Name    string `json:"name"`
	Version uint32 `json:"version"`
}

// HoldMsg restates every reference a client holds (Subjects.LcrHold).
type HoldMsg struct {
	Holder     string    `json:"holder"`
	IntervalMS int64     `json:"interval_ms"`
	Refs       []HeldRef `json:"refs"`
}

// HeldRef is one referenced (name, version) and how many handles hold it.
type HeldRef struct {
	Name    string `json:"name"`
	Version uint32 `json:"version"`
	Count   int    `json:"count"`
}

// Changed is published on Subjects.LcrChanged(node, name).
type Changed struct {
	Name string `json:"name"`
}

// Control is a request on a component instance's control subject.
type Control struct {
	// Op is "retire" (a replacement serves now: finish and leave),
	// "exit" (may the service manager stop you? corosync's exec_exit_fn)
	// or "ping".
	Op string  `json:"op"`
	By *Target `json:"by,omitempty"`
}

// Control operations.
const (
	OpRetire = "retire"
	OpExit   = "exit"
	OpPing   = "ping"
)

// ControlReply answers a Control request. Busy answers "exit": ask again
// later (exec_exit_fn returning -1).
type ControlReply struct {
	OK    bool   `json:"ok"`
	Busy  bool   `json:"busy,omitempty"`
	Error string `json:"error,omitempty"`
}

// Listing is the reply of the list operation: everything the loader knows
// (the namespaces of its search path, and the instances that announce on
// the legacy subject).
type Listing struct {
	Node       uint32          `json:"node"`
	SearchPath []string        `json:"search_path"`
	Components []ComponentInfo `json:"components"`
}

// ComponentInfo is one (namespace, name, version) with its instances.
type ComponentInfo struct {
	Name         string         `json:"name"`
	Version      uint32         `json:"version"`
	Namespace    string         `json:"namespace"`
	Subject      string         `json:"subject"`
	Priority     int            `json:"priority"`
	Interfaces   []string       `json:"interfaces,omitempty"`
	Dependencies []string       `json:"dependencies,omitempty"`
	Replaces     []uint32       `json:"replaces,omitempty"`
	Refs         int            `json:"refs"`
	Instances    []InstanceInfo `json:"instances"`
}

// InstanceInfo is one announced instance.
type InstanceInfo struct {
	ID       string             `json:"id"`
	Node     uint32             `json:"node"`
	PID      int                `json:"pid"`
	State    State              `json:"state"`
	Started  time.Time          `json:"started"`
	LastSeen time.Time          `json:"last_seen"`
	Stats    map[string]FnStats `json:"stats,omitempty"`
}

// Request and reply headers of component requests.
const (
	// HdrReqID carries the request's id (set by the client library when
	// the caller did not), for tracing and de-duplication by components.
	HdrReqID = "Lcr-Req-Id"
	// HdrStatus is "moved" on the reply of a retiring instance: the
	// request was not served, resolve again and resend.
	HdrStatus = "Lcr-Status"
	// HdrInstance and HdrVersion say which instance served a request.
	HdrInstance = "Lcr-Instance"
	HdrVersion  = "Lcr-Version"
	// HdrError carries a component's error text; the payload is empty.
	HdrError = "Lcr-Error"
)

// StatusMoved is HdrStatus on a reply that did not serve the request.
const StatusMoved = "moved"

// Loader API operations, the last token of Subjects.LcrAPI.
const (
	APIReference = "reference"
	APIResolve   = "resolve"
	APIRelease   = "release"
	APIList      = "list"
)

// Errors.
var (
	// ErrNotFound: nothing on the search path serves the name and version.
	ErrNotFound = errors.New("no component found")
	// ErrUnavailable: the component was referenced but no instance answers
	// now (it crashed and was not restarted yet, or the loader is away).
	ErrUnavailable = errors.New("component unavailable")
	// ErrBusy is returned by a component's Exit to ask for more time.
	ErrBusy = errors.New("component busy; ask again")
)

// RemoteError is the error a component returned for one request.
type RemoteError struct {
	Instance string
	Text     string
}

func (e *RemoteError) Error() string { return "component " + e.Instance + ": " + e.Text }

// LocalNamespace is the namespace of the components of one node; the
// search path entry "local" stands for it.
func LocalNamespace(node uint32) string { return "node" + strconv.FormatUint(uint64(node), 10) }

// ClusterNamespace is the namespace of components that serve the whole
// cluster from any node.
const ClusterNamespace = "cluster"

// DefaultSearchPath is loader.search_path's default: this node's
// components first, then the cluster's.
const DefaultSearchPath = "local cluster"

// ExpandSearchPath turns loader.search_path (space- or comma-separated
// namespaces, "local" meaning node's own) into namespaces, checking that
// each is a valid run of subject tokens.
func ExpandSearchPath(raw string, node uint32) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		raw = DefaultSearchPath
	}
	var out []string
	for _, ns := range strings.FieldsFunc(raw, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		if ns == "local" {
			ns = LocalNamespace(node)
		}
		if err := checkNamespace(ns); err != nil {
			return nil, fmt.Errorf("loader.search_path: %w", err)
		}
		out = append(out, ns)
	}
	return out, nil
}

func checkNamespace(ns string) error {
	for _, tok := range strings.Split(ns, ".") {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
			return fmt.Errorf("namespace %q: invalid subject token %q", ns, tok)
		}
	}
	return nil
}
