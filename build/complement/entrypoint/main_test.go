package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth/config"
)

// testCA makes a CA certificate and its key, the key PEM-encoded by encodeKey.
func testCA(t *testing.T, key crypto.Signer, encodeKey func(crypto.Signer) *pem.Block) (certPEM, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Complement Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(encodeKey(key))
}

func pkcs1(k crypto.Signer) *pem.Block {
	return &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.(*rsa.PrivateKey))}
}

func sec1(k crypto.Signer) *pem.Block {
	b, _ := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
}

func pkcs8(k crypto.Signer) *pem.Block {
	b, _ := x509.MarshalPKCS8PrivateKey(k)
	return &pem.Block{Type: "PRIVATE KEY", Bytes: b}
}

func TestIssueCert(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		key        crypto.Signer
		encode     func(crypto.Signer) *pem.Block
		serverName string
		verifyHost string
	}{
		{"rsa pkcs1 CA (what Complement makes)", rsaKey, pkcs1, "hs1", "hs1"},
		{"ec sec1 CA", ecKey, sec1, "hs2", "hs2"},
		{"rsa pkcs8 CA", rsaKey, pkcs8, "example.org", "example.org"},
		{"server name with port", ecKey, pkcs8, "hs1:8448", "hs1"},
		{"IPv4 literal", ecKey, sec1, "127.0.0.1", "127.0.0.1"},
		{"IPv6 literal", ecKey, sec1, "[::1]:8448", "::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caPEM, caKeyPEM := testCA(t, tc.key, tc.encode)
			certPEM, keyPEM, err := issueCert(caPEM, caKeyPEM, tc.serverName, time.Now())
			if err != nil {
				t.Fatalf("issueCert: %v", err)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatalf("certificate and key do not match: %v", err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(caPEM)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.verifyHost}); err != nil {
				t.Fatalf("certificate does not verify for %s: %v", tc.verifyHost, err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
				t.Fatal("certificate verifies for a name it was not issued for")
			}
		})
	}
}

func TestIssueCertBadInput(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, caKeyPEM := testCA(t, ecKey, sec1)
	tests := []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"empty cert", nil, caKeyPEM, "CA certificate"},
		{"key given as cert", caKeyPEM, caKeyPEM, "CA certificate"},
		{"empty key", caPEM, nil, "CA key"},
		{"cert given as key", caPEM, caPEM, "CA key"},
		{"garbage key", caPEM, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), "CA key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := issueCert(tc.cert, tc.key, "hs1", time.Now())
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErrSubstr)) {
				t.Fatalf("got error %v, want one mentioning %q", err, tc.wantErrSubstr)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, caKeyPEM := testCA(t, ecKey, sec1)
	tests := []struct {
		name       string
		serverName string
		writeCert  bool
		writeKey   bool
		wantErr    bool
		wantTLS    bool
	}{
		{"with Complement CA", "hs1", true, true, false, true},
		{"without CA: self-signed", "hs1", false, false, false, false},
		{"CA certificate without key", "hs1", true, false, true, false},
		{"bad server name", "hs 1", true, true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := setup{
				ServerName: tc.serverName,
				DataDir:    filepath.Join(dir, "data"),
				CACert:     filepath.Join(dir, "ca.crt"),
				CAKey:      filepath.Join(dir, "ca.key"),
				AppSvcDir:  filepath.Join(dir, "appservice"),
				Now:        time.Now(),
			}
			if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.writeCert {
				writeFile(t, s.CACert, caPEM)
			}
			if tc.writeKey {
				writeFile(t, s.CAKey, caKeyPEM)
			}
			p, err := prepare(s)
			if tc.wantErr {
				if err == nil {
					t.Fatal("prepare succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			if !p.NewSigningKey {
				t.Error("first start did not report a new signing key")
			}
			cfg, err := config.Load(p.ConfigPath)
			if err != nil {
				t.Fatalf("generated config does not load: %v", err)
			}
			checkComplementConfig(t, cfg, tc.serverName)
			if got := cfg.Federation.TLSCert != ""; got != tc.wantTLS {
				t.Errorf("tls_cert set = %v, want %v", got, tc.wantTLS)
			}
			if tc.wantTLS {
				if _, err := tls.LoadX509KeyPair(cfg.Federation.TLSCert, cfg.Federation.TLSKey); err != nil {
					t.Errorf("federation TLS files do not load: %v", err)
				}
				if cfg.Federation.CAFile != s.CACert {
					t.Errorf("ca_file = %q, want %q", cfg.Federation.CAFile, s.CACert)
				}
			}

			// A restart (Complement commits and restarts containers) keeps the key.
			key1, err := config.ReadSigningKey(cfg.SigningKeyPath)
			if err != nil {
				t.Fatal(err)
			}
			p2, err := prepare(s)
			if err != nil {
				t.Fatalf("second prepare: %v", err)
			}
			if p2.NewSigningKey {
				t.Error("restart made a new signing key")
			}
			key2, err := config.ReadSigningKey(cfg.SigningKeyPath)
			if err != nil {
				t.Fatal(err)
			}
			if key1.ID != key2.ID || !key1.PrivateKey.Equal(key2.PrivateKey) {
				t.Error("signing key changed across restarts")
			}
		})
	}
}

func checkComplementConfig(t *testing.T, cfg *config.Config, serverName string) {
	t.Helper()
	if cfg.ServerName != serverName {
		t.Errorf("server_name = %q, want %q", cfg.ServerName, serverName)
	}
	if cfg.Listen.Client != "0.0.0.0:8008" || cfg.Listen.Federation != "0.0.0.0:8448" {
		t.Errorf("listen = %+v, want client 0.0.0.0:8008 and federation 0.0.0.0:8448", cfg.Listen)
	}
	if !cfg.Registration.Open || cfg.Registration.SharedSecret != "complement" {
		t.Errorf("registration = %+v, want open with secret complement", cfg.Registration)
	}
	if cfg.RateLimits.Enabled {
		t.Error("rate limits are on")
	}
	if len(cfg.Federation.DeniedCIDRs) != 0 {
		t.Errorf("denied_cidrs = %v, want none", cfg.Federation.DeniedCIDRs)
	}
	if !cfg.Media.LegacyUnauthenticated || len(cfg.Media.URLPreview.DeniedCIDRs) != 0 {
		t.Errorf("media = %+v, want legacy unauthenticated endpoints and previews of any address", cfg.Media)
	}
	if cfg.FederationServer() != serverName {
		t.Errorf("well-known server = %q, want %q (port 8448 implied)", cfg.FederationServer(), serverName)
	}
}

func TestAppServiceRegistrations(t *testing.T) {
	dir := t.TempDir()
	if got, err := appServiceRegistrations(filepath.Join(dir, "missing")); err != nil || len(got) != 0 {
		t.Fatalf("missing dir: got %v, %v; want none", got, err)
	}
	writeFile(t, filepath.Join(dir, "bridge.yaml"), []byte("id: bridge\n"))
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte("x"))
	got, err := appServiceRegistrations(dir)
	if err != nil || len(got) != 1 || filepath.Base(got[0]) != "bridge.yaml" {
		t.Fatalf("got %v, %v; want [bridge.yaml]", got, err)
	}
}

