package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/storage"
)

// BackupVersion describes one server-side key backup (Client-Server API,
// "Server-side key backups").
type BackupVersion struct {
	Version   string          `json:"version"`
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
}

// BackupKey is the backed-up data of one Megolm session (KeyBackupData).
type BackupKey struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// BackupKeys maps rooms to session IDs to keys.
type BackupKeys map[id.RoomID]map[string]*BackupKey

// BackupUpdate is the answer to a change of the stored keys.
type BackupUpdate struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

var errUnknownBackup = httputil.NotFound("Unknown backup version")

// parseBackupVersion reads a version string; versions are decimal integers here,
// and anything else names no backup.
func parseBackupVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// CreateBackupVersion starts a new backup, which becomes the current one.
func (s *Service) CreateBackupVersion(ctx context.Context, userID id.UserID, algorithm string, authData json.RawMessage) (string, error) {
	var v int64
	var err error
	// Two concurrent creations may pick the same number; the loser tries again.
	for range 3 {
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = $1`, string(userID)).Scan(&v); err != nil {
				return fmt.Errorf("numbering backup version: %w", err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
				string(userID), v, algorithm, string(authData))
			return err
		})
		if !storage.IsUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating backup version: %w", err)
	}
	return strconv.FormatInt(v, 10), nil
}

// currentBackup returns the number of the user's current backup (the newest not
// deleted), or 0.
func currentBackup(ctx context.Context, q storage.Conn, userID id.UserID) (int64, error) {
	var v int64
	err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_backup_versions WHERE user_id = $1 AND NOT deleted`, string(userID)).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("reading current backup version: %w", err)
	}
	return v, nil
}

// Backup describes a backup version, or the current one when version is "".
// Unknown and deleted versions are M_NOT_FOUND.
func (s *Service) Backup(ctx context.Context, userID id.UserID, version string) (*BackupVersion, error) {
	var v int64
	if version == "" {
		cur, err := currentBackup(ctx, s.db, userID)
		if err != nil {
			return nil, err
		}
		if cur == 0 {
			return nil, httputil.NotFound("No current backup version")
		}
		v = cur
	} else {
		var ok bool
		if v, ok = parseBackupVersion(version); !ok {
			return nil, errUnknownBackup
		}
	}
	var b BackupVersion
	var auth string
	var etag int64
	err := s.db.QueryRow(ctx, `SELECT algorithm, auth_data, key_count, etag FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		string(userID), v).Scan(&b.Algorithm, &auth, &b.Count, &etag)
	if isNoRows(err) {
		return nil, errUnknownBackup
	}
	if err != nil {
		return nil, fmt.Errorf("reading backup version: %w", err)
	}
	b.Version, b.AuthData, b.ETag = strconv.FormatInt(v, 10), json.RawMessage(auth), strconv.FormatInt(etag, 10)
	return &b, nil
}

// UpdateBackup replaces a backup's auth_data; the algorithm must stay the same.
func (s *Service) UpdateBackup(ctx context.Context, userID id.UserID, version, algorithm string, authData json.RawMessage) error {
	v, ok := parseBackupVersion(version)
	if !ok {
		return errUnknownBackup
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var alg string
		err := tx.QueryRow(ctx, `SELECT algorithm FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`, string(userID), v).Scan(&alg)
		if isNoRows(err) {
			return errUnknownBackup
		}
		if err != nil {
			return fmt.Errorf("reading backup version: %w", err)
		}
		if alg != algorithm {
			return httputil.InvalidParam("Algorithm does not match")
		}
		if _, err := tx.Exec(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2`, string(userID), v, string(authData)); err != nil {
			return fmt.Errorf("updating backup version: %w", err)
		}
		return nil
	})
}

