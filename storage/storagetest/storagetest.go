// Package storagetest runs storage tests on every available database: SQLite always,
// Postgres when HEARTH_TEST_POSTGRES holds a DSN (each test gets its own fresh
// database there, dropped afterwards).
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"hearth/storage"
)

// PostgresEnv is the environment variable holding a Postgres DSN for tests.
const PostgresEnv = "HEARTH_TEST_POSTGRES"

// DSNs returns, for each available database, a name and a fresh DSN for one test.
// Postgres databases created here are dropped when the test ends.
func DSNs(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{
		"sqlite": filepath.Join(t.TempDir(), "hearth.db"),
	}
	if base := os.Getenv(PostgresEnv); base != "" {
		out["postgres"] = freshPostgres(t, base)
	}
	return out
}

// ForEachDB runs fn as a subtest once per available database, with the database
// opened and migrated.
func ForEachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for name, dsn := range DSNs(t) {
		t.Run(name, func(t *testing.T) {
			db, err := storage.Open(context.Background(), dsn)
			if err != nil {
				t.Fatalf("opening %s: %v", name, err)
			}
			t.Cleanup(func() { db.Close() })
			fn(t, db)
		})
	}
}

// freshPostgres creates an empty database on the server named by base and returns
// its DSN.
func freshPostgres(t testing.TB, base string) string {
	t.Helper()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("opening %s: %v", PostgresEnv, err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "hearth_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parsing %s: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		a, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer a.Close()
		_, _ = a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return u.String()
}
