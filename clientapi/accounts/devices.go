package accounts

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"hearth/storage"
)

// ErrUnknownToken is returned for an access, refresh or login token that does not
// exist (or no longer does).
var ErrUnknownToken = errors.New("unknown token")

// TokenHash is the SHA-256 of a token: the only form in which tokens are stored.
type TokenHash [32]byte

// HashToken hashes a token for storage and lookup.
func HashToken(token string) TokenHash { return sha256.Sum256([]byte(token)) }

// Access token prefixes make leaked tokens recognisable (secret scanners) and tell
// the kinds apart.
const (
	accessTokenPrefix  = "hth_"
	refreshTokenPrefix = "htr_"
	loginTokenPrefix   = "htl_"
)

func newToken(prefix string) string { return prefix + randomString(40, tokenAlphabet) }

// TokenInfo is what an access token stands for.
type TokenInfo struct {
	Localpart string
	DeviceID  string
	IsGuest   bool
	IsAdmin   bool
	// ExpiresTS is when the token expires (unix ms), 0 for never.
	ExpiresTS int64
	// HasPrevRefresh is set until the token's first use revokes the refresh token
	// it was issued in exchange for.
	HasPrevRefresh bool
}

// LookupAccessToken resolves an access token hash with one indexed query. It
// returns ErrUnknownToken when there is no such token.
func (s *Store) LookupAccessToken(ctx context.Context, h TokenHash) (*TokenInfo, error) {
	ti := &TokenInfo{}
	var prev []byte
	err := s.db.QueryRow(ctx, `SELECT t.localpart, t.device_id, t.expires_ts, t.prev_refresh_hash, a.is_guest, a.is_admin
		FROM access_tokens t JOIN accounts a ON a.localpart = t.localpart WHERE t.token_hash = $1`, h[:]).
		Scan(&ti.Localpart, &ti.DeviceID, &ti.ExpiresTS, &prev, &ti.IsGuest, &ti.IsAdmin)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("looking up access token: %w", err)
	}
	ti.HasPrevRefresh = len(prev) > 0
	return ti, nil
}

// ConfirmRefresh is called on the first use of an access token issued by Refresh:
// the refresh token it replaced is revoked now that the client has evidently
// received the new pair (Client-Server API, "Refreshing access tokens").
func (s *Store) ConfirmRefresh(ctx context.Context, h TokenHash) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var prev []byte
		err := tx.QueryRow(ctx, `SELECT prev_refresh_hash FROM access_tokens WHERE token_hash = $1`, h[:]).Scan(&prev)
		if errors.Is(err, sql.ErrNoRows) || len(prev) == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading access token: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, prev); err != nil {
			return fmt.Errorf("revoking old refresh token: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE access_tokens SET prev_refresh_hash = NULL WHERE token_hash = $1`, h[:]); err != nil {
			return fmt.Errorf("updating access token: %w", err)
		}
		return nil
	})
}

// NewLogin describes a login (or registration's automatic login).
type NewLogin struct {
	Localpart string
	// DeviceID is the device to log in as; "" makes a new one. An existing device
	// keeps its display name and loses its old tokens.
	DeviceID          string
	DeviceDisplayName string
	IP                string
	// Lifetime, when non-zero, makes the access token expire and issues a refresh
	// token.
	Lifetime time.Duration
}

// Tokens are the credentials handed to a client.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	DeviceID     string
	// ExpiresInMS is the access token's lifetime, 0 for never.
	ExpiresInMS int64
	// Hash is the access token's hash.
	Hash TokenHash
}

