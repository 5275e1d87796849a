package bus_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/internal/testlog"
)

// debugLogger logs everything, debug included, to b, for the test to
// read back.
func debugLogger(b *testlog.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, bus.AuthKeyDefaultSize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestReadAuthKeyAsCorosync(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		size    int
		wantLen int
		wantErr string
	}{
		{size: 127, wantErr: "could only read 1016 bits of minimum 1024 bits"},
		{size: 128, wantLen: 128},
		{size: 256, wantLen: 256},
		{size: 4096, wantLen: 4096},
		{size: 5000, wantLen: 4096}, // corosync reads at most 4096 bytes
	} {
		p := filepath.Join(dir, "key"+strconv.Itoa(tc.size))
		if err := os.WriteFile(p, bytes.Repeat([]byte{7}, tc.size), 0o400); err != nil {
			t.Fatal(err)
		}
		k, err := bus.ReadAuthKey(p)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("size %d: err %v, want %q", tc.size, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(k) != tc.wantLen {
			t.Errorf("size %d: %d bytes, %v; want %d bytes", tc.size, len(k), err, tc.wantLen)
		}
	}
	if _, err := bus.ReadAuthKey(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "could not open") {
		t.Errorf("absent key: %v", err)
	}
}

func TestWriteAuthKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "authkey")
	if err := bus.WriteAuthKey(p, 100, rand.Reader); err == nil {
		t.Error("a 100-byte key was written")
	}
	if err := bus.WriteAuthKey(p, bus.AuthKeyDefaultSize, rand.Reader); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o400 || st.Size() != bus.AuthKeyDefaultSize {
		t.Errorf("key file mode %v size %d, want 0400 and %d", st.Mode().Perm(), st.Size(), bus.AuthKeyDefaultSize)
	}
	if k, err := bus.ReadAuthKey(p); err != nil || len(k) != bus.AuthKeyDefaultSize {
		t.Errorf("reading it back: %d bytes, %v", len(k), err)
	}
}

func loadConf(t *testing.T, text string, overrides ...string) (*config.Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "corosync.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(config.Options{File: p, Overrides: overrides})
}

func TestCryptoFrom(t *testing.T) {
	for _, tc := range []struct {
		totem   string
		want    bus.Crypto
		wantErr string
		// A value corosync.conf never accepts is refused by the loader,
		// with the file's line, before CryptoFrom sees it.
		wantLoadErr string
	}{
		{totem: "", want: bus.Crypto{Model: "nss", Cipher: "none", Hash: "none"}},
		{totem: "secauth: on", want: bus.Crypto{Model: "nss", Cipher: "aes256", Hash: "sha256"}},
		{totem: "secauth: on\n crypto_cipher: aes128", want: bus.Crypto{Model: "nss", Cipher: "aes128", Hash: "sha256"}},
		{totem: "crypto_hash: sha1", want: bus.Crypto{Model: "nss", Cipher: "none", Hash: "sha1"}},
		{totem: "crypto_model: openssl\n crypto_cipher: aes192\n crypto_hash: sha512", want: bus.Crypto{Model: "openssl", Cipher: "aes192", Hash: "sha512"}},
		{totem: "crypto_cipher: aes256", wantErr: "requires totem.crypto_hash"},
		{totem: "crypto_cipher: aes999\n crypto_hash: sha1", wantLoadErr: "corosync.conf:4: totem.crypto_cipher"},
		{totem: "crypto_hash: crc32", wantLoadErr: "corosync.conf:4: totem.crypto_hash"},
		{totem: "crypto_model: rot13", wantLoadErr: "corosync.conf:4: totem.crypto_model"},
	} {
		cfg, err := loadConf(t, "totem {\n version: 2\n cluster_name: c\n "+tc.totem+"\n}\nnodelist {\n node {\n nodeid: 1\n ring0_addr: 127.0.0.1\n }\n}\n")
		if tc.wantLoadErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantLoadErr) {
				t.Errorf("%q: load err %v, want %q", tc.totem, err, tc.wantLoadErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.totem, err)
		}
		got, err := bus.CryptoFrom(cfg)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.totem, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.totem, got, err, tc.want)
		}
	}
}

