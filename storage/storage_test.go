package storage_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"hearth/storage"
	"hearth/storage/storagetest"
)

func TestMigrationsFreshAndRerun(t *testing.T) {
	migs, err := storage.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 {
		t.Fatal("no embedded migrations")
	}
	want := migs[len(migs)-1].Version
	for name, dsn := range storagetest.DSNs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := storage.Open(ctx, dsn)
			if err != nil {
				t.Fatalf("fresh open: %v", err)
			}
			v, err := db.SchemaVersion(ctx)
			if err != nil || v != want {
				t.Fatalf("schema version = %d, %v; want %d", v, err, want)
			}
			if _, err := db.Exec(ctx, `INSERT INTO accounts (localpart, created_ts) VALUES ($1, $2)`, "alice", 1); err != nil {
				t.Fatalf("insert: %v", err)
			}
			db.Close()
			// Re-open: nothing re-applied, data intact.
			db, err = storage.Open(ctx, dsn)
			if err != nil {
				t.Fatalf("re-open: %v", err)
			}
			defer db.Close()
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migs) {
				t.Fatalf("schema_migrations rows = %d, %v; want %d", n, err, len(migs))
			}
			var lp string
			if err := db.QueryRow(ctx, `SELECT localpart FROM accounts WHERE localpart = $1`, "alice").Scan(&lp); err != nil {
				t.Fatalf("row lost after re-open: %v", err)
			}
		})
	}
}

func TestDialectLines(t *testing.T) {
	m := storage.Migration{SQL: "CREATE TABLE x (\n id INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite\n id BIGSERIAL PRIMARY KEY, -- postgres\n v TEXT\n);\n"}
	lite := m.ForDialect(storage.SQLite)
	pg := m.ForDialect(storage.Postgres)
	if !strings.Contains(lite, "AUTOINCREMENT") || strings.Contains(lite, "BIGSERIAL") {
		t.Errorf("sqlite variant wrong:\n%s", lite)
	}
	if strings.Contains(pg, "AUTOINCREMENT") || !strings.Contains(pg, "BIGSERIAL") {
		t.Errorf("postgres variant wrong:\n%s", pg)
	}
	if !strings.Contains(lite, "v TEXT") || !strings.Contains(pg, "v TEXT") {
		t.Error("shared line dropped")
	}
}

func TestPlaceholdersOutOfOrderAndConcurrentWrites(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// $2 before $1 must bind by number, not by position.
		if _, err := db.Exec(ctx, `INSERT INTO accounts (created_ts, localpart) VALUES ($2, $1)`, "bob", 7); err != nil {
			t.Fatal(err)
		}
		var ts int64
		if err := db.QueryRow(ctx, `SELECT created_ts FROM accounts WHERE localpart = $1`, "bob").Scan(&ts); err != nil || ts != 7 {
			t.Fatalf("created_ts = %d, %v", ts, err)
		}
		// Many concurrent write transactions: none may fail with "database is locked".
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := 0; i < 64; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs <- db.WithTx(ctx, func(tx *storage.Tx) error {
					var n int
					if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM accounts`).Scan(&n); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `INSERT INTO accounts (localpart, created_ts) VALUES ($1, $2)`, "u"+string(rune('a'+i%26))+string(rune('a'+i/26)), n)
					return err
				})
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent write: %v", err)
			}
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM accounts`).Scan(&n); err != nil || n != 65 {
			t.Fatalf("rows = %d, %v; want 65", n, err)
		}
		// Unique violations are recognised on both databases.
		_, err := db.Exec(ctx, `INSERT INTO accounts (localpart, created_ts) VALUES ($1, 0)`, "bob")
		if !storage.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert error %v not recognised as unique violation", err)
		}
	})
}
