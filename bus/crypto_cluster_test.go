package bus_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/internal/testlog"
)

// cryptoConf is a corosync.conf for n nodes on 127.0.0.1..n with totem
// crypto on and keyfile as its key: a file corosync 3.1.7 itself accepts
// (corosync -t), with corobus's two port keys per node.
func cryptoConf(n int, keyfile, stateDir string, ports []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "totem {\n\tversion: 2\n\tcluster_name: secure\n\tcrypto_cipher: aes256\n\tcrypto_hash: sha256\n\tkeyfile: %s\n}\n", keyfile)
	b.WriteString("logging {\n\tto_stderr: yes\n}\nquorum {\n\tprovider: corosync_votequorum\n}\n")
	fmt.Fprintf(&b, "system {\n\tstate_dir: %s\n}\nnodelist {\n", stateDir)
	for i := range n {
		fmt.Fprintf(&b, "\tnode {\n\t\tnodeid: %d\n\t\tname: node%d\n\t\tring0_addr: 127.0.0.%d\n\t\tclient_port: %d\n\t\tbus_port: %d\n\t}\n",
			i+1, i+1, i+1, ports[2*i], ports[2*i+1])
	}
	b.WriteString("}\n")
	return b.String()
}

// TestCryptoClusterFromCorosyncConf starts two- and three-node buses from
// corosync.conf files with crypto on and one authkey (checked with the real
// corosync -t where corosync is installed): they form, over TLS. A node
// whose key differs is refused by the others.
func TestCryptoClusterFromCorosyncConf(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			dir := t.TempDir()
			keyfile := filepath.Join(dir, "authkey")
			if err := bus.WriteAuthKey(keyfile, bus.AuthKeyDefaultSize, rand.Reader); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "corosync.conf")
			if err := os.WriteFile(conf, []byte(cryptoConf(n, keyfile, dir, bustest.FreePorts(t, 2*n))), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Run("corosync accepts the file", func(t *testing.T) { corosyncAccepts(t, conf) })

			var logs testlog.Buffer
			var srvs []*bus.Server
			for id := 1; id <= n; id++ {
				srvs = append(srvs, startFromConf(t, conf, id, &logs, nil))
			}
			waitFor(t, "the routes to form", func() bool {
				for _, s := range srvs {
					st, err := s.Status()
					if err != nil || len(st.Routes) != n-1 || st.MetaLeader == "" {
						return false
					}
				}
				return true
			})
			for _, s := range srvs {
				if !mustVarz(t, s).Cluster.TLSRequired {
					t.Errorf("%s: routes do not require TLS", s.Config().ClusterName)
				}
			}
			if !strings.Contains(logs.String(), "routes protected") {
				t.Errorf("the log does not say how routes are protected:\n%s", logs.String())
			}

			// A node configured from the same file but with another key
			// file is refused: it never routes to the cluster.
			other := filepath.Join(dir, "otherkey")
			if err := bus.WriteAuthKey(other, bus.AuthKeyDefaultSize, rand.Reader); err != nil {
				t.Fatal(err)
			}
			before := srvs[0].Refused()
			free := bustest.FreePorts(t, 2)
			intruder := startFromConf(t, conf, 1, &testlog.Buffer{}, []string{"totem.keyfile=" + other,
				fmt.Sprintf("nodelist.node.0.client_port=%d", free[0]), fmt.Sprintf("nodelist.node.0.bus_port=%d", free[1])})
			waitFor(t, "the intruder to be refused", func() bool {
				var refused uint64
				for _, s := range srvs {
					refused += s.Refused()
				}
				return refused > before
			})
			if st, err := intruder.Status(); err != nil || len(st.Routes) != 0 {
				t.Errorf("the node with another key has routes %+v (%v)", st.Routes, err)
			}
		})
	}
}

// startFromConf starts node id of conf, with its own state directory.
func startFromConf(t *testing.T, conf string, id int, logs *testlog.Buffer, extra []string) *bus.Server {
	t.Helper()
	overrides := append([]string{fmt.Sprintf("totem.nodeid=%d", id), "system.state_dir=" + t.TempDir()}, extra...)
	cfg, err := config.Load(config.Options{File: conf, Overrides: overrides})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := bus.ServerConfigFrom(cfg, debugLogger(logs).With("node", id))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Route == nil {
		t.Fatal("crypto is on but the routes are not protected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := bus.StartServer(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(false) })
	return s
}

// corosyncAccepts runs the real corosync's configuration check on conf.
func corosyncAccepts(t *testing.T, conf string) {
	t.Helper()
	path, err := exec.LookPath("corosync")
	if err != nil {
		t.Skipf("corosync is not installed (%v): the file is not checked against the real corosync", err)
	}
	var out bytes.Buffer
	cmd := exec.Command(path, "-t", "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("corosync -t refuses %s: %v\n%s", conf, err, out.String())
	}
}