func TestRouteCAIsDerivedFromKeyAndCluster(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	a, _, err := bus.RouteCA(k1, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	again, _, _ := bus.RouteCA(append([]byte(nil), k1...), "alpha")
	if !bytes.Equal(a.Raw, again.Raw) {
		t.Error("the same key and cluster derived two different CAs")
	}
	other, _, _ := bus.RouteCA(k2, "alpha")
	if bytes.Equal(a.RawSubjectPublicKeyInfo, other.RawSubjectPublicKeyInfo) {
		t.Error("two keys derived the same CA key")
	}
	cluster, _, _ := bus.RouteCA(k1, "beta")
	if bytes.Equal(a.RawSubjectPublicKeyInfo, cluster.RawSubjectPublicKeyInfo) {
		t.Error("one key derived the same CA for two clusters")
	}
	p1, _ := bus.RoutePassword(k1, "alpha")
	p2, _ := bus.RoutePassword(k2, "alpha")
	if p1 == p2 || len(p1) != 64 {
		t.Errorf("route passwords %q and %q", p1, p2)
	}
}

// rogue is a nats-server that does not hold the cluster key, its routes
// pointed at a node's route port, with a client subscribed to everything.
type rogue struct {
	srv  *server.Server
	got  atomic.Int64
	subj atomic.Value
}

func startRogue(t *testing.T, routeURL string, cluster string, sec *bus.RouteSecurity) *rogue {
	t.Helper()
	u, err := url.Parse(routeURL)
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{
		ServerName: "rogue",
		Host:       "127.0.0.1",
		Port:       -1,
		NoSigs:     true,
		NoLog:      true,
		Cluster:    server.ClusterOpts{Name: cluster, Host: "127.0.0.1", Port: -1},
		Routes:     []*url.URL{u},
	}
	if sec != nil {
		opts.Cluster.TLSConfig = sec.TLS
		u.User = url.UserPassword(sec.User, sec.Password)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	t.Cleanup(srv.Shutdown)
	r := &rogue{srv: srv}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(">", func(m *nats.Msg) { r.got.Add(1); r.subj.Store(m.Subject) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRogueRouteServerIsRefused is issue 17's third hole, as the attacker
// did it: a plain nats-server with no key, its route pointed at a node's
// route port. With totem crypto on it gets no route, no subject traffic
// reaches it, and the node's log says who was refused, once, however often
// the rogue retries. A rogue that speaks TLS with a certificate of its own
// (another key) fares no better.
func TestRogueRouteServerIsRefused(t *testing.T) {
	var logs testlog.Buffer
	c := bustest.StartClusterWith(t, 2, bustest.Options{RouteKey: newKey(t), Logger: debugLogger(&logs)})
	routeURL := "nats-route://127.0.0.1:" + strconv.Itoa(c.Nodes[0].Config.RoutePort)

	for _, tc := range []struct {
		name string
		sec  func() *bus.RouteSecurity
	}{
		{"plain", func() *bus.RouteSecurity { return nil }},
		{"tls with another key", func() *bus.RouteSecurity {
			rs, err := bus.KeyedRouteSecurity(newKey(t), c.Name, 9)
			if err != nil {
				t.Fatal(err)
			}
			return rs
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Nodes[0].Server.Refused()
			r := startRogue(t, routeURL, c.Name, tc.sec())
			// The rogue retries its route every second: see it refused
			// twice, so that the second attempt is known to be rate-limited.
			waitFor(t, "the node to refuse the rogue twice", func() bool { return c.Nodes[0].Server.Refused() >= before+2 })

			pub := c.Conn(1)
			sub := c.Conn(2)
			var delivered atomic.Int64
			if _, err := sub.Subscribe("secret.>", func(*nats.Msg) { delivered.Add(1) }); err != nil {
				t.Fatal(err)
			}
			if err := sub.Flush(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the cluster to carry traffic", func() bool {
				_ = pub.Publish("secret.data", []byte("cluster traffic"))
				_ = pub.Flush()
				return delivered.Load() >= 10
			})
			if n := r.got.Load(); n != 0 {
				t.Errorf("the rogue's client received %d messages (last on %v)", n, r.subj.Load())
			}
			if n := r.srv.NumRoutes(); n != 0 {
				t.Errorf("the rogue has %d routes", n)
			}
			for _, nd := range c.Nodes {
				st, err := nd.Server.Status()
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Routes) != 1 {
					t.Errorf("node %d has routes %+v, want only its peer", nd.ID, st.Routes)
				}
			}
		})
	}
	out := logs.String()
	if !strings.Contains(out, "route refused") || !strings.Contains(out, "from=127.0.0.1:") {
		t.Errorf("the node's log does not say who was refused:\n%s", out)
	}
	// Rate-limited: one line per host and minute, not one per attempt.
	if n := strings.Count(out, "route refused"); n > 2*len(c.Nodes) {
		t.Errorf("%d refusal lines for a handful of attempts:\n%s", n, out)
	}
	if strings.Contains(out, "TLS route handshake error") {
		t.Errorf("nats-server's own handshake errors reached the log unfiltered:\n%s", out)
	}
}

// TestKeyedClusterForms: nodes holding the same key route to each other
// over TLS, JetStream included; a node with another key is kept out.
func TestKeyedClusterForms(t *testing.T) {
	c := bustest.StartClusterWith(t, 3, bustest.Options{RouteKey: newKey(t)})
	for _, nd := range c.Nodes {
		if !mustVarz(t, nd.Server).Cluster.TLSRequired {
			t.Errorf("node %d: routes do not require TLS", nd.ID)
		}
	}
	// The meta leader answers JetStream's API; from node 3 the request
	// crosses a route. Asked until it answers: a route may still be
	// settling on a loaded machine.
	nc := c.Conn(3)
	waitFor(t, "JetStream to answer over the TLS routes", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := nc.RequestWithContext(ctx, "$JS.API.INFO", nil)
		return err == nil
	})
}

func mustVarz(t *testing.T, s *bus.Server) *server.Varz {
	t.Helper()
	v, err := s.NATS().Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