// DeleteBackup deletes a backup version with its keys. Deleting it again
// succeeds; a version that never existed is M_NOT_FOUND.
func (s *Service) DeleteBackup(ctx context.Context, userID id.UserID, version string) error {
	v, ok := parseBackupVersion(version)
	if !ok {
		return errUnknownBackup
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE key_backup_versions SET deleted = TRUE, key_count = 0 WHERE user_id = $1 AND version = $2`, string(userID), v)
		if err != nil {
			return fmt.Errorf("deleting backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errUnknownBackup
		}
		if _, err := tx.Exec(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, string(userID), v); err != nil {
			return fmt.Errorf("deleting backed-up keys: %w", err)
		}
		return nil
	})
}

// shouldReplace applies the spec's rule for a key uploaded for a session the
// backup already holds (Client-Server API, "Server-side key backups"): keep the
// verified one; with equal is_verified, the lower first_message_index; with that
// equal too, the lower forwarded_count. On a full tie the stored key stays.
func shouldReplace(old, new *BackupKey) bool {
	if old.IsVerified != new.IsVerified {
		return new.IsVerified
	}
	if old.FirstMessageIndex != new.FirstMessageIndex {
		return new.FirstMessageIndex < old.FirstMessageIndex
	}
	return new.ForwardedCount < old.ForwardedCount
}

// PutBackupKeys stores keys in the user's current backup, which version must
// name: another existing version is M_WRONG_ROOM_KEYS_VERSION (403, with
// current_version), no backup at all M_NOT_FOUND. Keys for sessions already
// stored replace them only as shouldReplace says. The etag changes when any key
// was written.
func (s *Service) PutBackupKeys(ctx context.Context, userID id.UserID, version string, keys BackupKeys) (*BackupUpdate, error) {
	for room, sessions := range keys {
		for sid, k := range sessions {
			if k == nil || !isObject(k.SessionData) {
				return nil, httputil.BadJSON("Key %s in %s needs session_data as an object", sid, room)
			}
			if k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
				return nil, httputil.BadJSON("Key %s in %s has negative counts", sid, room)
			}
		}
	}
	var out *BackupUpdate
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		cur, err := currentBackup(ctx, tx, userID)
		if err != nil {
			return err
		}
		if cur == 0 {
			return errUnknownBackup
		}
		if v, ok := parseBackupVersion(version); !ok || v != cur {
			return (&httputil.Error{Status: http.StatusForbidden, ErrCode: "M_WRONG_ROOM_KEYS_VERSION", Message: "Wrong backup version."}).
				With("current_version", strconv.FormatInt(cur, 10))
		}
		u := string(userID)
		var added, changed int64
		rooms := make([]id.RoomID, 0, len(keys))
		for r := range keys {
			rooms = append(rooms, r)
		}
		slices.Sort(rooms)
		for _, room := range rooms {
			for sid, k := range keys[room] {
				var old BackupKey
				err := tx.QueryRow(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM key_backup_sessions
					WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, u, cur, string(room), sid).
					Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified)
				switch {
				case isNoRows(err):
					if _, err := tx.Exec(ctx, `INSERT INTO key_backup_sessions (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, u, cur, string(room), sid, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)); err != nil {
						return fmt.Errorf("storing backed-up key: %w", err)
					}
					added++
				case err != nil:
					return fmt.Errorf("reading backed-up key: %w", err)
				case shouldReplace(&old, k):
					if _, err := tx.Exec(ctx, `UPDATE key_backup_sessions SET first_message_index = $5, forwarded_count = $6, is_verified = $7, session_data = $8
						WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, u, cur, string(room), sid, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)); err != nil {
						return fmt.Errorf("replacing backed-up key: %w", err)
					}
					changed++
				}
			}
		}
		out, err = bumpBackup(ctx, tx, userID, cur, added, added+changed > 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// bumpBackup adds delta to a backup's key count and, when changed, moves its
// etag on; it returns the new etag and count.
func bumpBackup(ctx context.Context, tx *storage.Tx, userID id.UserID, version, delta int64, changed bool) (*BackupUpdate, error) {
	var etagInc int64
	if changed {
		etagInc = 1
	}
	var etag, count int64
	if err := tx.QueryRow(ctx, `UPDATE key_backup_versions SET key_count = key_count + $3, etag = etag + $4
		WHERE user_id = $1 AND version = $2 RETURNING etag, key_count`, string(userID), version, delta, etagInc).Scan(&etag, &count); err != nil {
		return nil, fmt.Errorf("updating backup etag: %w", err)
	}
	return &BackupUpdate{ETag: strconv.FormatInt(etag, 10), Count: count}, nil
}

// BackupKeysOf reads keys of a backup version: all (roomID ""), one room's
// (sessionID ""), or one session's. Unknown and deleted versions are M_NOT_FOUND.
func (s *Service) BackupKeysOf(ctx context.Context, userID id.UserID, version string, roomID id.RoomID, sessionID string) (BackupKeys, error) {
	v, ok := parseBackupVersion(version)
	if !ok {
		return nil, errUnknownBackup
	}
	var exists bool
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) > 0 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		string(userID), v).Scan(&exists); err != nil {
		return nil, fmt.Errorf("reading backup version: %w", err)
	}
	if !exists {
		return nil, errUnknownBackup
	}
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM key_backup_sessions WHERE user_id = $1 AND version = $2`
	args := []any{string(userID), v}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, string(roomID))
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading backed-up keys: %w", err)
	}
	defer rows.Close()
	out := BackupKeys{}
	for rows.Next() {
		var room, sid, data string
		k := &BackupKey{}
		if err := rows.Scan(&room, &sid, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, err
		}
		k.SessionData = json.RawMessage(data)
		if out[id.RoomID(room)] == nil {
			out[id.RoomID(room)] = map[string]*BackupKey{}
		}
		out[id.RoomID(room)][sid] = k
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes keys of a backup version: all (roomID ""), one room's
// (sessionID ""), or one session's.
func (s *Service) DeleteBackupKeys(ctx context.Context, userID id.UserID, version string, roomID id.RoomID, sessionID string) (*BackupUpdate, error) {
	v, ok := parseBackupVersion(version)
	if !ok {
		return nil, errUnknownBackup
	}
	var out *BackupUpdate
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) > 0 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
			string(userID), v).Scan(&exists); err != nil {
			return fmt.Errorf("reading backup version: %w", err)
		}
		if !exists {
			return errUnknownBackup
		}
		q := `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`
		args := []any{string(userID), v}
		if roomID != "" {
			q += ` AND room_id = $3`
			args = append(args, string(roomID))
			if sessionID != "" {
				q += ` AND session_id = $4`
				args = append(args, sessionID)
			}
		}
		res, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("deleting backed-up keys: %w", err)
		}
		n, _ := res.RowsAffected()
		out, err = bumpBackup(ctx, tx, userID, v, -n, n > 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