// Login makes (or takes over) a device and issues its tokens.
func (s *Store) Login(ctx context.Context, nl NewLogin) (*Tokens, error) {
	var t *Tokens
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		now := time.Now().UnixMilli()
		deviceID := nl.DeviceID
		if deviceID == "" {
			deviceID = NewDeviceID()
		}
		var dn any
		if nl.DeviceDisplayName != "" {
			dn = nl.DeviceDisplayName
		}
		res, err := tx.Exec(ctx, `INSERT INTO devices (localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip) VALUES ($1, $2, $3, $4, $4, $5)
			ON CONFLICT (localpart, device_id) DO NOTHING`, nl.Localpart, deviceID, dn, now, nl.IP)
		if err != nil {
			return fmt.Errorf("creating device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// An existing device: the server invalidates the tokens previously
			// assigned to it ("Relationship between access tokens and devices").
			for _, q := range []string{
				`DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2`,
				`DELETE FROM refresh_tokens WHERE localpart = $1 AND device_id = $2`,
			} {
				if _, err := tx.Exec(ctx, q, nl.Localpart, deviceID); err != nil {
					return fmt.Errorf("revoking old tokens of device %s: %w", deviceID, err)
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE localpart = $1 AND device_id = $2`,
				nl.Localpart, deviceID, now, nl.IP); err != nil {
				return fmt.Errorf("updating device: %w", err)
			}
		}
		t, err = issueTokens(ctx, tx, nl.Localpart, deviceID, nl.Lifetime, nil, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// issueTokens inserts a new access token (and a refresh token when lifetime > 0).
// prevRefresh is the refresh token this pair replaces, if any.
func issueTokens(ctx context.Context, tx *storage.Tx, localpart, deviceID string, lifetime time.Duration, prevRefresh []byte, now int64) (*Tokens, error) {
	t := &Tokens{AccessToken: newToken(accessTokenPrefix), DeviceID: deviceID}
	t.Hash = HashToken(t.AccessToken)
	var expires int64
	var refreshHash []byte
	if lifetime > 0 {
		t.ExpiresInMS = lifetime.Milliseconds()
		expires = now + t.ExpiresInMS
		t.RefreshToken = newToken(refreshTokenPrefix)
		rh := HashToken(t.RefreshToken)
		refreshHash = rh[:]
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, localpart, device_id, created_ts) VALUES ($1, $2, $3, $4)`,
			refreshHash, localpart, deviceID, now); err != nil {
			return nil, fmt.Errorf("storing refresh token: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, localpart, device_id, created_ts, expires_ts, refresh_hash, prev_refresh_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.Hash[:], localpart, deviceID, now, expires, refreshHash, prevRefresh); err != nil {
		return nil, fmt.Errorf("storing access token: %w", err)
	}
	return t, nil
}

// Refresh exchanges a refresh token for a new access token and refresh token
// with the given lifetime. The old refresh token stays valid until the new
// access token or refresh token is used; using it again before that replaces the
// pair it last produced. It returns ErrUnknownToken for a token that does not
// exist or was already superseded.
func (s *Store) Refresh(ctx context.Context, refreshToken string, lifetime time.Duration) (*Tokens, string, error) {
	old := HashToken(refreshToken)
	var t *Tokens
	var localpart string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var deviceID string
		var next []byte
		err := tx.QueryRow(ctx, `SELECT localpart, device_id, next_hash FROM refresh_tokens WHERE token_hash = $1`, old[:]).
			Scan(&localpart, &deviceID, &next)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUnknownToken
		}
		if err != nil {
			return fmt.Errorf("looking up refresh token: %w", err)
		}
		now := time.Now().UnixMilli()
		if len(next) > 0 {
			// The previous exchange's answer never reached the client (neither of
			// its tokens was used): drop that pair and make a new one.
			if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, next); err != nil {
				return fmt.Errorf("dropping unused refresh token: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, next); err != nil {
				return fmt.Errorf("dropping unused access token: %w", err)
			}
		}
		// Access tokens of this device that have already expired are of no more
		// use: the client holds a fresh pair from here on.
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2 AND expires_ts > 0 AND expires_ts < $3`,
			localpart, deviceID, now); err != nil {
			return fmt.Errorf("dropping expired access tokens: %w", err)
		}
		t, err = issueTokens(ctx, tx, localpart, deviceID, lifetime, old[:], now)
		if err != nil {
			return err
		}
		nh := HashToken(t.RefreshToken)
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET next_hash = $2 WHERE token_hash = $1`, old[:], nh[:]); err != nil {
			return fmt.Errorf("linking refresh tokens: %w", err)
		}
		// Using the new refresh token also counts as receiving the new pair.
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE next_hash = $1`, old[:]); err != nil {
			return fmt.Errorf("revoking superseded refresh token: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return t, localpart, nil
}

// Device is a stored device.
type Device struct {
	DeviceID    string
	DisplayName *string
	LastSeenTS  int64
	LastSeenIP  string
}

// Devices lists the account's devices.
func (s *Store) Devices(ctx context.Context, localpart string) ([]Device, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE localpart = $1 ORDER BY device_id`, localpart)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
	}
	return out, nil
}

