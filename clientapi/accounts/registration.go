package accounts

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"hearth/storage"
)

// ErrTokenExists is returned when creating a registration token that exists.
var ErrTokenExists = errors.New("registration token already exists")

// RegistrationToken is a token for m.login.registration_token, in the shape of
// Synapse's admin API.
type RegistrationToken struct {
	Token string `json:"token"`
	// UsesAllowed is nil for unlimited uses.
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	// ExpiryTime is unix ms, nil for never.
	ExpiryTime *int64 `json:"expiry_time"`
}

// Valid reports whether the token can be used at time now (unix ms): it has not
// expired and pending + completed uses are below uses_allowed.
func (t *RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime < now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_time`

func scanRegToken(sc interface{ Scan(...any) error }) (*RegistrationToken, error) {
	t := &RegistrationToken{}
	var uses, expiry sql.NullInt64
	if err := sc.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &expiry); err != nil {
		return nil, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTime = &expiry.Int64
	}
	return t, nil
}

// RegistrationTokens lists all tokens; with valid set, only those whose validity
// (at now) equals *valid.
func (s *Store) RegistrationTokens(ctx context.Context, valid *bool, now int64) ([]*RegistrationToken, error) {
	rows, err := s.db.Query(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("listing registration tokens: %w", err)
	}
	defer rows.Close()
	out := []*RegistrationToken{}
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, fmt.Errorf("listing registration tokens: %w", err)
		}
		if valid == nil || t.Valid(now) == *valid {
			out = append(out, t)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing registration tokens: %w", err)
	}
	return out, nil
}

// RegistrationToken returns one token, or ErrNotFound.
func (s *Store) RegistrationToken(ctx context.Context, token string) (*RegistrationToken, error) {
	t, err := scanRegToken(s.db.QueryRow(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading registration token: %w", err)
	}
	return t, nil
}

// HasRegistrationTokens reports whether any registration token exists.
func (s *Store) HasRegistrationTokens(ctx context.Context) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM registration_tokens LIMIT 1`).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking registration tokens: %w", err)
	}
	return true, nil
}

// CreateRegistrationToken stores a new token. An empty t.Token is replaced by a
// random one of the given length. It returns ErrTokenExists on a clash.
func (s *Store) CreateRegistrationToken(ctx context.Context, t *RegistrationToken, length int) (*RegistrationToken, error) {
	random := t.Token == ""
	for attempt := 0; ; attempt++ {
		if random {
			t.Token = randomString(length, regTokenAlphabet)
		}
		_, err := s.db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES ($1, $2, 0, 0, $3)`,
			t.Token, t.UsesAllowed, t.ExpiryTime)
		if storage.IsUniqueViolation(err) {
			if random && attempt < 5 {
				continue
			}
			return nil, ErrTokenExists
		}
		if err != nil {
			return nil, fmt.Errorf("creating registration token: %w", err)
		}
		t.Pending, t.Completed = 0, 0
		return t, nil
	}
}

// RegistrationTokenUpdate says which fields of a token to change; a Set flag that
// is false leaves the field as it is.
type RegistrationTokenUpdate struct {
	SetUsesAllowed bool
	UsesAllowed    *int64
	SetExpiryTime  bool
	ExpiryTime     *int64
}

// UpdateRegistrationToken changes a token and returns it, or ErrNotFound.
func (s *Store) UpdateRegistrationToken(ctx context.Context, token string, u RegistrationTokenUpdate) (*RegistrationToken, error) {
	var out *RegistrationToken
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if u.SetUsesAllowed {
			if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET uses_allowed = $2 WHERE token = $1`, token, u.UsesAllowed); err != nil {
				return fmt.Errorf("updating registration token: %w", err)
			}
		}
		if u.SetExpiryTime {
			if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET expiry_time = $2 WHERE token = $1`, token, u.ExpiryTime); err != nil {
				return fmt.Errorf("updating registration token: %w", err)
			}
		}
		t, err := scanRegToken(tx.QueryRow(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("reading registration token: %w", err)
		}
		out = t
		return nil
	})
	return out, err
}

// DeleteRegistrationToken removes a token; ErrNotFound if there is none.
func (s *Store) DeleteRegistrationToken(ctx context.Context, token string) error {
	res, err := s.db.Exec(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("deleting registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// UIASession is a user-interactive authentication session.
type UIASession struct {
	ID        string
	Operation string
	// Localpart is the user the session authenticates; "" for registration.
	Localpart string
	CreatedTS int64
	// Completed lists the stages completed so far, in order.
	Completed []string
	// RegistrationToken is the token whose use this session holds, if any.
	RegistrationToken string
}

// UIASessionLifetime is how long a UIA session stays usable.
const UIASessionLifetime = 30 * time.Minute

// CreateUIASession starts a session for an operation, first clearing out expired
// sessions (and releasing the registration-token uses they held).
func (s *Store) CreateUIASession(ctx context.Context, operation, localpart string) (*UIASession, error) {
	sess := &UIASession{ID: randomString(24, tokenAlphabet), Operation: operation, Localpart: localpart, CreatedTS: time.Now().UnixMilli()}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := expireUIASessions(ctx, tx, sess.CreatedTS-UIASessionLifetime.Milliseconds()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO uia_sessions (session_id, operation, localpart, created_ts, completed) VALUES ($1, $2, $3, $4, '[]')`,
			sess.ID, operation, localpart, sess.CreatedTS); err != nil {
			return fmt.Errorf("creating UIA session: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

func expireUIASessions(ctx context.Context, tx *storage.Tx, before int64) error {
	rows, err := tx.Query(ctx, `SELECT registration_token FROM uia_sessions WHERE created_ts < $1 AND registration_token IS NOT NULL`, before)
	if err != nil {
		return fmt.Errorf("finding expired UIA sessions: %w", err)
	}
	var toks []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return fmt.Errorf("finding expired UIA sessions: %w", err)
		}
		toks = append(toks, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("finding expired UIA sessions: %w", err)
	}
	for _, t := range toks {
		if err := releaseRegToken(ctx, tx, t); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, before); err != nil {
		return fmt.Errorf("deleting expired UIA sessions: %w", err)
	}
	return nil
}

func releaseRegToken(ctx context.Context, tx *storage.Tx, token string) error {
	if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, token); err != nil {
		return fmt.Errorf("releasing registration token use: %w", err)
	}
	return nil
}

