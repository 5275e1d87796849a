package bus

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"slices"
	"time"

	"github.com/corobus/corobus/config"
)

// Crypto is corosync's totem crypto settings (corosync.conf(5): crypto_model,
// crypto_cipher, crypto_hash, secauth), resolved as corosync's totemconfig.c
// resolves them.
type Crypto struct {
	Model  string // nss unless set; knet's library choice, not used by corobus
	Cipher string // none, aes256, aes192, aes128
	Hash   string // none, md5, sha1, sha256, sha384, sha512
}

// Enabled reports whether the cluster network is to be protected: corosync
// turns knet's crypto on when either setting is not "none".
func (c Crypto) Enabled() bool { return c.Cipher != "none" || c.Hash != "none" }

// CryptoFrom reads the totem crypto keys. secauth: on implies aes256 and
// sha256 unless the explicit keys say otherwise; a cipher without a hash
// is refused, as corosync refuses it.
func CryptoFrom(cfg *config.Config) (Crypto, error) {
	c := Crypto{Model: "nss", Cipher: "none", Hash: "none"}
	if m := cfg.String("totem.crypto_model"); m != "" {
		if !slices.Contains([]string{"nss", "openssl", "gcrypt"}, m) {
			return c, fmt.Errorf("totem.crypto_model: invalid crypto model %q. Should be nss, openssl or gcrypt", m)
		}
		c.Model = m
	}
	if cfg.String("totem.secauth") == "on" {
		c.Cipher, c.Hash = "aes256", "sha256"
	}
	if v := cfg.String("totem.crypto_cipher"); v != "" {
		if !slices.Contains([]string{"none", "aes256", "aes192", "aes128"}, v) {
			return c, fmt.Errorf("totem.crypto_cipher: invalid cipher type %q. Should be none, aes256, aes192 or aes128", v)
		}
		c.Cipher = v
	}
	if v := cfg.String("totem.crypto_hash"); v != "" {
		if !slices.Contains([]string{"none", "md5", "sha1", "sha256", "sha384", "sha512"}, v) {
			return c, fmt.Errorf("totem.crypto_hash: invalid hash type %q. Should be none, md5, sha1, sha256, sha384 or sha512", v)
		}
		c.Hash = v
	}
	if c.Cipher != "none" && c.Hash == "none" {
		return c, fmt.Errorf("totem.crypto_cipher requires totem.crypto_hash with value other than none")
	}
	return c, nil
}

// AuthKeyFrom reads the cluster's key as corosync's totem_config_keyread
// does: totem.keyfile when set, else the key inline in totem.key, else the
// default key file. source says where it came from (never the key).
func AuthKeyFrom(cfg *config.Config) (key []byte, source string, err error) {
	if p := cfg.String("totem.keyfile"); p != "" {
		key, err := ReadAuthKey(p)
		return key, p, err
	}
	if k := cfg.String("totem.key"); k != "" {
		if len(k) > AuthKeyMax {
			return nil, "", fmt.Errorf("totem.key: key is too long (%d bytes, at most %d)", len(k), AuthKeyMax)
		}
		if len(k) < AuthKeyMin {
			return nil, "", fmt.Errorf("totem.key: key is too short (%d bytes, at least %d)", len(k), AuthKeyMin)
		}
		return []byte(k), "totem.key", nil
	}
	key, err = ReadAuthKey(DefaultAuthKeyFile)
	return key, DefaultAuthKeyFile, err
}

// RouteSecurity is how a node's routes are protected: TLS with
// verification both ways, and a route user whose password only holders of
// the cluster key know. A nil *RouteSecurity means plain routes.
type RouteSecurity struct {
	// TLS is the configuration of both sides of every route: the node's
	// certificate, the cluster's CA, client certificates required.
	TLS *tls.Config
	// User and Password authenticate routes (derived from the key; empty
	// when only configured certificates protect the routes).
	User, Password string
	// Describe says, for the log, what protects the routes.
	Describe string
}

// RouteServerName is the name every route certificate derived from the key
// carries, and the name a node verifies its peers' certificates against:
// every holder of the key is a member, whatever its address.
const RouteServerName = "route.corobus.invalid"

// Domain-separation labels of what is derived from the key. Changing one
// changes every derived secret, so each carries a version.
const (
	hkdfSalt          = "corobus routes v1"
	hkdfInfoCA        = "route CA ed25519 seed|"
	hkdfInfoRoutePass = "route password|"
)

// routeCAValidity bounds the derived CA: fixed, so that every node derives
// the same certificate from the same key.
var (
	routeCANotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	routeCANotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// RouteCA derives the cluster's route CA from the key: HKDF-SHA256 of the
// key (salted, and bound to the cluster name so that two clusters sharing
// a key do not trust each other's routes) gives an ed25519 seed; the CA
// certificate is self-signed with fixed fields, so every node that holds
// the key derives the same CA and nobody else can sign for it.
func RouteCA(key []byte, cluster string) (*x509.Certificate, ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, key, []byte(hkdfSalt), hkdfInfoCA+cluster, ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving the route CA key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"corobus"}, CommonName: "corobus route CA of cluster " + cluster},
		NotBefore:             routeCANotBefore,
		NotAfter:              routeCANotAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signing the route CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the route CA: %w", err)
	}
	return ca, priv, nil
}

