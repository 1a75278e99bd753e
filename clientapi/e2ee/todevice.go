package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/storage"
)

// Txn identifies a client's /sendToDevice transaction: the sending device and
// its txnId.
type Txn struct {
	DeviceID id.DeviceID
	ID       string
}

// txnLifetime is how long a to-device transaction ID is remembered.
const txnLifetime = 24 * time.Hour

// AllDevices is the device ID that addresses every device of a user.
const AllDevices = "*"

// ToDeviceMessages maps users to device IDs (or "*") to message contents.
type ToDeviceMessages map[id.UserID]map[string]json.RawMessage

// SendToDevice stores to-device messages from sender for the local recipients in
// msgs (Client-Server API, "Send-to-Device messaging"); remote recipients are
// ignored. "*" addresses every device of a user, a device named explicitly gets
// its own content instead; unknown devices are skipped. With txn, the call is
// idempotent: a repeated transaction stores nothing and reports false.
func (s *Service) SendToDevice(ctx context.Context, sender id.UserID, evType string, msgs ToDeviceMessages, txn *Txn) (bool, error) {
	for _, devs := range msgs {
		for dev, content := range devs {
			if !isObject(content) {
				return false, httputil.BadJSON("The message for device %q must be an object", dev)
			}
		}
	}
	fresh := true
	err := s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		if txn != nil {
			now := time.Now().UnixMilli()
			res, err := tx.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, string(sender), string(txn.DeviceID), txn.ID, now)
			if err != nil {
				return fmt.Errorf("recording to-device transaction: %w", err)
			}
			if rows, _ := res.RowsAffected(); rows == 0 {
				fresh = false
				return nil
			}
			if _, err := tx.Exec(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3`,
				string(sender), string(txn.DeviceID), now-txnLifetime.Milliseconds()); err != nil {
				return fmt.Errorf("expiring to-device transactions: %w", err)
			}
		}
		type msg struct {
			user    id.UserID
			device  string
			content json.RawMessage
		}
		var out []msg
		users := make([]id.UserID, 0, len(msgs))
		for u := range msgs {
			if s.IsLocal(u) {
				users = append(users, u)
			}
		}
		slices.Sort(users)
		for _, u := range users {
			devs := msgs[u]
			existing, err := localDeviceIDs(ctx, tx, u)
			if err != nil {
				return err
			}
			all, hasAll := devs[AllDevices]
			for _, d := range existing {
				if c, ok := devs[d]; ok {
					out = append(out, msg{u, d, c})
				} else if hasAll {
					out = append(out, msg{u, d, all})
				}
			}
		}
		if len(out) == 0 {
			return nil
		}
		first, err := n.take(ctx, tx, len(out))
		if err != nil {
			return err
		}
		ins, err := tx.Prepare(ctx, `INSERT INTO to_device_messages (pos, user_id, device_id, sender, event_type, content) VALUES ($1, $2, $3, $4, $5, $6)`)
		if err != nil {
			return fmt.Errorf("preparing to-device insert: %w", err)
		}
		defer ins.Close()
		recipients := make([]id.UserID, 0, len(users))
		for i, m := range out {
			if _, err := ins.ExecContext(ctx, first+int64(i), string(m.user), m.device, string(sender), evType, string(m.content)); err != nil {
				return fmt.Errorf("storing to-device message: %w", err)
			}
			if len(recipients) == 0 || recipients[len(recipients)-1] != m.user {
				recipients = append(recipients, m.user)
			}
		}
		n.changes = append(n.changes, Change{Kind: ToDeviceChange, Pos: n.pos, Users: recipients})
		return nil
	})
	if err != nil {
		return false, err
	}
	return fresh, nil
}

// DeliverToDevice stores to-device messages that arrived from another server
// (the m.direct_to_device EDU) for local devices.
func (s *Service) DeliverToDevice(ctx context.Context, sender id.UserID, evType string, msgs ToDeviceMessages) error {
	_, err := s.SendToDevice(ctx, sender, evType, msgs, nil)
	return err
}

// localDeviceIDs lists a local user's devices, the dehydrated one included, in
// order.
func localDeviceIDs(ctx context.Context, q storage.Conn, userID id.UserID) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT device_id FROM devices WHERE localpart = $1
		UNION SELECT device_id FROM dehydrated_devices WHERE user_id = $2`, localpart(userID), string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return out, rows.Err()
}

// toDeviceBatch reads up to limit messages waiting for a device with positions
// in (after, upto], as /sync to_device events. last is the position of the last
// one returned (after when none); more is set when the limit cut the batch.
func (s *Service) toDeviceBatch(ctx context.Context, userID id.UserID, deviceID id.DeviceID, after, upto int64, limit int) (evs []json.RawMessage, last int64, more bool, err error) {
	last = after
	if upto <= after {
		return nil, last, false, nil
	}
	rows, err := s.db.Query(ctx, `SELECT pos, sender, event_type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND pos > $3 AND pos <= $4 ORDER BY pos LIMIT $5`,
		string(userID), string(deviceID), after, upto, limit+1)
	if err != nil {
		return nil, after, false, fmt.Errorf("reading to-device messages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pos int64
		var sender, typ, content string
		if err := rows.Scan(&pos, &sender, &typ, &content); err != nil {
			return nil, after, false, err
		}
		if len(evs) == limit {
			more = true
			break
		}
		evs = append(evs, toDeviceEvent(sender, typ, content))
		last = pos
	}
	return evs, last, more, rows.Err()
}

// toDeviceEvent renders a stored message as a to-device event.
func toDeviceEvent(sender, typ, content string) json.RawMessage {
	s, _ := json.Marshal(sender)
	t, _ := json.Marshal(typ)
	b := make([]byte, 0, len(content)+len(s)+len(t)+32)
	b = append(b, `{"content":`...)
	b = append(b, content...)
	b = append(b, `,"sender":`...)
	b = append(b, s...)
	b = append(b, `,"type":`...)
	b = append(b, t...)
	b = append(b, '}')
	return b
}

// ackToDevice deletes the messages a device has acknowledged: those at or
// below upto. Callers check first that there are any (Sync reads the inbox
// bounds), so an idle sync costs no write.
func (s *Service) ackToDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, upto int64) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3`,
		string(userID), string(deviceID), upto); err != nil {
		return fmt.Errorf("deleting acknowledged to-device messages: %w", err)
	}
	return nil
}
