package accounts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"hearth/storage"
)

// ErrProfileTooLarge is returned when a profile change would make the whole
// profile exceed MaxProfileBytes.
var ErrProfileTooLarge = errors.New("profile too large")

// MaxProfileBytes bounds a whole profile's JSON encoding (Client-Server API,
// PUT /profile/{userId}/{keyName}: "the total profile MUST be under 64 KiB").
const MaxProfileBytes = 64 * 1024

// Profile is a local user's profile.
type Profile struct {
	DisplayName *string
	AvatarURL   *string
	// Fields holds every other field (m.tz, custom keys) as raw JSON values.
	Fields map[string]json.RawMessage
}

// Object returns the profile as the JSON object GET /profile returns.
func (p *Profile) Object() map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(p.Fields)+2)
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != nil {
		b, _ := json.Marshal(*p.DisplayName)
		out["displayname"] = b
	}
	if p.AvatarURL != nil {
		b, _ := json.Marshal(*p.AvatarURL)
		out["avatar_url"] = b
	}
	return out
}

// Profile returns the profile of a local user, or ErrNotFound when there is no
// such account.
func (s *Store) Profile(ctx context.Context, localpart string) (*Profile, error) {
	return readProfile(ctx, s.db.QueryRow, localpart)
}

func readProfile(ctx context.Context, queryRow func(context.Context, string, ...any) *sql.Row, localpart string) (*Profile, error) {
	p := &Profile{}
	var fields string
	err := queryRow(ctx, `SELECT displayname, avatar_url, fields FROM profiles WHERE localpart = $1`, localpart).Scan(&p.DisplayName, &p.AvatarURL, &fields)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading profile of %s: %w", localpart, err)
	}
	if err := json.Unmarshal([]byte(fields), &p.Fields); err != nil {
		return nil, fmt.Errorf("decoding profile fields of %s: %w", localpart, err)
	}
	return p, nil
}

