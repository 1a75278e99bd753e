package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"hearth/clientapi/accounts"
	"hearth/config"
	"hearth/internal/version"
	"hearth/server"
	"hearth/storage"
)

// newFlags makes a FlagSet whose --help prints the command's usage and flags.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hearth %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns (exit code, done) where done means stop now.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "hearth: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}

func cmdVersion(args []string) int {
	fs := newFlags("version", "version")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	fmt.Println("hearth", version.Version)
	return 0
}

type generateFlags struct {
	serverName, dataDir, clientAddr, fedAddr, database, secret string
	open                                                       bool
}

func cmdGenerateConfig(args []string) int {
	fs := newFlags("generate-config", "generate-config --server-name NAME --data-dir DIR [flags]")
	var g generateFlags
	fs.StringVar(&g.serverName, "server-name", "", "the server name, the domain in user IDs (required)")
	fs.StringVar(&g.dataDir, "data-dir", "", "directory for the config, signing key and SQLite database (required)")
	fs.StringVar(&g.clientAddr, "client-addr", "127.0.0.1:8008", "client API listen address")
	fs.StringVar(&g.fedAddr, "federation-addr", "0.0.0.0:8448", "federation listen address (empty: on the client listener)")
	fs.StringVar(&g.database, "database", "", "SQLite file path or postgres:// DSN (default DIR/hearth.db)")
	fs.BoolVar(&g.open, "open-registration", false, "let anyone register an account")
	fs.StringVar(&g.secret, "registration-shared-secret", "", "shared secret for /_synapse/admin/v1/register")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if g.serverName == "" || g.dataDir == "" {
		fmt.Fprintln(os.Stderr, "hearth generate-config: --server-name and --data-dir are required")
		fs.Usage()
		return 2
	}
	path, err := generateConfig(g)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth generate-config:", err)
		return 1
	}
	fmt.Println(path)
	return 0
}

// generateConfig writes DIR/hearth.yaml and DIR/signing.key and returns the config path.
func generateConfig(g generateFlags) (string, error) {
	if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating data directory: %w", err)
	}
	cfgPath := filepath.Join(g.dataDir, "hearth.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		return "", fmt.Errorf("%s already exists; not overwriting it", cfgPath)
	}
	db := g.database
	if db == "" {
		db = "hearth.db" // relative to the config file's directory
	}
	b, err := config.Generate(config.GenerateOptions{
		ServerName: g.serverName, Database: db, ClientAddr: g.clientAddr, FederationAddr: g.fedAddr,
		OpenRegistration: g.open, SharedSecret: g.secret, SigningKeyFileName: "signing.key",
	})
	if err != nil {
		return "", fmt.Errorf("invalid settings: %w", err)
	}
	keyPath := filepath.Join(g.dataDir, "signing.key")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		key, err := config.GenerateSigningKey()
		if err != nil {
			return "", err
		}
		if err := config.WriteSigningKey(keyPath, key); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return "", fmt.Errorf("writing config: %w", err)
	}
	abs, _ := filepath.Abs(cfgPath)
	return abs, nil
}

func cmdServe(args []string) int {
	fs := newFlags("serve", "serve --config FILE")
	cfgPath := fs.String("config", "", "path of hearth.yaml (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "hearth serve: --config is required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		return 1
	}
	return serve(cfg, nil)
}

// serve runs the server until SIGINT/SIGTERM; ready, if set, is called once listening.
func serve(cfg *config.Config, ready func(server.Listeners)) int {
	setupLogging(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hs, err := server.Start(ctx, cfg)
	if err != nil {
		slog.Error("starting hearth", "err", err)
		return 1
	}
	slog.Info("hearth is running", "version", version.Version, "server_name", cfg.ServerName,
		"client", hs.Listeners.Client.String(), "federation", addrString(hs.Listeners.Federation))
	if ready != nil {
		ready(hs.Listeners)
	}
	<-ctx.Done()
	slog.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := hs.Stop(sctx); err != nil {
		slog.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

func addrString(a interface{ String() string }) string {
	if a == nil || a == (interface{ String() string })(nil) {
		return "(client listener)"
	}
	return a.String()
}

func setupLogging(cfg *config.Config, w io.Writer) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	slog.SetDefault(slog.New(h))
}

// cmdDefault runs a local server with data in ./data, creating it on first start.
func cmdDefault() int {
	const dataDir = "data"
	cfgPath := filepath.Join(dataDir, "hearth.yaml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		secret := make([]byte, 24)
		_, _ = rand.Read(secret)
		if _, err := generateConfig(generateFlags{
			serverName: "localhost:8008", dataDir: dataDir, clientAddr: "127.0.0.1:8008",
			fedAddr: "", secret: base64.RawURLEncoding.EncodeToString(secret),
		}); err != nil {
			fmt.Fprintln(os.Stderr, "hearth:", err)
			return 1
		}
		fmt.Printf("Created %s with default settings (SQLite database in %s).\n", cfgPath, dataDir)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		return 1
	}
	return serve(cfg, func(l server.Listeners) {
		fmt.Printf(`
Hearth is running: %s (server name %s)

Make the first user (it becomes the server admin):
  hearth register-user --config %s --user alice --password 'choose-one'
Then point a Matrix client (Element, Cinny, FluffyChat …) at homeserver %s
and log in as @alice:%s.
`, cfg.BaseURL(), cfg.ServerName, cfgPath, cfg.BaseURL(), cfg.ServerName)
	})
}

func cmdRegisterUser(args []string) int {
	fs := newFlags("register-user", "register-user --config FILE --user NAME [--password P] [--admin]")
	cfgPath := fs.String("config", "", "path of hearth.yaml (required)")
	user := fs.String("user", "", "localpart of the new user, e.g. alice (required)")
	password := fs.String("password", "", "password (if empty, read from the HEARTH_PASSWORD environment variable or prompted on stdin)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *cfgPath == "" || *user == "" {
		fmt.Fprintln(os.Stderr, "hearth register-user: --config and --user are required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		return 1
	}
	pw := *password
	if pw == "" {
		pw = os.Getenv("HEARTH_PASSWORD")
	}
	if pw == "" {
		fmt.Fprint(os.Stderr, "Password: ")
		var line string
		if _, err := fmt.Fscanln(os.Stdin, &line); err != nil || line == "" {
			fmt.Fprintln(os.Stderr, "\nhearth register-user: a password is required")
			return 2
		}
		pw = line
	}
	setupLogging(&config.Config{Log: config.Log{Level: "warn", Format: "text"}}, os.Stderr)
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.DatabaseDSN())
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth register-user:", err)
		return 1
	}
	defer db.Close()
	store := accounts.NewStore(db, cfg.ServerName)
	// The same account-creation path as shared-secret registration.
	localpart, err := store.RegisterUser(ctx, *user, pw, *admin, "", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth register-user:", err)
		return 1
	}
	fmt.Println("Created", store.UserID(localpart))
	return 0
}
