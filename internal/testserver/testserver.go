// Package testserver starts real Hearth servers on 127.0.0.1 for end-to-end tests,
// which then talk HTTP to them the way clients and remote servers do.
//
// The federation listener serves TLS with a certificate from a test CA (package
// testca) that every test server trusts, and outbound federation may reach
// 127.0.0.0/8, so several test servers federate with each other for real.
package testserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"hearth/config"
	"hearth/internal/testca"
	"hearth/server"
	"hearth/storage/storagetest"
)

// Server is a running test homeserver.
type Server struct {
	*server.Hearth
	// URL is the client API base URL, e.g. http://127.0.0.1:41234.
	URL string
	// FederationURL is the federation listener's base URL (https).
	FederationURL string

	cfg        *config.Config
	clientAddr string
}

// Option adjusts the config before the server starts.
type Option func(*config.Config)

// Federated makes the server's name "127.0.0.1:<port>" with its federation
// listener on that port, as federation tests between several servers need.
func Federated(cfg *config.Config) {
	cfg.Listen.Federation = "127.0.0.1:" + strconv.Itoa(freePort())
	cfg.ServerName = cfg.Listen.Federation
}

// freePort returns a port that was free a moment ago.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a server on the database named by dsn (from storagetest.DSNs) with a
// fresh signing key, open registration, no rate limits, and listeners on 127.0.0.1
// with OS-chosen ports (unless an option picks them). It stops when the test ends.
func Start(t testing.TB, dsn string, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	ca, err := testca.Shared()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "test-ca.pem")
	certFile, keyFile := filepath.Join(dir, "federation.crt"), filepath.Join(dir, "federation.key")
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{caFile: ca.CertPEM(), certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "signing.key")
	if err := config.WriteSigningKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	// A port picked by an option can be taken by someone else before the server
	// binds it: try again with fresh options.
	for attempt := 0; ; attempt++ {
		cfg := config.Default()
		cfg.ServerName = "hs.test"
		cfg.Database = dsn
		cfg.SigningKeyPath = keyPath
		cfg.Listen.Client = "127.0.0.1:0"
		cfg.Listen.Federation = "127.0.0.1:0"
		cfg.Registration.Open = true
		cfg.Registration.SharedSecret = "test-shared-secret"
		cfg.RateLimits.Enabled = false
		cfg.Log.Level = "warn"
		cfg.Media.StoragePath = filepath.Join(dir, "media")
		cfg.Federation.TLSCert, cfg.Federation.TLSKey, cfg.Federation.CAFile = certFile, keyFile, caFile
		cfg.Federation.AllowedCIDRs = []string{"127.0.0.0/8", "::1/128"}
		for _, o := range opts {
			o(cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("test config: %v", err)
		}
		hs, err := server.Start(context.Background(), cfg)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
				continue
			}
			t.Fatalf("starting test server: %v", err)
		}
		s := &Server{Hearth: hs, cfg: cfg}
		s.setURLs()
		t.Cleanup(func() { s.Stop() })
		return s
	}
}

func (s *Server) setURLs() {
	s.clientAddr = s.Listeners.Client.String()
	s.URL = "http://" + s.clientAddr
	s.FederationURL = ""
	if s.Listeners.Federation != nil {
		s.FederationURL = "https://" + s.Listeners.Federation.String()
	}
}

// Stop stops the server (it may be restarted with Restart).
func (s *Server) Stop() {
	if s.Hearth != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Hearth.Stop(ctx)
		s.Hearth = nil
	}
}

// Restart starts a stopped server again with the same configuration, database,
// signing key and listener addresses.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	cfg := *s.cfg
	cfg.Listen.Client = s.clientAddr
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var hs *server.Hearth
		if hs, err = server.Start(context.Background(), &cfg); err == nil {
			s.Hearth = hs
			s.setURLs()
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restarting test server: %v", err)
}

// Config is the configuration the server was started with.
func (s *Server) Config() *config.Config { return s.cfg }

// FederationClient is an HTTP client trusting the test CA, for requests to
// FederationURL.
func FederationClient() *http.Client {
	ca, err := testca.Shared()
	if err != nil {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS()}, Timeout: 30 * time.Second}
}

// ForEachDB runs fn as a subtest against a fresh server on each available database.
func ForEachDB(t *testing.T, fn func(t *testing.T, s *Server), opts ...Option) {
	t.Helper()
	for name, dsn := range storagetest.DSNs(t) {
		t.Run(name, func(t *testing.T) {
			fn(t, Start(t, dsn, opts...))
		})
	}
}