// RoutePassword derives the route user's password from the key.
func RoutePassword(key []byte, cluster string) (string, error) {
	b, err := hkdf.Key(sha256.New, key, []byte(hkdfSalt), hkdfInfoRoutePass+cluster, 32)
	if err != nil {
		return "", fmt.Errorf("deriving the route password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// routeLeaf makes this process's route certificate: a fresh ed25519 key
// (never written anywhere) signed by the derived CA, valid for serving and
// for connecting, named after the node.
func routeLeaf(ca *x509.Certificate, caKey ed25519.PrivateKey, node uint32) (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating the route key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("drawing a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"corobus"}, CommonName: ServerName(node)},
		DNSNames:     []string{RouteServerName},
		NotBefore:    time.Now().Add(-time.Hour), // a peer's clock may lag
		NotAfter:     routeCANotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("signing the route certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// KeyedRouteSecurity protects routes with material derived from the key
// alone: the derived CA, a leaf certificate for this node, mutual
// verification against the CA, and the derived route password.
func KeyedRouteSecurity(key []byte, cluster string, node uint32) (*RouteSecurity, error) {
	ca, caKey, err := RouteCA(key, cluster)
	if err != nil {
		return nil, err
	}
	leaf, err := routeLeaf(ca, caKey, node)
	if err != nil {
		return nil, err
	}
	pw, err := RoutePassword(key, cluster)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &RouteSecurity{
		TLS:      mutualTLS([]tls.Certificate{leaf}, pool, RouteServerName),
		User:     "route",
		Password: pw,
		Describe: "TLS 1.3 with certificates derived from the cluster key, route password derived from the key",
	}, nil
}

// mutualTLS is one configuration for both ends of a route: present cert,
// require and verify the peer's against pool, TLS 1.3 only (its ciphers
// are all authenticated encryption).
func mutualTLS(certs []tls.Certificate, pool *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		Certificates: certs,
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}
}

// RouteTLSFiles are configured route certificates (bus.route_cert_file,
// bus.route_key_file, bus.route_ca_file), used instead of derived ones.
type RouteTLSFiles struct {
	Cert, Key, CA string
}

// Set reports whether any file is configured.
func (f RouteTLSFiles) Set() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// load builds the TLS configuration from the files. Peers' certificates are
// verified against the CA and against the address the route was dialled
// at (the peer's ring0_addr), as for any TLS server.
func (f RouteTLSFiles) load() (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, fmt.Errorf("route TLS needs all of bus.route_cert_file, bus.route_key_file and bus.route_ca_file (have cert %q, key %q, CA %q)", f.Cert, f.Key, f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("loading the route certificate %s / %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("reading the route CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("route CA %s: no PEM certificate in it", f.CA)
	}
	return mutualTLS([]tls.Certificate{cert}, pool, ""), nil
}

// RouteSecurityFrom decides how the routes of the node cfg configures are
// protected:
//
//   - crypto on (totem.crypto_cipher / crypto_hash / secauth) and no route
//     certificates configured: everything derived from the cluster key;
//   - crypto on and certificates configured: TLS with those certificates,
//     and the route password derived from the key;
//   - crypto off and certificates configured: TLS with those certificates;
//   - neither: nil, plain routes, as corosync's totem runs unprotected
//     with crypto off.
func RouteSecurityFrom(cfg *config.Config, node uint32) (*RouteSecurity, error) {
	crypto, err := CryptoFrom(cfg)
	if err != nil {
		return nil, err
	}
	files := RouteTLSFiles{Cert: cfg.String("bus.route_cert_file"), Key: cfg.String("bus.route_key_file"), CA: cfg.String("bus.route_ca_file")}
	if !crypto.Enabled() && !files.Set() {
		return nil, nil
	}
	var rs *RouteSecurity
	if crypto.Enabled() {
		key, source, err := AuthKeyFrom(cfg)
		if err != nil {
			return nil, fmt.Errorf("totem crypto (cipher %s, hash %s) needs the cluster key: %w", crypto.Cipher, crypto.Hash, err)
		}
		if rs, err = KeyedRouteSecurity(key, cfg.ClusterName(), node); err != nil {
			return nil, err
		}
		rs.Describe += " (key from " + source + ")"
	}
	if files.Set() {
		tc, err := files.load()
		if err != nil {
			return nil, err
		}
		if rs == nil {
			rs = &RouteSecurity{Describe: "TLS 1.3 with the configured certificates (" + files.Cert + ")"}
		} else {
			rs.Describe = "TLS 1.3 with the configured certificates (" + files.Cert + "), route password derived from the cluster key"
		}
		rs.TLS = tc
	}
	return rs, nil
}
