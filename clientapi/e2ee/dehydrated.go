package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/storage"
)

// DehydratedDevice is a user's dehydrated device (MSC3814): a device with keys
// and an inbox but no access token, whose private state (device_data) is
// encrypted by the client.
type DehydratedDevice struct {
	DeviceID   id.DeviceID     `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

// maxDeviceIDLen bounds a dehydrated device's ID (a curve25519 key is 43).
const maxDeviceIDLen = 255

// PutDehydratedDevice makes deviceID the user's dehydrated device, replacing
// (and deleting) any previous one, with its keys uploaded in the same step.
// device_keys are required and must be the device's own, as for /keys/upload.
// A device ID already used by a regular device is M_INVALID_PARAM.
func (s *Service) PutDehydratedDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, data json.RawMessage, displayName *string, keys *UploadRequest) error {
	if deviceID == "" {
		return httputil.MissingParam("Missing device_id")
	}
	if len(deviceID) > maxDeviceIDLen {
		return httputil.InvalidParam("device_id is too long")
	}
	if !isObject(data) {
		return httputil.BadJSON("device_data must be an object")
	}
	if len(keys.DeviceKeys) == 0 || string(keys.DeviceKeys) == "null" {
		return httputil.MissingParam("A dehydrated device needs device_keys")
	}
	v, err := validateUpload(userID, deviceID, keys)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		var taken int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM devices WHERE localpart = $1 AND device_id = $2`, localpart(userID), string(deviceID)).Scan(&taken); err != nil {
			return fmt.Errorf("checking device ID: %w", err)
		}
		if taken > 0 {
			return httputil.InvalidParam("Device ID %s is in use", deviceID)
		}
		var old string
		err := tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, string(userID)).Scan(&old)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("reading dehydrated device: %w", err)
		}
		if old != "" {
			had, err := deleteDeviceData(ctx, tx, userID, id.DeviceID(old))
			if err != nil {
				return err
			}
			if had && old != string(deviceID) {
				if err := n.deviceListChanged(ctx, tx, userID, []id.DeviceID{id.DeviceID(old)}, true); err != nil {
					return err
				}
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data, display_name, created_ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data,
				display_name = excluded.display_name, created_ts = excluded.created_ts`,
			string(userID), string(deviceID), string(data), displayName, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("storing dehydrated device: %w", err)
		}
		return s.storeKeys(ctx, tx, n, userID, deviceID, v)
	})
}

// GetDehydratedDevice returns the user's dehydrated device, or M_NOT_FOUND.
func (s *Service) GetDehydratedDevice(ctx context.Context, userID id.UserID) (*DehydratedDevice, error) {
	var d, data string
	err := s.db.QueryRow(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, string(userID)).Scan(&d, &data)
	if isNoRows(err) {
		return nil, httputil.NotFound("No dehydrated device available")
	}
	if err != nil {
		return nil, fmt.Errorf("reading dehydrated device: %w", err)
	}
	return &DehydratedDevice{DeviceID: id.DeviceID(d), DeviceData: json.RawMessage(data)}, nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device with its keys and
// messages, returning its ID, or M_NOT_FOUND.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, userID id.UserID) (id.DeviceID, error) {
	var dev string
	err := s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		err := tx.QueryRow(ctx, `DELETE FROM dehydrated_devices WHERE user_id = $1 RETURNING device_id`, string(userID)).Scan(&dev)
		if isNoRows(err) {
			return httputil.NotFound("No dehydrated device available")
		}
		if err != nil {
			return fmt.Errorf("deleting dehydrated device: %w", err)
		}
		had, err := deleteDeviceData(ctx, tx, userID, id.DeviceID(dev))
		if err != nil || !had {
			return err
		}
		return n.deviceListChanged(ctx, tx, userID, []id.DeviceID{id.DeviceID(dev)}, true)
	})
	return id.DeviceID(dev), err
}

// DehydratedDeviceEvents pages through the to-device messages waiting for the
// user's dehydrated device deviceID, after the position in nextBatch ("" for the
// start). Unlike /sync it deletes nothing (MSC3814): a rehydration that stops
// half-way can be started again. The last page is empty and returns its own
// token. Another device ID than the dehydrated one is M_FORBIDDEN.
func (s *Service) DehydratedDeviceEvents(ctx context.Context, userID id.UserID, deviceID id.DeviceID, nextBatch string) ([]json.RawMessage, string, error) {
	var cur string
	err := s.db.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, string(userID)).Scan(&cur)
	if err != nil && !isNoRows(err) {
		return nil, "", fmt.Errorf("reading dehydrated device: %w", err)
	}
	if cur == "" || cur != string(deviceID) {
		return nil, "", httputil.Forbidden("%s is not your dehydrated device", deviceID)
	}
	var after int64
	if nextBatch != "" {
		after, err = strconv.ParseInt(nextBatch, 10, 64)
		if err != nil || after < 0 {
			return nil, "", httputil.InvalidParam("Invalid next_batch")
		}
	}
	evs, last, _, err := s.toDeviceBatch(ctx, userID, deviceID, after, s.Position(), DefaultToDeviceLimit)
	if err != nil {
		return nil, "", err
	}
	if evs == nil {
		evs = []json.RawMessage{}
	}
	return evs, strconv.FormatInt(last, 10), nil
}
