package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/id"
)

// DefaultToDeviceLimit is how many to-device messages one /sync returns.
const DefaultToDeviceLimit = 100

// SyncRequest asks for the E2EE parts of one /sync response of a device.
type SyncRequest struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	// Since is the E2EE position of the since token (0 for an initial sync).
	// To-device messages at or below it were received: they are deleted now.
	Since int64
	// Upto is the E2EE position the response is made to: Position() read before
	// the rest of the sync was assembled.
	Upto int64
	// RoomSince and RoomUpto are the room-stream positions of the since token
	// and of the response; membership changes between them feed device_lists.
	RoomSince, RoomUpto int64
	// Initial is set for a sync without since: device_lists is then omitted.
	Initial bool
	// ToDeviceLimit caps the to-device messages (DefaultToDeviceLimit if 0).
	ToDeviceLimit int
}

// SyncResult holds the E2EE parts of a /sync response.
type SyncResult struct {
	// ToDevice are the to_device events, oldest first.
	ToDevice []json.RawMessage
	// Next is the E2EE position for next_batch: Upto, or lower when ToDevice
	// was cut at the limit. Device-list changes are reported up to Next too,
	// so the next sync continues exactly where this one stopped.
	Next int64
	// DeviceListsChanged and DeviceListsLeft are device_lists.changed/left.
	DeviceListsChanged, DeviceListsLeft []id.UserID
	// OneTimeKeysCount is device_one_time_keys_count.
	OneTimeKeysCount map[string]int
	// UnusedFallbackKeyTypes is device_unused_fallback_key_types (never nil).
	UnusedFallbackKeyTypes []string
}

// HasUpdates reports whether the result holds anything a long-polling /sync
// should return for: to-device messages or device-list changes. Key counts are
// always sent but are no reason to wake up.
func (r *SyncResult) HasUpdates() bool {
	return len(r.ToDevice) > 0 || len(r.DeviceListsChanged) > 0 || len(r.DeviceListsLeft) > 0
}

// Sync assembles the E2EE parts of a /sync response. It first deletes the
// to-device messages the since token acknowledges, so that each message is
// delivered until a later sync shows it arrived, and never after. An idle sync
// costs two reads: the bounds of the device's inbox, and its key counts.
func (s *Service) Sync(ctx context.Context, req SyncRequest) (*SyncResult, error) {
	limit := req.ToDeviceLimit
	if limit <= 0 {
		limit = DefaultToDeviceLimit
	}
	res := &SyncResult{Next: max(req.Upto, req.Since)}
	lo, hi, err := s.inboxBounds(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return nil, err
	}
	if lo > 0 && lo <= req.Since {
		if err := s.ackToDevice(ctx, req.UserID, req.DeviceID, req.Since); err != nil {
			return nil, err
		}
	}
	if hi > req.Since && req.Upto > req.Since {
		var more bool
		var last int64
		res.ToDevice, last, more, err = s.toDeviceBatch(ctx, req.UserID, req.DeviceID, req.Since, req.Upto, limit)
		if err != nil {
			return nil, err
		}
		if more {
			res.Next = last
		}
	}
	if !req.Initial && (res.Next > req.Since || req.RoomUpto > req.RoomSince) {
		res.DeviceListsChanged, res.DeviceListsLeft, err = s.DeviceListChanges(ctx, req.UserID, req.Since, res.Next, req.RoomSince, req.RoomUpto)
		if err != nil {
			return nil, err
		}
	}
	if res.OneTimeKeysCount, res.UnusedFallbackKeyTypes, err = s.keyCounts(ctx, req.UserID, req.DeviceID); err != nil {
		return nil, err
	}
	return res, nil
}

// inboxBounds returns the lowest and highest positions of the messages waiting
// for a device (0, 0 when none).
func (s *Service) inboxBounds(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (lo, hi int64, err error) {
	var l, h sql.NullInt64
	if err := s.db.QueryRow(ctx, `SELECT MIN(pos), MAX(pos) FROM to_device_messages WHERE user_id = $1 AND device_id = $2`,
		string(userID), string(deviceID)).Scan(&l, &h); err != nil {
		return 0, 0, fmt.Errorf("reading to-device inbox: %w", err)
	}
	return l.Int64, h.Int64, nil
}

// keyCounts reads, in one query, a device's unclaimed one-time key counts and
// its unused fallback key algorithms (never nil).
func (s *Service) keyCounts(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (map[string]int, []string, error) {
	rows, err := s.db.Query(ctx, `SELECT 0, algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 1, algorithm, 0 FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used`,
		string(userID), string(deviceID))
	if err != nil {
		return nil, nil, fmt.Errorf("counting keys: %w", err)
	}
	defer rows.Close()
	counts, fallbacks := map[string]int{}, []string{}
	for rows.Next() {
		var kind, n int
		var alg string
		if err := rows.Scan(&kind, &alg, &n); err != nil {
			return nil, nil, err
		}
		if kind == 0 {
			counts[alg] = n
		} else {
			fallbacks = append(fallbacks, alg)
		}
	}
	slices.Sort(fallbacks)
	return counts, fallbacks, rows.Err()
}