// UIASession returns a live session, or ErrNotFound.
func (s *Store) UIASession(ctx context.Context, id string) (*UIASession, error) {
	sess := &UIASession{ID: id}
	var completed string
	var tok sql.NullString
	err := s.db.QueryRow(ctx, `SELECT operation, localpart, created_ts, completed, registration_token FROM uia_sessions WHERE session_id = $1`, id).
		Scan(&sess.Operation, &sess.Localpart, &sess.CreatedTS, &completed, &tok)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading UIA session: %w", err)
	}
	if time.Now().UnixMilli()-sess.CreatedTS > UIASessionLifetime.Milliseconds() {
		return nil, ErrNotFound
	}
	if err := json.Unmarshal([]byte(completed), &sess.Completed); err != nil {
		return nil, fmt.Errorf("decoding UIA session: %w", err)
	}
	sess.RegistrationToken = tok.String
	return sess, nil
}

// CompleteUIAStage records a completed stage.
func (s *Store) CompleteUIAStage(ctx context.Context, sess *UIASession, stage string) error {
	for _, c := range sess.Completed {
		if c == stage {
			return nil
		}
	}
	completed, _ := json.Marshal(append(sess.Completed, stage))
	if _, err := s.db.Exec(ctx, `UPDATE uia_sessions SET completed = $2 WHERE session_id = $1`, sess.ID, string(completed)); err != nil {
		return fmt.Errorf("updating UIA session: %w", err)
	}
	sess.Completed = append(sess.Completed, stage)
	return nil
}

// ReserveRegistrationToken takes a pending use of token for the session and marks
// the m.login.registration_token stage complete. It reports false if the token
// is unknown, expired or used up. A session that already holds a token keeps it.
func (s *Store) ReserveRegistrationToken(ctx context.Context, sess *UIASession, token, stage string) (bool, error) {
	if sess.RegistrationToken != "" {
		return sess.RegistrationToken == token, s.CompleteUIAStage(ctx, sess, stage)
	}
	ok := false
	completed, _ := json.Marshal(append(sess.Completed, stage))
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1
			WHERE token = $1 AND (expiry_time IS NULL OR expiry_time >= $2) AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`,
			token, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("reserving registration token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE uia_sessions SET registration_token = $2, completed = $3 WHERE session_id = $1`,
			sess.ID, token, string(completed)); err != nil {
			return fmt.Errorf("updating UIA session: %w", err)
		}
		ok = true
		return nil
	})
	if err != nil || !ok {
		return false, err
	}
	sess.RegistrationToken = token
	sess.Completed = append(sess.Completed, stage)
	return true, nil
}

// DeleteUIASession ends a session, releasing any registration-token use it held.
func (s *Store) DeleteUIASession(ctx context.Context, id string) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return deleteUIASession(ctx, tx, id) })
}

func deleteUIASession(ctx context.Context, tx *storage.Tx, id string) error {
	var tok sql.NullString
	err := tx.QueryRow(ctx, `SELECT registration_token FROM uia_sessions WHERE session_id = $1`, id).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading UIA session: %w", err)
	}
	if tok.Valid {
		if err := releaseRegToken(ctx, tx, tok.String); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id); err != nil {
		return fmt.Errorf("deleting UIA session: %w", err)
	}
	return nil
}

func deleteUIASessionsOf(ctx context.Context, tx *storage.Tx, localpart string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE localpart = $1`, localpart); err != nil {
		return fmt.Errorf("deleting UIA sessions of %s: %w", localpart, err)
	}
	return nil
}

// completeRegistrationSession turns the registration token use a session holds
// from pending into completed, and deletes the session.
func completeRegistrationSession(ctx context.Context, tx *storage.Tx, id string) error {
	var tok sql.NullString
	err := tx.QueryRow(ctx, `SELECT registration_token FROM uia_sessions WHERE session_id = $1`, id).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading UIA session: %w", err)
	}
	if tok.Valid {
		if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1 WHERE token = $1 AND pending > 0`, tok.String); err != nil {
			return fmt.Errorf("completing registration token use: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id); err != nil {
		return fmt.Errorf("deleting UIA session: %w", err)
	}
	return nil
}
