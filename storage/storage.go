// Package storage opens Hearth's database — SQLite by default, Postgres for bigger
// servers — from one DSN, applies the embedded migrations, and gives components a
// single place to run queries and transactions.
//
// Queries are written once, in Postgres style with $1, $2 … placeholders; for SQLite
// they are rewritten to ?1, ?2 … (SQLite's explicitly numbered form) once per query
// string. On SQLite all writes go through one connection so that "database is locked"
// never reaches a user; reads use a small pool of connections (WAL mode).
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/mattn/go-sqlite3"
)

// Dialect names the SQL flavour of a database.
type Dialect int

const (
	// SQLite is the embedded default database.
	SQLite Dialect = iota
	// Postgres is PostgreSQL through pgx.
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is an open Hearth database. Writer is used for every statement that changes data;
// Reader for reads that need not see the caller's own uncommitted writes. On Postgres
// both are the same pool.
type DB struct {
	Dialect Dialect
	writer  *sql.DB
	reader  *sql.DB

	rebound sync.Map // query string -> dialect-specific query string
}

// IsPostgresDSN reports whether dsn names a Postgres database rather than a SQLite file.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the database named by dsn — a SQLite file path (optionally prefixed with
// "file:" or "sqlite:") or a postgres:// URL — and applies all pending migrations.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("storage: empty database DSN")
	}
	var db *DB
	var err error
	if IsPostgresDSN(dsn) {
		db, err = openPostgres(dsn)
	} else {
		db, err = openSQLite(dsn)
	}
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func openPostgres(dsn string) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening postgres: %w", err)
	}
	pool.SetMaxOpenConns(32)
	pool.SetMaxIdleConns(8)
	if err := pool.Ping(); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres: %w", err)
	}
	return &DB{Dialect: Postgres, writer: pool, reader: pool}, nil
}

func openSQLite(dsn string) (*DB, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating database directory %s: %w", dir, err)
		}
	}
	params := url.Values{}
	params.Set("_journal_mode", "WAL")
	params.Set("_foreign_keys", "on")
	params.Set("_busy_timeout", "10000")
	params.Set("_synchronous", "NORMAL")
	base := "file:" + path + "?"
	// The writer takes the write lock at BEGIN (IMMEDIATE), so a transaction never
	// fails half-way by trying to upgrade a read lock.
	wparams := url.Values{}
	for k, v := range params {
		wparams[k] = v
	}
	wparams.Set("_txlock", "immediate")
	writer, err := sql.Open("sqlite3", base+wparams.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	if err := writer.Ping(); err != nil {
		writer.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	reader, err := sql.Open("sqlite3", base+params.Encode())
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	n := runtime.GOMAXPROCS(0) * 2
	if n < 4 {
		n = 4
	}
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	return &DB{Dialect: SQLite, writer: writer, reader: reader}, nil
}

// Close closes all connections.
func (db *DB) Close() error {
	err := db.writer.Close()
	if db.reader != db.writer {
		if rerr := db.reader.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// Q returns query in this database's dialect: $N placeholders become ?N on SQLite.
// The rewrite happens once per distinct query string.
func (db *DB) Q(query string) string {
	if db.Dialect == Postgres {
		return query
	}
	if v, ok := db.rebound.Load(query); ok {
		return v.(string)
	}
	q := rebindSQLite(query)
	db.rebound.Store(query, q)
	return q
}

// rebindSQLite turns $N placeholders outside string literals into ?N.
func rebindSQLite(q string) string {
	var b strings.Builder
	b.Grow(len(q))
	inString := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			inString = !inString
			b.WriteByte(c)
		case c == '$' && !inString && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Querier is what both *sql.DB and *sql.Tx offer; statements take it so they run
// inside or outside a transaction alike.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Exec runs a writing statement outside a transaction.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.writer.ExecContext(ctx, db.Q(query), args...)
}

// Query runs a read on the reader pool.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.reader.QueryContext(ctx, db.Q(query), args...)
}

// QueryRow runs a single-row read on the reader pool.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return db.reader.QueryRowContext(ctx, db.Q(query), args...)
}

// Tx is a write transaction. Its methods take Postgres-style queries like DB's.
type Tx struct {
	db *DB
	tx *sql.Tx
}

// Exec runs a statement in the transaction.
func (t *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.db.Q(query), args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.db.Q(query), args...)
}

// QueryRow runs a single-row query in the transaction.
func (t *Tx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.db.Q(query), args...)
}

// Prepare prepares a statement for repeated use inside the transaction (bulk inserts).
func (t *Tx) Prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, t.db.Q(query))
}

// Dialect is the dialect of the transaction's database.
func (t *Tx) Dialect() Dialect { return t.db.Dialect }

// WithTx runs fn in a write transaction, committing if fn returns nil and rolling
// back otherwise (including when fn panics, which is re-raised).
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	stx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	tx := &Tx{db: db, tx: stx}
	defer func() {
		if p := recover(); p != nil {
			_ = stx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		_ = stx.Rollback()
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique/primary-key constraint failure.
func IsUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	// pgx: SQLSTATE 23505 unique_violation.
	type sqlState interface{ SQLState() string }
	var ps sqlState
	if errors.As(err, &ps) {
		return ps.SQLState() == "23505"
	}
	return false
}

// Conn is what both DB and Tx offer, so read helpers run inside or outside a
// transaction alike.
type Conn interface {
	Exec(ctx context.Context, query string, args ...any) (sql.Result, error)
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Conn = (*DB)(nil)
	_ Conn = (*Tx)(nil)
)
