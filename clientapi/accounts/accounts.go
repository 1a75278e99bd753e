// Package accounts stores local user accounts, devices and access tokens.
package accounts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"hearth/storage"
)

// ErrUserInUse is returned when the localpart is already taken.
var ErrUserInUse = errors.New("user ID already taken")

// ErrInvalidUsername is returned for localparts outside the spec's grammar.
var ErrInvalidUsername = errors.New("invalid username")

// Store is the account database.
type Store struct {
	db         *storage.DB
	serverName string
	bcryptCost int
}

// NewStore returns a Store for accounts on serverName.
func NewStore(db *storage.DB, serverName string) *Store {
	return &Store{db: db, serverName: serverName, bcryptCost: 12}
}

// SetBcryptCost changes the password hashing cost (tests use bcrypt.MinCost).
func (s *Store) SetBcryptCost(c int) { s.bcryptCost = c }

// ValidateLocalpart checks a new user's localpart against the spec's user ID grammar
// (Appendices, "User Identifiers": a-z 0-9 . _ = - / +) and the 255-byte limit on the
// whole user ID.
func (s *Store) ValidateLocalpart(localpart string) error {
	if localpart == "" {
		return fmt.Errorf("%w: empty", ErrInvalidUsername)
	}
	if len("@"+localpart+":"+s.serverName) > 255 {
		return fmt.Errorf("%w: user ID longer than 255 bytes", ErrInvalidUsername)
	}
	for i := 0; i < len(localpart); i++ {
		c := localpart[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return fmt.Errorf("%w: %q may only contain a-z, 0-9 and ._=-/+", ErrInvalidUsername, localpart)
		}
	}
	return nil
}

// UserID is the full user ID of a local localpart.
func (s *Store) UserID(localpart string) string { return "@" + localpart + ":" + s.serverName }

// HashPassword hashes a password with bcrypt.
func (s *Store) HashPassword(password string) (string, error) {
	if password == "" {
		return "", nil
	}
	// bcrypt only reads 72 bytes; longer passwords are refused rather than truncated.
	if len(password) > 72 {
		return "", errors.New("password longer than 72 bytes")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
	return string(h), err
}

// Create makes a new account. The first account ever created becomes an admin.
// An empty password makes an account that cannot log in with a password.
func (s *Store) Create(ctx context.Context, localpart, password string, admin bool) error {
	if err := s.ValidateLocalpart(localpart); err != nil {
		return err
	}
	hash, err := s.HashPassword(password)
	if err != nil {
		return err
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM accounts`).Scan(&n); err != nil {
			return fmt.Errorf("counting accounts: %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO accounts (localpart, password_hash, is_admin, created_ts) VALUES ($1, $2, $3, $4)`,
			localpart, hash, admin || n == 0, time.Now().UnixMilli())
		if storage.IsUniqueViolation(err) {
			return ErrUserInUse
		}
		if err != nil {
			return fmt.Errorf("creating account %s: %w", localpart, err)
		}
		return nil
	})
}

// Account is a stored account.
type Account struct {
	Localpart   string
	IsAdmin     bool
	Deactivated bool
}

// Get returns the account, or sql.ErrNoRows.
func (s *Store) Get(ctx context.Context, localpart string) (*Account, error) {
	a := &Account{Localpart: localpart}
	err := s.db.QueryRow(ctx, `SELECT is_admin, deactivated FROM accounts WHERE localpart = $1`, localpart).Scan(&a.IsAdmin, &a.Deactivated)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// IsNotFound reports whether err means "no such row".
func IsNotFound(err error) bool { return errors.Is(err, sql.ErrNoRows) }
