// Package accounts stores local user accounts and everything that belongs to one:
// devices, access/refresh/login tokens, profiles, account data, filters, push
// rules, registration tokens and user-interactive auth sessions.
package accounts

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"hearth/storage"
)

// Errors returned by the store.
var (
	// ErrUserInUse is returned when the localpart is already taken.
	ErrUserInUse = errors.New("user ID already taken")
	// ErrInvalidUsername is returned for localparts outside the spec's grammar.
	ErrInvalidUsername = errors.New("invalid username")
	// ErrPasswordTooLong is returned for passwords bcrypt cannot hash whole.
	ErrPasswordTooLong = errors.New("password longer than 72 bytes")
	// ErrNotFound is returned when the thing asked for does not exist.
	ErrNotFound = errors.New("not found")
)

// Store is the account database.
type Store struct {
	db         *storage.DB
	serverName string
	bcryptCost atomic.Int32
}

// NewStore returns a Store for accounts on serverName.
func NewStore(db *storage.DB, serverName string) *Store {
	s := &Store{db: db, serverName: serverName}
	s.bcryptCost.Store(12)
	return s
}

// SetBcryptCost changes the password hashing cost (tests use bcrypt.MinCost). It
// is safe to call while the store is in use.
func (s *Store) SetBcryptCost(c int) { s.bcryptCost.Store(int32(c)) }

// ServerName is the server the store's accounts live on.
func (s *Store) ServerName() string { return s.serverName }

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

// HashPassword hashes a password with bcrypt. The empty password hashes to "",
// which no password matches.
func (s *Store) HashPassword(password string) (string, error) {
	if password == "" {
		return "", nil
	}
	// bcrypt only reads 72 bytes; longer passwords are refused rather than truncated.
	if len(password) > 72 {
		return "", ErrPasswordTooLong
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), int(s.bcryptCost.Load()))
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// dummyHash is compared against when an account has no password, so that a
// failed login takes about as long whether or not the account exists.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("hearth-dummy-password"), bcrypt.DefaultCost)

// NewAccount describes an account to create.
type NewAccount struct {
	Localpart string
	// Password is the initial password; "" makes an account that cannot log in
	// with a password (guests).
	Password string
	Admin    bool
	Guest    bool
	// UserType is Synapse's user type ("bot", "support"), or "".
	UserType string
	// DisplayName is the initial display name; "" means the localpart (as Synapse
	// does), except for guests, who start without one.
	DisplayName string
	// UIASession, when set, is the completed registration UIA session: a
	// registration token use it holds is counted as completed in the same
	// transaction, and the session is deleted.
	UIASession string
}

// CreateAccount makes a new account with its profile. The first non-guest account
// ever created becomes a server admin. This is the one account-creation path:
// /register, shared-secret registration and `hearth register-user` all use it.
func (s *Store) CreateAccount(ctx context.Context, na NewAccount) error {
	if err := s.ValidateLocalpart(na.Localpart); err != nil {
		return err
	}
	hash, err := s.HashPassword(na.Password)
	if err != nil {
		return err
	}
	displayName := na.DisplayName
	if displayName == "" && !na.Guest {
		displayName = na.Localpart
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		admin := na.Admin
		if !na.Guest && !admin {
			if tx.Dialect() == storage.Postgres {
				// Serialise account creation so that two concurrent first
				// registrations cannot both become admin.
				if _, err := tx.Exec(ctx, `LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE`); err != nil {
					return fmt.Errorf("locking accounts: %w", err)
				}
			}
			var exists int
			err := tx.QueryRow(ctx, `SELECT 1 FROM accounts WHERE is_guest = FALSE LIMIT 1`).Scan(&exists)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				admin = true
			case err != nil:
				return fmt.Errorf("counting accounts: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO accounts (localpart, password_hash, is_admin, is_guest, user_type, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
			na.Localpart, hash, admin, na.Guest, na.UserType, time.Now().UnixMilli())
		if storage.IsUniqueViolation(err) {
			return ErrUserInUse
		}
		if err != nil {
			return fmt.Errorf("creating account %s: %w", na.Localpart, err)
		}
		var dn any
		if displayName != "" {
			dn = displayName
		}
		if _, err := tx.Exec(ctx, `INSERT INTO profiles (localpart, displayname) VALUES ($1, $2)`, na.Localpart, dn); err != nil {
			return fmt.Errorf("creating profile of %s: %w", na.Localpart, err)
		}
		if na.UIASession != "" {
			if err := completeRegistrationSession(ctx, tx, na.UIASession); err != nil {
				return err
			}
		}
		return nil
	})
}

// RegisterUser creates an account for an administrator: shared-secret
// registration (/_synapse/admin/v1/register) and `hearth register-user` both go
// through it. The username is lower-cased into the localpart, as Synapse does.
func (s *Store) RegisterUser(ctx context.Context, username, password string, admin bool, userType, displayName string) (string, error) {
	localpart := strings.ToLower(username)
	err := s.CreateAccount(ctx, NewAccount{Localpart: localpart, Password: password, Admin: admin, UserType: userType, DisplayName: displayName})
	return localpart, err
}

// Create makes a new account with a password; see CreateAccount.
func (s *Store) Create(ctx context.Context, localpart, password string, admin bool) error {
	return s.CreateAccount(ctx, NewAccount{Localpart: localpart, Password: password, Admin: admin})
}

