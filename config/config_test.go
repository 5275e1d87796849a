package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const threeNodes = `totem {
	version: 2
	cluster_name: tri
	token: 3000
}
nodelist {
	node {
		nodeid: 1
		ring0_addr: 10.0.0.1
	}
	node {
		nodeid: 2
		ring0_addr: 10.0.0.2
		bus_port: 7000
	}
	node {
		nodeid: 3
		ring0_addr: 10.0.0.3
	}
}
`

func TestLoadCorosyncConf(t *testing.T) {
	p := writeFile(t, "corosync.conf", threeNodes)
	c, err := Load(Options{File: p, Overrides: []string{"totem.nodeid=2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ClusterName(); got != "tri" {
		t.Errorf("cluster name = %q", got)
	}
	if got, _ := c.Millis("totem.token", 0); got != 3*time.Second {
		t.Errorf("token = %v", got)
	}
	nodes, err := c.Nodes()
	if err != nil || len(nodes) != 3 {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	local, err := c.LocalNode()
	if err != nil {
		t.Fatal(err)
	}
	want := Node{Index: 1, ID: 2, Name: "node2", Addr: "10.0.0.2", BusPort: 7000, ClientPort: DefaultClientPort}
	if local != want {
		t.Errorf("local node = %+v, want %+v", local, want)
	}
	if got := c.Prefix(); got != "corobus.tri" {
		t.Errorf("prefix = %q", got)
	}
}

func TestLayersOverride(t *testing.T) {
	p := writeFile(t, "corosync.conf", threeNodes)
	c, err := Load(Options{
		File:      p,
		Environ:   []string{"COROBUS_TOTEM__TOKEN=4000", "COROBUS_TOTEM__NODEID=1", "HOME=/x"},
		Overrides: []string{"totem.token=5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// flags beat environment beat file beat defaults
	if got := c.String("totem.token"); got != "5000" {
		t.Errorf("totem.token = %q, want the flag's 5000", got)
	}
	if got := c.String("totem.nodeid"); got != "1" {
		t.Errorf("totem.nodeid = %q, want the environment's 1", got)
	}
	if got := c.String("totem.join"); got != "50" {
		t.Errorf("totem.join = %q, want the default 50", got)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(Options{UserStateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded() || c.StateDir() != dir {
		t.Errorf("embedded=%v state dir=%q", c.Embedded(), c.StateDir())
	}
	local, err := c.LocalNode()
	if err != nil || local.ID != 1 || local.Addr != "127.0.0.1" {
		t.Errorf("local = %+v, %v", local, err)
	}
}

func TestYAML(t *testing.T) {
	p := writeFile(t, "corobus.yaml", `totem:
  cluster_name: y
  token: 2000
quorum.provider: corosync_votequorum
nodelist:
  node:
    "0":
      nodeid: 7
      ring0_addr: 127.0.0.1
`)
	c, err := Load(Options{File: p})
	if err != nil {
		t.Fatal(err)
	}
	local, err := c.LocalNode()
	if err != nil || local.ID != 7 {
		t.Errorf("local = %+v, %v", local, err)
	}
	// A dotted key names its sections.
	if v := c.String("quorum.provider"); v != "corosync_votequorum" {
		t.Errorf("quorum.provider = %q", v)
	}
}

// A YAML list where corosync.conf repeats a section is refused saying how
// to write it instead.
func TestYAMLList(t *testing.T) {
	p := writeFile(t, "corobus.yaml", `nodelist:
  node:
    - nodeid: 1
      ring0_addr: 127.0.0.1
`)
	_, err := Load(Options{File: p})
	if err == nil || !strings.Contains(err.Error(), "nodelist.node is a list") || !strings.Contains(err.Error(), `nodelist: {node: {"0": {`) {
		t.Errorf("err = %v; want it to say nodelist.node is a list and how to write it", err)
	}
}

// A mistake in a YAML file is reported as one in a corosync.conf is: file,
// line, and what was expected (until 3 Dec: by key only, 3e3 read as 3000,
// an empty value as "<nil>").
func TestYAMLErrors(t *testing.T) {
	const nodes = "nodelist:\n  node:\n    \"0\": {nodeid: 1, ring0_addr: 127.0.0.1}\n"
	for _, tc := range []struct {
		name, body string
		line       int
		want       string
	}{
		{"typo in a key", "totem:\n  cluster_name: y\n  tokn: 3000\n" + nodes, 3, "unknown key totem.tokn (did you mean totem.token?)"},
		{"wrong type", "totem:\n  cluster_name: y\n  token: soon\n" + nodes, 3, `totem.token: expected an unsigned 32-bit integer (u32), found "soon"`},
		{"a number YAML reads as a float", "totem:\n  cluster_name: y\n  token: 3e3\n" + nodes, 3, `found "3e3"`},
		{"empty value", "totem:\n  cluster_name: y\n  token:\n" + nodes, 3, `found ""`},
		{"a map for a value", "totem:\n  cluster_name: y\n  token: {ms: 3}\n" + nodes, 3, "totem.token: expected a value (u32), found a map"},
		{"a value for a section", nodes + "totem: 5\n", 4, "totem is a section"},
		{"a list for a repeated section", "totem:\n  cluster_name: y\nnodelist:\n  node:\n    - {nodeid: 1, ring0_addr: 127.0.0.1}\n", 4, "nodelist.node is a list"},
		{"a key given twice", "totem:\n  cluster_name: y\n  token: 3000\n  token: 4000\n" + nodes, 4, "totem.token is given twice (first at line 3)"},
		{"dotted and nested", "totem.token: 3000\ntotem:\n  token: 4000\n" + nodes, 3, "totem.token is given twice"},
		{"syntax", "totem:\n  cluster_name: y\n   token: 3000\n" + nodes, 3, "mapping values are not allowed"},
		{"unknown empty section", "totem:\n  cluster_name: y\n  foo: {}\n" + nodes, 3, "unknown section totem.foo"},
		{"node without an id", "totem:\n  cluster_name: y\nnodelist:\n  node:\n    \"0\": {ring0_addr: 127.0.0.1}\n", 5, "nodelist.node.0.nodeid: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "corobus.yaml", tc.body)
			_, err := Load(Options{File: p})
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			if want := fmt.Sprintf("%s:%d: ", p, tc.line); !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want %q then %q", err, want, tc.want)
			}
		})
	}
}

// A mistake is reported with where it is and what was expected; nothing
// loads.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		overrides  []string
		environ    []string
		want       []string
	}{
		{
			name: "typo in a key",
			body: "totem {\n\tversion: 2\n\ttokn: 3000\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:3", "unknown key totem.tokn", "totem.token"},
		},
		{
			name: "missing colon",
			body: "totem {\n\tversion 2\n}\n",
			want: []string{"corosync.conf:2"},
		},
		{
			name: "unclosed section",
			body: "totem {\n\tversion: 2\n",
			want: []string{"corosync.conf:", "}"},
		},
		{
			name: "bad number",
			body: "totem {\n\ttoken: soon\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:2", "totem.token"},
		},
		{
			name: "value corosync does not accept",
			body: "totem {\n\tversion: 2\n\ttransport: udpx\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:3", "totem.transport", `"knet", "udp", "udpu"`, `found "udpx"`},
		},
		{
			name: "unknown cipher",
			body: "totem {\n\tversion: 2\n\tcrypto_cipher: aes257\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:3", "totem.crypto_cipher", `"aes256"`, `found "aes257"`},
		},
		{
			name: "logging mode",
			body: threeNodes + "logging {\n\tto_syslog: maybe\n}\n",
			want: []string{"logging.to_syslog", `"yes", "no", "on", "off"`},
		},
		{
			name: "the first of two mistakes in the file",
			body: "totem {\n\ttoken: soon\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\nlogging {\n\tto_syslog: maybe\n}\n",
			want: []string{"corosync.conf:2", "totem.token"},
		},
		{
			name:      "quorum provider corosync does not have",
			body:      threeNodes,
			overrides: []string{"quorum.provider=corosync_quorum_none"},
			want:      []string{"command line", "quorum.provider", `"corosync_votequorum"`},
		},
		{
			name: "no nodelist",
			body: "totem {\n\tversion: 2\n}\n",
			want: []string{"nodelist"},
		},
		{
			name:      "unknown override",
			body:      threeNodes,
			overrides: []string{"totem.tokken=1"},
			want:      []string{"command line", "unknown key totem.tokken"},
		},
		{
			name:    "unknown environment key",
			body:    threeNodes,
			environ: []string{"COROBUS_TOTEM__NOPE=1"},
			want:    []string{"environment", "unknown key totem.nope"},
		},
		{
			name: "duplicate node id",
			body: "nodelist {\n node {\n nodeid: 1\n ring0_addr: a\n }\n node {\n nodeid: 1\n ring0_addr: b\n }\n}\n",
			want: []string{"corosync.conf:7:", "nodelist.node.1.nodeid", "also the id"},
		},
		// Mistakes found in the nodelist as a whole name their line too:
		// the key's, else the line that opens the node's section.
		{
			name: "node id zero",
			body: "nodelist {\n node {\n ring0_addr: 10.0.0.1\n nodeid: 0\n }\n}\n",
			want: []string{"corosync.conf:4:", "nodelist.node.0.nodeid", "from 1 to 4294967295"},
		},
		{
			name: "node without an id",
			body: "totem {\n\tversion: 2\n}\nnodelist {\n node {\n ring0_addr: 10.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:5:", "nodelist.node.0.nodeid: missing"},
		},
		{
			name: "node without an address",
			body: "nodelist {\n node {\n nodeid: 1\n }\n}\n",
			want: []string{"corosync.conf:2:", "nodelist.node.0.ring0_addr: missing"},
		},
		{
			name: "empty nodelist",
			body: "totem {\n\tversion: 2\n}\nnodelist {\n}\n",
			want: []string{"corosync.conf:4:", "nodelist: no node configured"},
		},
		{
			name: "empty section of no known kind",
			body: threeNodes + "totem {\n\tfoo {\n\t}\n}\n",
			want: []string{"corosync.conf:", "unknown section totem.foo"},
		},
		{
			name: "configuration version other than 2",
			body: "totem {\n\tversion: 3\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 10.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:2:", "totem.version", `found "3"`},
		},
		// corosync stops at start on an address it cannot parse ("failed
		// to parse node address '10.0.0.300'").
		{
			name: "node address out of range",
			body: "nodelist {\n node {\n nodeid: 1\n ring0_addr: 10.0.0.300\n }\n}\n",
			want: []string{"corosync.conf:4:", "nodelist.node.0.ring0_addr", "expected an IP address or a host name", `"10.0.0.300"`},
		},
		{
			name: "bad bindnetaddr",
			body: "totem {\n\tinterface {\n\t\tringnumber: 0\n\t\tbindnetaddr: 192.168.1.0/24\n\t}\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 10.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:4:", "totem.interface.0.bindnetaddr", "expected an IP address or a host name"},
		},
		{
			name: "bad mcastaddr",
			body: "totem {\n\tinterface {\n\t\tmcastaddr: 239.1.1.\n\t}\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 10.0.0.1\n }\n}\n",
			want: []string{"corosync.conf:3:", "totem.interface.0.mcastaddr", "expected an IP address or a host name"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "corosync.conf", tc.body)
			_, err := Load(Options{File: p, Overrides: tc.overrides, Environ: tc.environ})
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// Addresses corosync parses load: IPv4, IPv6 (with a zone), host names;
// and an empty section corosync knows is no key of its own.
func TestAddressesAndEmptySections(t *testing.T) {
	body := "totem {\n\tversion: 2\n\tnodeid: 1\n\tinterface {\n\t\tbindnetaddr: 192.168.1.0\n\t\tmcastaddr: ff3e::4321:1\n\t}\n}\n" +
		"quorum {\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: node-1.example.com\n ring1_addr: fe80::1%eth0\n }\n" +
		" node {\n nodeid: 2\n ring0_addr: 10.0.0.2\n }\n node {\n nodeid: 3\n ring0_addr: pcmk_3\n }\n}\n"
	c, err := Load(Options{File: writeFile(t, "corosync.conf", body)})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.Flat() {
		if k == "quorum" || strings.HasPrefix(v, "map[") {
			t.Errorf("%s = %q: an empty section became a key", k, v)
		}
	}
}

// A totem.nodeid that no node has is named with its line.
func TestLocalNodeNotInNodelist(t *testing.T) {
	body := "totem {\n\tnodeid: 7\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 10.0.0.1\n }\n}\n"
	c, err := Load(Options{File: writeFile(t, "corosync.conf", body)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LocalNode()
	if err == nil || !strings.Contains(err.Error(), "corosync.conf:2: totem.nodeid: 7 is not") {
		t.Fatalf("LocalNode: %v; want the file's line 2 and totem.nodeid", err)
	}
}

// A file written for corosync 1.x or 2.x, as Pacemaker clusters of that
// time have them (openais's aisexec and amf sections, Pacemaker's plugin
// service block, the redundant ring tuning, vsftype), loads: corosync
// takes these keys without complaint, and "an existing corosync.conf
// works unchanged" (the nodelist added: corobus needs one).
func TestLoadLegacyCorosyncConf(t *testing.T) {
	p := writeFile(t, "corosync.conf", `aisexec {
	user: root
	group: root
}
service {
	name: pacemaker
	ver: 0
	use_mgmtd: yes
	use_logd: yes
}
totem {
	version: 2
	secauth: off
	threads: 0
	vsftype: none
	token: 5000
	rrp_mode: passive
	rrp_problem_count_timeout: 2000
	rrp_problem_count_threshold: 10
	rrp_problem_count_mcast_threshold: 100
	rrp_token_expired_timeout: 47
	rrp_autorecovery_check_timeout: 1000
	interface {
		ringnumber: 0
		bindnetaddr: 10.0.0.0
		mcastaddr: 239.255.1.1
		mcastport: 5405
		ttl: 1
	}
}
amf {
	mode: disabled
}
nodelist {
	node {
		nodeid: 1
		ring0_addr: 10.0.0.1
	}
}
`)
	c, err := Load(Options{File: p})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"totem.vsftype": "none", "amf.mode": "disabled", "service.0.use_logd": "yes", "totem.rrp_token_expired_timeout": "47"}
	got := c.Explicit()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestNodeNames: a node is called by its nodelist name, else by its
// ring0_addr when that is a host name, else node<ID>.
func TestNodeNames(t *testing.T) {
	p := writeFile(t, "corosync.conf", `nodelist {
	node {
		nodeid: 1
		name: alpha
		ring0_addr: 10.0.0.1
	}
	node {
		nodeid: 2
		ring0_addr: bravo.example
	}
	node {
		nodeid: 3
		ring0_addr: fd00::3
	}
}
`)
	c, err := Load(Options{File: p, Overrides: []string{"totem.nodeid=1"}})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nodes {
		got = append(got, n.Name)
	}
	if want := "alpha bravo.example node3"; strings.Join(got, " ") != want {
		t.Errorf("names %q, want %q", strings.Join(got, " "), want)
	}
}

// A node finds itself by a host name in ring0_addr, as corosync does (pcs
// writes the nodes' names there): localhost, which the host resolves to
// its loopback address. Until 3 Dec the name was compared with the host's
// addresses as a string and the file was refused ("cannot tell which
// nodelist entry is this node … set totem.nodeid").
func TestLocalNodeByHostName(t *testing.T) {
	ips, err := net.LookupIP("localhost")
	if err != nil || len(ips) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	body := "nodelist {\n node {\n nodeid: 1\n ring0_addr: localhost\n }\n node {\n nodeid: 2\n ring0_addr: 192.0.2.1\n }\n}\n"
	c, err := Load(Options{File: writeFile(t, "corosync.conf", body)})
	if err != nil {
		t.Fatal(err)
	}
	local, err := c.LocalNode()
	if err != nil || local.ID != 1 {
		t.Fatalf("LocalNode: %+v, %v; want node 1 (localhost)", local, err)
	}
}

// A corosync.conf as pcs cluster setup writes it loads unchanged: pcs puts
// a cluster_uuid in the totem section (since pcs 0.11.3), names in
// ring0_addr, link and compression options in knet's keys, and its logging
// section. Until 3 Dec the uuid was refused as an unknown key
// ("corosync.conf:7: unknown key totem.cluster_uuid (did you mean
// totem.cluster_name?)"), so no cluster a current pcs made could start.
func TestLoadPcsCorosyncConf(t *testing.T) {
	p := writeFile(t, "corosync.conf", `totem {
    version: 2
    cluster_name: hacluster
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    cluster_uuid: e592f61f916943978bdf7c046a195980
    token: 10000
    knet_compression_model: zlib
    knet_compression_threshold: 150
    knet_compression_level: 9

    interface {
        linknumber: 1
        knet_ping_interval: 1000
        knet_ping_timeout: 2000
        knet_pong_count: 5
    }
}

nodelist {
    node {
        ring0_addr: pcmk-1
        ring1_addr: 192.168.122.121
        name: pcmk-1
        nodeid: 1
    }

    node {
        ring0_addr: pcmk-2
        ring1_addr: 192.168.122.122
        name: pcmk-2
        nodeid: 2
    }
}

quorum {
    provider: corosync_votequorum
    two_node: 1
}

logging {
    to_logfile: yes
    logfile: /var/log/cluster/corosync.log
    to_syslog: yes
    timestamp: on
}
`)
	c, err := Load(Options{File: p, Overrides: []string{"totem.nodeid=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Explicit()["totem.cluster_uuid"]; got != "e592f61f916943978bdf7c046a195980" {
		t.Errorf("totem.cluster_uuid = %q, want the file's", got)
	}
	local, err := c.LocalNode()
	if err != nil || local.Name != "pcmk-1" {
		t.Errorf("local node %+v, %v; want pcmk-1", local, err)
	}
}
