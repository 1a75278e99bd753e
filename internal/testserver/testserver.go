// Package testserver starts real Hearth servers on 127.0.0.1 for end-to-end tests,
// which then talk HTTP to them the way clients and remote servers do.
package testserver

import (
	"context"
	"path/filepath"
	"testing"

	"hearth/config"
	"hearth/server"
	"hearth/storage/storagetest"
)

// Server is a running test homeserver.
type Server struct {
	*server.Hearth
	// URL is the client API base URL, e.g. http://127.0.0.1:41234.
	URL string
	// FederationURL is the federation listener's base URL.
	FederationURL string
}

// Option adjusts the config before the server starts.
type Option func(*config.Config)

// Start runs a server on the database named by dsn (from storagetest.DSNs) with a
// fresh signing key, open registration, no rate limits, and listeners on 127.0.0.1
// with OS-chosen ports. It stops when the test ends.
func Start(t testing.TB, dsn string, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.ServerName = "hs.test"
	cfg.Database = dsn
	cfg.SigningKeyPath = filepath.Join(dir, "signing.key")
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Listen.Federation = "127.0.0.1:0"
	cfg.Registration.Open = true
	cfg.Registration.SharedSecret = "test-shared-secret"
	cfg.RateLimits.Enabled = false
	cfg.Log.Level = "warn"
	for _, o := range opts {
		o(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := config.WriteSigningKey(cfg.SigningKeyPath, key); err != nil {
		t.Fatal(err)
	}
	hs, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting test server: %v", err)
	}
	t.Cleanup(func() { _ = hs.Stop(context.Background()) })
	s := &Server{Hearth: hs, URL: "http://" + hs.Listeners.Client.String()}
	if hs.Listeners.Federation != nil {
		s.FederationURL = "http://" + hs.Listeners.Federation.String()
	}
	return s
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