// Account is a stored account.
type Account struct {
	Localpart   string
	IsAdmin     bool
	IsGuest     bool
	Deactivated bool
	UserType    string
	HasPassword bool
}

// Get returns the account, or an error satisfying IsNotFound.
func (s *Store) Get(ctx context.Context, localpart string) (*Account, error) {
	a := &Account{Localpart: localpart}
	var hash string
	err := s.db.QueryRow(ctx, `SELECT is_admin, is_guest, deactivated, user_type, password_hash FROM accounts WHERE localpart = $1`, localpart).
		Scan(&a.IsAdmin, &a.IsGuest, &a.Deactivated, &a.UserType, &hash)
	if err != nil {
		return nil, err
	}
	a.HasPassword = hash != ""
	return a, nil
}

// Exists reports whether the localpart is taken (deactivated accounts keep theirs).
func (s *Store) Exists(ctx context.Context, localpart string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM accounts WHERE localpart = $1`, localpart).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up account %s: %w", localpart, err)
	}
	return true, nil
}

// CheckPassword reports whether password is the account's password. An unknown
// account, or one without a password, never matches; the comparison takes about
// as long either way.
func (s *Store) CheckPassword(ctx context.Context, localpart, password string) (*Account, bool, error) {
	a := &Account{Localpart: localpart}
	var hash string
	err := s.db.QueryRow(ctx, `SELECT is_admin, is_guest, deactivated, user_type, password_hash FROM accounts WHERE localpart = $1`, localpart).
		Scan(&a.IsAdmin, &a.IsGuest, &a.Deactivated, &a.UserType, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("looking up account %s: %w", localpart, err)
	}
	if hash == "" || password == "" || len(password) > 72 {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, nil
		}
		return a, false, nil
	}
	a.HasPassword = true
	return a, bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
}

// SetPassword replaces the account's password. When logoutDevices is set, every
// device except keepDevice (which may be "") is deleted with its tokens; the
// deleted device IDs are returned.
func (s *Store) SetPassword(ctx context.Context, localpart, password string, logoutDevices bool, keepDevice string) ([]string, error) {
	hash, err := s.HashPassword(password)
	if err != nil {
		return nil, err
	}
	var deleted []string
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $2 WHERE localpart = $1`, localpart, hash)
		if err != nil {
			return fmt.Errorf("setting password of %s: %w", localpart, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if logoutDevices {
			deleted, err = deleteDevicesExcept(ctx, tx, localpart, keepDevice)
			return err
		}
		return nil
	})
	return deleted, err
}

// Deactivate marks the account deactivated and removes what it owned: devices
// (with their tokens), profile, account data, push rules, pushers, filters, pending login
// tokens and UIA sessions. The account row stays, so the user ID is never handed
// out again. With erase, the password hash is wiped too; otherwise it is kept so
// that a login with the right password can be told M_USER_DEACTIVATED.
// It returns the IDs of the deleted devices.
func (s *Store) Deactivate(ctx context.Context, localpart string, erase bool) ([]string, error) {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		q := `UPDATE accounts SET deactivated = TRUE WHERE localpart = $1`
		if erase {
			q = `UPDATE accounts SET deactivated = TRUE, password_hash = '' WHERE localpart = $1`
		}
		res, err := tx.Exec(ctx, q, localpart)
		if err != nil {
			return fmt.Errorf("deactivating %s: %w", localpart, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if deleted, err = deleteDevicesExcept(ctx, tx, localpart, ""); err != nil {
			return err
		}
		for _, q := range []string{
			`UPDATE profiles SET displayname = NULL, avatar_url = NULL, fields = '{}' WHERE localpart = $1`,
			`DELETE FROM account_data WHERE localpart = $1`,
			`DELETE FROM push_rules WHERE localpart = $1`,
			`DELETE FROM pushers WHERE localpart = $1`,
			`DELETE FROM filters WHERE localpart = $1`,
			`DELETE FROM login_tokens WHERE localpart = $1`,
		} {
			if _, err := tx.Exec(ctx, q, localpart); err != nil {
				return fmt.Errorf("deactivating %s: %w", localpart, err)
			}
		}
		return deleteUIASessionsOf(ctx, tx, localpart)
	})
	return deleted, err
}

// IsNotFound reports whether err means "no such row".
func IsNotFound(err error) bool { return errors.Is(err, sql.ErrNoRows) || errors.Is(err, ErrNotFound) }

// randomString returns n characters drawn uniformly from alphabet (len ≤ 256).
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	// rand.Read never fails (crypto/rand, Go 1.24+).
	_, _ = rand.Read(b)
	limit := 256 - 256%len(alphabet)
	for i := 0; i < n; {
		if int(b[i]) < limit {
			b[i] = alphabet[int(b[i])%len(alphabet)]
			i++
			continue
		}
		var one [1]byte
		_, _ = rand.Read(one[:])
		b[i] = one[0]
	}
	return string(b)
}

const (
	upperAlphabet    = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	tokenAlphabet    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	regTokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

// NewDeviceID returns a fresh random device ID (ten upper-case letters, as
// Synapse makes them).
func NewDeviceID() string { return randomString(10, upperAlphabet) }

// RandomDigits returns n random decimal digits (generated localparts).
func RandomDigits(n int) string { return randomString(n, "0123456789") }