// SetProfileField sets one profile field to a JSON value (nil deletes it). For
// displayname and avatar_url the value must be a JSON string; "" and null remove
// them. It returns the profile as it is after the change.
func (s *Store) SetProfileField(ctx context.Context, localpart, key string, value json.RawMessage) (*Profile, error) {
	var p *Profile
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		p, err = readProfile(ctx, tx.QueryRow, localpart)
		if err != nil {
			return err
		}
		switch key {
		case "displayname", "avatar_url":
			var sv *string
			if value != nil && !bytes.Equal(bytes.TrimSpace(value), []byte("null")) {
				var str string
				if err := json.Unmarshal(value, &str); err != nil {
					return fmt.Errorf("%s must be a string: %w", key, err)
				}
				if str != "" {
					sv = &str
				}
			}
			if key == "displayname" {
				p.DisplayName = sv
			} else {
				p.AvatarURL = sv
			}
		default:
			if p.Fields == nil {
				p.Fields = map[string]json.RawMessage{}
			}
			if value == nil {
				delete(p.Fields, key)
			} else {
				p.Fields[key] = value
			}
		}
		whole, err := json.Marshal(p.Object())
		if err != nil {
			return fmt.Errorf("encoding profile: %w", err)
		}
		if len(whole) > MaxProfileBytes {
			return ErrProfileTooLarge
		}
		fields, err := json.Marshal(p.Fields)
		if err != nil {
			return fmt.Errorf("encoding profile: %w", err)
		}
		if p.Fields == nil {
			fields = []byte("{}")
		}
		_, err = tx.Exec(ctx, `UPDATE profiles SET displayname = $2, avatar_url = $3, fields = $4 WHERE localpart = $1`,
			localpart, p.DisplayName, p.AvatarURL, string(fields))
		if err != nil {
			return fmt.Errorf("writing profile of %s: %w", localpart, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// AccountDataEntry is one piece of account data with the stream position of its
// last change.
type AccountDataEntry struct {
	// RoomID is "" for global account data.
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// bumpAccountDataPos advances the user's account-data stream position and returns
// the new value. On Postgres the UPDATE also locks the account row, serialising
// the user's account-data writes so positions commit in order.
func bumpAccountDataPos(ctx context.Context, tx *storage.Tx, localpart string) (int64, error) {
	var pos int64
	err := tx.QueryRow(ctx, `UPDATE accounts SET account_data_pos = account_data_pos + 1 WHERE localpart = $1 RETURNING account_data_pos`, localpart).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("advancing account data position of %s: %w", localpart, err)
	}
	return pos, nil
}

func upsertAccountData(ctx context.Context, tx *storage.Tx, localpart, roomID, typ string, content []byte, pos int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO account_data (localpart, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (localpart, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		localpart, roomID, typ, string(content), pos)
	if err != nil {
		return fmt.Errorf("writing account data %s of %s: %w", typ, localpart, err)
	}
	return nil
}

// SetAccountData stores account data (roomID "" for global) and returns its new
// stream position.
func (s *Store) SetAccountData(ctx context.Context, localpart, roomID, typ string, content []byte) (int64, error) {
	return s.UpdateAccountData(ctx, localpart, roomID, typ, func([]byte) ([]byte, error) { return content, nil })
}

// UpdateAccountData replaces account data with fn(old) atomically; old is nil
// when there is none. It returns the new stream position.
func (s *Store) UpdateAccountData(ctx context.Context, localpart, roomID, typ string, fn func(old []byte) ([]byte, error)) (int64, error) {
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if pos, err = bumpAccountDataPos(ctx, tx, localpart); err != nil {
			return err
		}
		var old []byte
		var oldStr string
		err = tx.QueryRow(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`, localpart, roomID, typ).Scan(&oldStr)
		switch {
		case err == nil:
			old = []byte(oldStr)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("reading account data %s of %s: %w", typ, localpart, err)
		}
		content, err := fn(old)
		if err != nil {
			return err
		}
		return upsertAccountData(ctx, tx, localpart, roomID, typ, content, pos)
	})
	return pos, err
}

// DeletedContent is the content of deleted account data (MSC3391): the entry
// stays, so that incremental syncs tell clients about the deletion, but it reads
// as absent.
const DeletedContent = "{}"

// DeleteAccountData deletes one piece of account data (MSC3391). It reports
// whether there was any to delete, and its new stream position if so.
func (s *Store) DeleteAccountData(ctx context.Context, localpart, roomID, typ string) (int64, bool, error) {
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		pos, err = deleteAccountData(ctx, tx, localpart, roomID, typ)
		return err
	})
	return pos, pos > 0, err
}

// deleteAccountData marks account data deleted inside tx; it returns the new
// stream position, or 0 when there was nothing (not already deleted) to delete.
func deleteAccountData(ctx context.Context, tx *storage.Tx, localpart, roomID, typ string) (int64, error) {
	var content string
	err := tx.QueryRow(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`, localpart, roomID, typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && content == DeletedContent) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading account data %s of %s: %w", typ, localpart, err)
	}
	pos, err := bumpAccountDataPos(ctx, tx, localpart)
	if err != nil {
		return 0, err
	}
	return pos, upsertAccountData(ctx, tx, localpart, roomID, typ, []byte(DeletedContent), pos)
}

// AccountData returns one piece of account data, or ErrNotFound (also for
// deleted account data).
func (s *Store) AccountData(ctx context.Context, localpart, roomID, typ string) ([]byte, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`, localpart, roomID, typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && content == DeletedContent) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading account data %s of %s: %w", typ, localpart, err)
	}
	return []byte(content), nil
}

// AccountDataSince returns the account data changed after stream position since
// (0 for all of it), oldest change first. The m.push_rules entry is a marker whose
// content callers replace with the computed rule set.
func (s *Store) AccountDataSince(ctx context.Context, localpart string, since int64) ([]AccountDataEntry, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data WHERE localpart = $1 AND stream_pos > $2 ORDER BY stream_pos`, localpart, since)
	if err != nil {
		return nil, fmt.Errorf("reading account data of %s: %w", localpart, err)
	}
	defer rows.Close()
	var out []AccountDataEntry
	for rows.Next() {
		var e AccountDataEntry
		var content string
		if err := rows.Scan(&e.RoomID, &e.Type, &content, &e.StreamPos); err != nil {
			return nil, fmt.Errorf("reading account data of %s: %w", localpart, err)
		}
		e.Content = json.RawMessage(content)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading account data of %s: %w", localpart, err)
	}
	return out, nil
}

// AccountDataPos returns the user's current account-data stream position.
func (s *Store) AccountDataPos(ctx context.Context, localpart string) (int64, error) {
	var pos int64
	err := s.db.QueryRow(ctx, `SELECT account_data_pos FROM accounts WHERE localpart = $1`, localpart).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("reading account data position of %s: %w", localpart, err)
	}
	return pos, nil
}

// PushRulesType is the account data type whose entry marks push rule changes.
const PushRulesType = "m.push_rules"

// PushRules returns the user's stored push rule document, or nil if they never
// changed their rules.
func (s *Store) PushRules(ctx context.Context, localpart string) ([]byte, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM push_rules WHERE localpart = $1`, localpart).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading push rules of %s: %w", localpart, err)
	}
	return []byte(content), nil
}

// UpdatePushRules replaces the user's push rule document with fn(old) atomically
// (old is nil when there is none) and records the change in the account-data
// stream under m.push_rules. It returns the new stream position.
func (s *Store) UpdatePushRules(ctx context.Context, localpart string, fn func(old []byte) ([]byte, error)) (int64, error) {
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if pos, err = bumpAccountDataPos(ctx, tx, localpart); err != nil {
			return err
		}
		var old []byte
		var oldStr string
		err = tx.QueryRow(ctx, `SELECT content FROM push_rules WHERE localpart = $1`, localpart).Scan(&oldStr)
		switch {
		case err == nil:
			old = []byte(oldStr)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("reading push rules of %s: %w", localpart, err)
		}
		content, err := fn(old)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO push_rules (localpart, content) VALUES ($1, $2)
			ON CONFLICT (localpart) DO UPDATE SET content = excluded.content`, localpart, string(content)); err != nil {
			return fmt.Errorf("writing push rules of %s: %w", localpart, err)
		}
		return upsertAccountData(ctx, tx, localpart, "", PushRulesType, []byte("{}"), pos)
	})
	return pos, err
}

