package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hearth/clientapi/accounts"
	"hearth/config"
	"hearth/server"
	"hearth/storage"
	"hearth/storage/storagetest"
)

// TestGenerateConfigThenServe does what an operator does: generate-config, then serve
// that config, on SQLite (the default DSN) and on Postgres when available.
func TestGenerateConfigThenServe(t *testing.T) {
	dsns := storagetest.DSNs(t)
	dsns["sqlite"] = "" // the default: DIR/hearth.db
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := []string{"generate-config", "--server-name", "example.test", "--data-dir", dir,
				"--client-addr", "127.0.0.1:0", "--federation-addr", "127.0.0.1:0", "--open-registration",
				"--registration-shared-secret", "s3cret"}
			if dsn != "" {
				args = append(args, "--database", dsn)
			}
			if code := run(args); code != 0 {
				t.Fatalf("generate-config exited %d", code)
			}
			cfgPath := filepath.Join(dir, "hearth.yaml")
			if st, err := os.Stat(filepath.Join(dir, "signing.key")); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("signing key: %v %v", st, err)
			}
			// Generating again must not overwrite.
			if code := run(args); code == 0 {
				t.Fatal("generate-config overwrote an existing config")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			if !cfg.Registration.Open || cfg.Registration.SharedSecret != "s3cret" {
				t.Fatalf("flags not written: %+v", cfg.Registration)
			}
			if code := run([]string{"register-user", "--config", cfgPath, "--user", "alice", "--password", "pw"}); code != 0 {
				t.Fatalf("register-user exited %d", code)
			}
			hs, err := server.Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer hs.Stop(context.Background())
			if dsn == "" {
				if _, err := os.Stat(filepath.Join(dir, "hearth.db")); err != nil {
					t.Fatalf("default SQLite database not in data dir: %v", err)
				}
			} else if hs.DB.Dialect != storage.Postgres {
				t.Fatalf("dialect = %v", hs.DB.Dialect)
			}
			acc, err := accounts.NewStore(hs.DB, cfg.ServerName).Get(context.Background(), "alice")
			if err != nil || !acc.IsAdmin {
				t.Fatalf("registered user: %+v %v (first user must be admin)", acc, err)
			}
			resp, err := http.Get("http://" + hs.Listeners.Client.String() + "/_matrix/client/versions")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"v1.`) {
				t.Fatalf("versions: %d %s", resp.StatusCode, b)
			}
			if hs.Listeners.Federation == nil {
				t.Fatal("federation listener not started")
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--help"}, {"generate-config", "--help"}, {"register-user", "--help"}, {"version", "--help"}, {"version"}, {"help"},
	} {
		if code := run(args); code != 0 {
			t.Errorf("%v exited %d", args, code)
		}
	}
	for _, args := range [][]string{{"bogus"}, {"serve"}, {"generate-config"}, {"register-user", "--config", "x"}, {"serve", "--nope"}} {
		if code := run(args); code == 0 {
			t.Errorf("%v exited 0", args)
		}
	}
	if code := run([]string{"serve", "--config", "/nonexistent/hearth.yaml"}); code != 1 {
		t.Errorf("serve with missing config exited %d", code)
	}
}

// TestServeStopsGracefullyOnSIGTERM runs serve as `hearth serve` does and sends the
// process SIGTERM: serve shuts the listeners down and returns 0.
func TestServeStopsGracefullyOnSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if code := run([]string{"generate-config", "--server-name", "example.test", "--data-dir", dir,
		"--client-addr", "127.0.0.1:0", "--federation-addr", ""}); code != 0 {
		t.Fatalf("generate-config exited %d", code)
	}
	cfg, err := config.Load(filepath.Join(dir, "hearth.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() { done <- serve(cfg, func(l server.Listeners) { ready <- l.Client.String() }) }()
	var addr string
	select {
	case addr = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("versions before shutdown: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d after SIGTERM", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if _, err := http.Get("http://" + addr + "/_matrix/client/versions"); err == nil {
		t.Fatal("listener still answering after shutdown")
	}
}