func TestHealthcheck(t *testing.T) {
	tests := []struct {
		status int
		want   int
	}{
		{http.StatusOK, 0},
		{http.StatusServiceUnavailable, 1},
		{http.StatusNotFound, 1},
	}
	for _, tc := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
		}))
		if got := healthcheck(srv.URL); got != tc.want {
			t.Errorf("status %d: healthcheck = %d, want %d", tc.status, got, tc.want)
		}
		srv.Close()
	}
	if got := healthcheck("http://127.0.0.1:1/"); got != 1 {
		t.Errorf("unreachable server: healthcheck = %d, want 1", got)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// complementRegistration is a registration as Complement writes it (its
// generateASRegistrationYaml), with tokens that YAML would read as numbers if
// they were not decoded as strings.
const complementRegistration = `id: my_as_id
hs_token: 1234e5
as_token: 0123456789
url: 'http://localhost:9000'
sender_localpart: the-bridge-user
rate_limited: false
de.sorunome.msc2409.push_ephemeral: false
push_ephemeral: false
org.matrix.msc3202: false
namespaces:
  users:
    - exclusive: false
      regex: .*
  rooms: []
  aliases: []
`

func TestPrepareLoadsAppServices(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantIDs []string
		wantErr bool
	}{
		{"none", nil, nil, false},
		{"Complement's registration", map[string]string{"my_as_id.yaml": complementRegistration}, []string{"my_as_id"}, false},
		{"broken registration", map[string]string{"bad.yaml": "id: x\nurl: null\n"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := setup{ServerName: "hs1", DataDir: filepath.Join(dir, "data"), CACert: filepath.Join(dir, "none.crt"),
				CAKey: filepath.Join(dir, "none.key"), AppSvcDir: filepath.Join(dir, "appservice"), Now: time.Now()}
			for _, d := range []string{s.DataDir, s.AppSvcDir} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for name, body := range tc.files {
				writeFile(t, filepath.Join(s.AppSvcDir, name), []byte(body))
			}
			p, err := prepare(s)
			if tc.wantErr {
				if err == nil {
					t.Fatal("prepare accepted a broken registration")
				}
				return
			}
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			cfg, err := config.Load(p.ConfigPath)
			if err != nil {
				t.Fatalf("generated config does not load: %v", err)
			}
			var ids []string
			for _, as := range cfg.AppServices {
				ids = append(ids, as.ID)
			}
			if len(ids) != len(tc.wantIDs) || (len(ids) > 0 && ids[0] != tc.wantIDs[0]) {
				t.Fatalf("loaded application services %v, want %v", ids, tc.wantIDs)
			}
			if len(ids) > 0 {
				as := cfg.AppServices[0]
				if as.ASToken != "0123456789" || as.HSToken != "1234e5" || as.URL != "http://localhost:9000" ||
					as.SenderLocalpart != "the-bridge-user" || as.RateLimited || len(as.Users) != 1 || as.Users[0].Exclusive {
					t.Errorf("registration read as %+v", as)
				}
			}
		})
	}
}