// PutFilter stores a filter (already validated and encoded) and returns its ID.
// Uploading the same filter again returns the existing ID.
func (s *Store) PutFilter(ctx context.Context, localpart string, content []byte) (string, error) {
	sum := sha256.Sum256(content)
	var id int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		// Lock the account row (Postgres) so concurrent uploads get distinct IDs.
		res, err := tx.Exec(ctx, `UPDATE accounts SET account_data_pos = account_data_pos WHERE localpart = $1`, localpart)
		if err != nil {
			return fmt.Errorf("locking account %s: %w", localpart, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		rows, err := tx.Query(ctx, `SELECT filter_id, content FROM filters WHERE localpart = $1 AND content_hash = $2`, localpart, sum[:])
		if err != nil {
			return fmt.Errorf("looking up filters of %s: %w", localpart, err)
		}
		found := false
		for rows.Next() {
			var c string
			if err := rows.Scan(&id, &c); err != nil {
				rows.Close()
				return fmt.Errorf("looking up filters of %s: %w", localpart, err)
			}
			if c == string(content) {
				found = true
				break
			}
		}
		rows.Close()
		if found {
			return nil
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE localpart = $1`, localpart).Scan(&id); err != nil {
			return fmt.Errorf("allocating filter ID: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO filters (localpart, filter_id, content, content_hash) VALUES ($1, $2, $3, $4)`,
			localpart, id, string(content), sum[:]); err != nil {
			return fmt.Errorf("storing filter: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}

// Filter returns a stored filter, or ErrNotFound.
func (s *Store) Filter(ctx context.Context, localpart, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || id < 0 || strconv.FormatInt(id, 10) != filterID {
		return nil, ErrNotFound
	}
	var content string
	err = s.db.QueryRow(ctx, `SELECT content FROM filters WHERE localpart = $1 AND filter_id = $2`, localpart, id).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading filter %s of %s: %w", filterID, localpart, err)
	}
	return []byte(content), nil
}
