package accounts

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"hearth/storage"
)

// Pusher is one of a user's pushers (Client-Server API, "Push Notifications").
type Pusher struct {
	Localpart string
	AppID     string
	PushKey   string
	// DeviceID is the device whose access token set the pusher; the pusher is
	// deleted with the device.
	DeviceID          string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	// Data is the data object as the client gave it (url included).
	Data json.RawMessage
	// PushKeyTS is when the pusher was last set (ms since the epoch).
	PushKeyTS int64
}

// SetPusher creates or replaces the user's pusher with p's app ID and pushkey.
// Unless appendPusher is set, other users' pushers with the same app ID and
// pushkey are removed ("the homeserver must remove any other pushers with the
// same App ID and pushkey for different users"); it returns the localparts of
// the users who lost one.
func (s *Store) SetPusher(ctx context.Context, p Pusher, appendPusher bool) ([]string, error) {
	if p.PushKeyTS == 0 {
		p.PushKeyTS = time.Now().UnixMilli()
	}
	var removed []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		removed = removed[:0]
		if !appendPusher {
			rows, err := tx.Query(ctx, `SELECT DISTINCT localpart FROM pushers WHERE app_id = $1 AND pushkey = $2 AND localpart <> $3`, p.AppID, p.PushKey, p.Localpart)
			if err != nil {
				return fmt.Errorf("finding other users' pushers: %w", err)
			}
			for rows.Next() {
				var lp string
				if err := rows.Scan(&lp); err != nil {
					rows.Close()
					return fmt.Errorf("finding other users' pushers: %w", err)
				}
				removed = append(removed, lp)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("finding other users' pushers: %w", err)
			}
			if len(removed) > 0 {
				if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND localpart <> $3`, p.AppID, p.PushKey, p.Localpart); err != nil {
					return fmt.Errorf("removing other users' pushers: %w", err)
				}
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO pushers (localpart, app_id, pushkey, device_id, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (localpart, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
				app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
				profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data, pushkey_ts = excluded.pushkey_ts`,
			p.Localpart, p.AppID, p.PushKey, p.DeviceID, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.PushKeyTS)
		if err != nil {
			return fmt.Errorf("storing pusher of %s: %w", p.Localpart, err)
		}
		return nil
	})
	return removed, err
}

// DeletePusher removes the user's pusher with that app ID and pushkey; it
// reports whether there was one.
func (s *Store) DeletePusher(ctx context.Context, localpart, appID, pushKey string) (bool, error) {
	res, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE localpart = $1 AND app_id = $2 AND pushkey = $3`, localpart, appID, pushKey)
	if err != nil {
		return false, fmt.Errorf("deleting pusher of %s: %w", localpart, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Pushers lists the user's pushers, oldest first.
func (s *Store) Pushers(ctx context.Context, localpart string) ([]Pusher, error) {
	rows, err := s.db.Query(ctx, `SELECT app_id, pushkey, device_id, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts
		FROM pushers WHERE localpart = $1 ORDER BY pushkey_ts, app_id, pushkey`, localpart)
	if err != nil {
		return nil, fmt.Errorf("listing pushers of %s: %w", localpart, err)
	}
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		p := Pusher{Localpart: localpart}
		var data string
		if err := rows.Scan(&p.AppID, &p.PushKey, &p.DeviceID, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.PushKeyTS); err != nil {
			return nil, fmt.Errorf("listing pushers of %s: %w", localpart, err)
		}
		p.Data = json.RawMessage(data)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing pushers of %s: %w", localpart, err)
	}
	return out, nil
}

// UsersWithPushers lists the localparts that have at least one pusher.
func (s *Store) UsersWithPushers(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT localpart FROM pushers`)
	if err != nil {
		return nil, fmt.Errorf("listing users with pushers: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var lp string
		if err := rows.Scan(&lp); err != nil {
			return nil, fmt.Errorf("listing users with pushers: %w", err)
		}
		out = append(out, lp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing users with pushers: %w", err)
	}
	return out, nil
}
