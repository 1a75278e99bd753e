// Command entrypoint starts Hearth inside a Complement container (github.com/
// matrix-org/complement). The image is FROM scratch, so there is no shell: this
// program does what an entrypoint script would, then replaces itself with hearth.
//
// On every start it reads SERVER_NAME, writes a fresh config for it (client API on
// :8008 over HTTP, federation on :8448 over HTTPS, open registration, shared secret
// "complement", no rate limits, outbound federation to private addresses, the
// application services registered in /complement/appservice), issues a
// TLS certificate for SERVER_NAME signed by the CA Complement copies into
// /complement/ca, and execs hearth as PID 1 so that SIGTERM reaches it. The signing
// key and the database live in the container's filesystem and are kept across
// restarts: Complement commits containers into images and reuses access tokens.
//
// Run as "entrypoint healthcheck" it is the image's HEALTHCHECK instead: it exits 0
// when the client API answers /_matrix/client/versions.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Paths inside the container. Complement's deployer copies the CA and application
// service registrations to these paths before the container starts.
const (
	dataDir      = "/data"
	hearthBinary = "/hearth"
	caCertPath   = "/complement/ca/ca.crt"
	caKeyPath    = "/complement/ca/ca.key"
	appSvcDir    = "/complement/appservice"
	healthURL    = "http://127.0.0.1:8008/_matrix/client/versions"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(healthURL))
	}
	// Everything goes to stdout, where Complement collects the container's logs.
	if err := syscall.Dup3(1, 2, 0); err != nil {
		fmt.Fprintln(os.Stderr, "entrypoint: redirecting stderr to stdout:", err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stdout, nil)))
	if err := run(); err != nil {
		slog.Error("complement entrypoint failed", "err", err)
		os.Exit(1)
	}
}

func run() error {
	serverName := os.Getenv("SERVER_NAME")
	if serverName == "" {
		serverName = "localhost"
		slog.Warn("SERVER_NAME is not set; using localhost")
	}
	// scratch has no /tmp, and SQLite needs a directory for its temporary files.
	for _, dir := range []string{dataDir, "/tmp"} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	if err := os.Chmod("/tmp", 0o1777); err != nil {
		return fmt.Errorf("making /tmp writable: %w", err)
	}
	s, err := prepare(setup{
		ServerName: serverName,
		DataDir:    dataDir,
		CACert:     caCertPath,
		CAKey:      caKeyPath,
		AppSvcDir:  appSvcDir,
		LogLevel:   os.Getenv("HEARTH_LOG_LEVEL"),
		Now:        time.Now(),
	})
	if err != nil {
		return err
	}
	slog.Info("starting hearth", "server_name", serverName, "config", s.ConfigPath, "signing_key_new", s.NewSigningKey)
	argv := []string{hearthBinary, "serve", "--config", s.ConfigPath}
	env := append(os.Environ(),
		// Belt and braces: Go's TLS client also trusts this file as the system pool,
		// in case a code path builds its own http.Client without federation.ca_file.
		"SSL_CERT_FILE="+caCertPath,
		"TMPDIR=/tmp",
		"SQLITE_TMPDIR=/tmp",
	)
	// Replace this process: hearth becomes PID 1 and receives Docker's SIGTERM.
	if err := syscall.Exec(hearthBinary, argv, env); err != nil {
		return fmt.Errorf("exec %s: %w", hearthBinary, err)
	}
	return nil
}

// healthcheck returns 0 when url answers 200 within a few seconds, else 1.
func healthcheck(url string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: status", resp.Status)
		return 1
	}
	return 0
}

// appServiceRegistrations lists the application service registration files in dir.
// A missing dir means none.
func appServiceRegistrations(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("listing application services: %w", err)
	}
	if _, err := os.Stat(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing application services: %w", err)
	}
	return files, nil
}