// Device returns one device, or ErrNotFound.
func (s *Store) Device(ctx context.Context, localpart, deviceID string) (*Device, error) {
	d := &Device{DeviceID: deviceID}
	err := s.db.QueryRow(ctx, `SELECT display_name, last_seen_ts, last_seen_ip FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, deviceID).
		Scan(&d.DisplayName, &d.LastSeenTS, &d.LastSeenIP)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading device %s: %w", deviceID, err)
	}
	return d, nil
}

// SetDeviceDisplayName renames a device; ErrNotFound if there is no such device.
func (s *Store) SetDeviceDisplayName(ctx context.Context, localpart, deviceID, name string) error {
	res, err := s.db.Exec(ctx, `UPDATE devices SET display_name = $3 WHERE localpart = $1 AND device_id = $2`, localpart, deviceID, name)
	if err != nil {
		return fmt.Errorf("renaming device %s: %w", deviceID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// TouchDevice records when and from where a device was last seen.
func (s *Store) TouchDevice(ctx context.Context, localpart, deviceID, ip string, ts int64) error {
	if _, err := s.db.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE localpart = $1 AND device_id = $2`,
		localpart, deviceID, ts, ip); err != nil {
		return fmt.Errorf("updating last seen of device %s: %w", deviceID, err)
	}
	return nil
}

// DeleteDevices deletes the given devices of the account with all their tokens.
// Devices that do not exist are ignored. It returns the IDs actually deleted.
func (s *Store) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) ([]string, error) {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		deleted = deleted[:0]
		for _, id := range deviceIDs {
			n, err := deleteDevice(ctx, tx, localpart, id)
			if err != nil {
				return err
			}
			if n {
				deleted = append(deleted, id)
			}
		}
		return nil
	})
	return deleted, err
}

// DeleteAllDevices deletes every device of the account except keep ("" for none)
// and returns their IDs.
func (s *Store) DeleteAllDevices(ctx context.Context, localpart, keep string) ([]string, error) {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		deleted, err = deleteDevicesExcept(ctx, tx, localpart, keep)
		return err
	})
	return deleted, err
}

func deleteDevicesExcept(ctx context.Context, tx *storage.Tx, localpart, keep string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT device_id FROM devices WHERE localpart = $1 AND device_id <> $2`, localpart, keep)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", localpart, err)
	}
	for _, id := range ids {
		if _, err := deleteDevice(ctx, tx, localpart, id); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// deleteDevice removes a device, its tokens (explicitly, so it does not depend on
// foreign-key cascades being enabled) and its pushers, and deletes (MSC3391) the
// device's MSC3890 local notification settings in the owner's account data.
func deleteDevice(ctx context.Context, tx *storage.Tx, localpart, deviceID string) (bool, error) {
	for _, q := range []string{
		`DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM refresh_tokens WHERE localpart = $1 AND device_id = $2`,
		`DELETE FROM pushers WHERE localpart = $1 AND device_id = $2`,
	} {
		if _, err := tx.Exec(ctx, q, localpart, deviceID); err != nil {
			return false, fmt.Errorf("deleting tokens and pushers of device %s: %w", deviceID, err)
		}
	}
	res, err := tx.Exec(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, deviceID)
	if err != nil {
		return false, fmt.Errorf("deleting device %s: %w", deviceID, err)
	}
	n, _ := res.RowsAffected()
	if n == 0 {
		return false, nil
	}
	if _, err := deleteAccountData(ctx, tx, localpart, "", LocalNotificationSettingsPrefix+deviceID); err != nil {
		return false, err
	}
	return true, nil
}

// LocalNotificationSettingsPrefix starts the global account data type holding a
// device's notification settings (MSC3890); the device ID follows. The entry is
// deleted with the device.
const LocalNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// CreateLoginToken issues a single-use m.login.token for the account.
func (s *Store) CreateLoginToken(ctx context.Context, localpart string, lifetime time.Duration) (string, error) {
	tok := newToken(loginTokenPrefix)
	h := HashToken(tok)
	now := time.Now()
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM login_tokens WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("dropping expired login tokens: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO login_tokens (token_hash, localpart, expires_ts) VALUES ($1, $2, $3)`,
			h[:], localpart, now.Add(lifetime).UnixMilli()); err != nil {
			return fmt.Errorf("storing login token: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return tok, nil
}

// ConsumeLoginToken uses up a login token and returns whose it was, or
// ErrUnknownToken if it does not exist, was used, or expired.
func (s *Store) ConsumeLoginToken(ctx context.Context, token string) (string, error) {
	h := HashToken(token)
	var localpart string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var expires int64
		err := tx.QueryRow(ctx, `SELECT localpart, expires_ts FROM login_tokens WHERE token_hash = $1`, h[:]).Scan(&localpart, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUnknownToken
		}
		if err != nil {
			return fmt.Errorf("looking up login token: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM login_tokens WHERE token_hash = $1`, h[:]); err != nil {
			return fmt.Errorf("using login token: %w", err)
		}
		if expires < time.Now().UnixMilli() {
			return ErrUnknownToken
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return localpart, nil
}
