package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/storage"
)

// The remote device-list cache (Server-Server API, "Device Management"). Other
// servers send m.device_list_update EDUs for their users' device changes, each
// with a stream_id and the prev_id of the updates before it. While a user's
// updates arrive in order, the cache applies them; when one names a prev_id the
// cache does not have (an update was missed), the entry is marked stale and a
// "resync" fetches the whole list from GET /user/devices/{userId}. /keys/query
// answers for a remote user from the cache only when the entry is fresh and the
// requester shares a room with the user: only then does the user's server send
// us updates. Joins mark entries stale too (roomwatch.go): while nobody here
// shared a room with a user, their server sent nothing.

// maxRemoteDevices bounds the devices cached for one remote user; a longer list
// is not cached and /keys/query asks the user's server.
const maxRemoteDevices = 10_000

// maxRemoteKeyBytes bounds one cached key object.
const maxRemoteKeyBytes = 64 << 10

// DeviceInfo is one device of a user as servers exchange them (GET
// /user/devices, m.device_list_update).
type DeviceInfo struct {
	DeviceID    id.DeviceID
	DisplayName string
	// Keys is the device's DeviceKeys object, nil when it has uploaded none.
	Keys json.RawMessage
}

// DeviceList is a user's devices and public cross-signing keys as another
// server sees them (Server-Server API, GET /user/devices/{userId}).
type DeviceList struct {
	UserID id.UserID
	// StreamID is the position of the user's latest device-list update.
	StreamID       int64
	Devices        []DeviceInfo
	MasterKey      json.RawMessage
	SelfSigningKey json.RawMessage
}

// RemoteDeviceUpdate is the content of an m.device_list_update EDU.
type RemoteDeviceUpdate struct {
	UserID      id.UserID       `json:"user_id"`
	DeviceID    id.DeviceID     `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// remoteKeyObject checks a key object a remote server sent about userID (and
// deviceID, for device keys): an object naming them, of bounded size. It
// returns the canonical object without "unsigned".
func remoteKeyObject(raw json.RawMessage, userID id.UserID, deviceID id.DeviceID) ([]byte, error) {
	if len(raw) > maxRemoteKeyBytes {
		return nil, fmt.Errorf("key object of %s is too large", userID)
	}
	g := gjson.ParseBytes(raw)
	if !g.IsObject() || g.Get("user_id").Str != string(userID) || (deviceID != "" && g.Get("device_id").Str != string(deviceID)) {
		return nil, fmt.Errorf("key object does not belong to %s %s", userID, deviceID)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding key object of %s: %w", userID, err)
	}
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return canonical(b)
}

// nullable turns an empty value into SQL NULL.
func nullable[T ~string | ~[]byte](v T) any {
	if len(v) == 0 {
		return nil
	}
	return string(v)
}

// ApplyRemoteDeviceUpdate takes an m.device_list_update EDU about a remote user
// who shares a room with local users (the caller checks). The cached entry, if
// fresh and the update follows on from it, is updated, and the user's device
// list is marked changed for /sync in the same transaction, so a client told
// of the change and querying keys gets the new ones. resync reports that the
// entry is missing or stale and should be fetched again.
//
// An update with an empty prev_id is the user's server telling us its current
// list because the user joined a room with us (Hearth sends those; real changes
// always name a prev_id). It is news only if it is ahead of a fresh entry, or
// the entry is stale: with no entry at all, no local user has queried the
// user's keys here yet, and the join itself put the user in device_lists.changed.
// Marking the list changed again when such a notice arrives late would tell
// clients of a change that did not happen.
func (s *Service) ApplyRemoteDeviceUpdate(ctx context.Context, u *RemoteDeviceUpdate) (resync bool, err error) {
	if _, server, err := u.UserID.ParseAndValidateRelaxed(); err != nil || server == s.serverName {
		return false, fmt.Errorf("device list update for %q: not a remote user", u.UserID)
	}
	if u.DeviceID == "" {
		return false, fmt.Errorf("device list update for %s without a device_id", u.UserID)
	}
	var keys []byte
	if !u.Deleted && len(u.Keys) > 0 && string(u.Keys) != "null" {
		if keys, err = remoteKeyObject(u.Keys, u.UserID, u.DeviceID); err != nil {
			return false, err
		}
	}
	name := u.DisplayName
	if name == "" && !u.Deleted {
		name = gjson.GetBytes(u.Keys, "unsigned.device_display_name").Str
	}
	err = s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		var streamID int64
		var stale bool
		err := tx.QueryRow(ctx, `SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1`, string(u.UserID)).Scan(&streamID, &stale)
		notice := len(u.PrevID) == 0
		switch {
		case isNoRows(err):
			resync = true
			if notice {
				return nil
			}
			return n.deviceListChanged(ctx, tx, u.UserID, nil, false)
		case err != nil:
			return fmt.Errorf("reading cached device list of %s: %w", u.UserID, err)
		case !stale && (u.StreamID < streamID || (notice && u.StreamID == streamID)):
			return nil // already part of the cached list
		case !stale && !notice && (u.StreamID == streamID || slices.Max(u.PrevID) == streamID):
			// The update follows on from the cached list (or is another
			// device of the same update): apply it.
			changed, err := applyRemoteDevice(ctx, tx, u, keys, name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1`,
				string(u.UserID), u.StreamID, time.Now().UnixMilli()); err != nil {
				return fmt.Errorf("advancing cached device list of %s: %w", u.UserID, err)
			}
			if !changed {
				return nil
			}
			return n.deviceListChanged(ctx, tx, u.UserID, nil, false)
		}
		// An update is missing (or a notice is ahead of what we have): the
		// entry cannot be trusted until a resync, and one already under way
		// may predate this update.
		resync = true
		if err := markStale(ctx, tx, []id.UserID{u.UserID}); err != nil {
			return err
		}
		return n.deviceListChanged(ctx, tx, u.UserID, nil, false)
	})
	return resync, err
}

// applyRemoteDevice stores one device's update in the cache inside tx,
// reporting whether anything changed. A device past maxRemoteDevices makes the
// entry stale instead.
func applyRemoteDevice(ctx context.Context, tx *storage.Tx, u *RemoteDeviceUpdate, keys []byte, name string) (bool, error) {
	user, dev := string(u.UserID), string(u.DeviceID)
	if u.Deleted {
		res, err := tx.Exec(ctx, `DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2`, user, dev)
		if err != nil {
			return false, fmt.Errorf("deleting cached device of %s: %w", u.UserID, err)
		}
		n, _ := res.RowsAffected()
		return n > 0, nil
	}
	var oldKeys, oldName *string
	err := tx.QueryRow(ctx, `SELECT key_json, display_name FROM remote_devices WHERE user_id = $1 AND device_id = $2`, user, dev).Scan(&oldKeys, &oldName)
	switch {
	case isNoRows(err):
		var count int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM remote_devices WHERE user_id = $1`, user).Scan(&count); err != nil {
			return false, fmt.Errorf("counting cached devices of %s: %w", u.UserID, err)
		}
		if count >= maxRemoteDevices {
			return true, markStale(ctx, tx, []id.UserID{u.UserID})
		}
	case err != nil:
		return false, fmt.Errorf("reading cached device of %s: %w", u.UserID, err)
	default:
		if deref(oldKeys) == string(keys) && deref(oldName) == name {
			return false, nil
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO remote_devices (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, display_name = excluded.display_name`,
		user, dev, nullable(keys), nullable(name)); err != nil {
		return false, fmt.Errorf("caching device of %s: %w", u.UserID, err)
	}
	return true, nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// markStale marks the cached entries of users stale inside tx, bumping their
// generation so that resyncs already under way do not make them fresh again.
func markStale(ctx context.Context, tx *storage.Tx, users []id.UserID) error {
	for len(users) > 0 {
		k := min(len(users), queryChunk)
		args := make([]any, k)
		for i, u := range users[:k] {
			args[i] = string(u)
		}
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE, gen = gen + 1 WHERE user_id IN (`+placeholders(1, k)+`)`, args...); err != nil {
			return fmt.Errorf("marking cached device lists stale: %w", err)
		}
		users = users[k:]
	}
	return nil
}

// MarkRemoteDeviceListsStale marks the cached device lists of users stale, if
// there are any: /keys/query asks their servers again until a resync.
func (s *Service) MarkRemoteDeviceListsStale(ctx context.Context, users []id.UserID) error {
	// Most users have no entry: find those that do with a read, so that the
	// common case takes no write lock.
	var cached []id.UserID
	for rest := users; len(rest) > 0; {
		k := min(len(rest), queryChunk)
		args := make([]any, k)
		for i, u := range rest[:k] {
			args[i] = string(u)
		}
		rest = rest[k:]
		rows, err := s.db.Query(ctx, `SELECT user_id FROM remote_device_lists WHERE user_id IN (`+placeholders(1, k)+`)`, args...)
		if err != nil {
			return fmt.Errorf("finding cached device lists: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return err
			}
			cached = append(cached, id.UserID(u))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if len(cached) == 0 {
		return nil
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return markStale(ctx, tx, cached) })
}

// ApplyRemoteSigningKeyUpdate takes an m.signing_key_update EDU about a remote
// user who shares a room with local users: their cross-signing keys changed.
// A fresh cached entry takes the new keys; the user's device list is marked
// changed for /sync either way. Keys that do not name the user are an error.
func (s *Service) ApplyRemoteSigningKeyUpdate(ctx context.Context, userID id.UserID, master, selfSigning json.RawMessage) error {
	if _, server, err := userID.ParseAndValidateRelaxed(); err != nil || server == s.serverName {
		return fmt.Errorf("signing key update for %q: not a remote user", userID)
	}
	var mk, ssk []byte
	var err error
	if len(master) > 0 && string(master) != "null" {
		if mk, err = remoteKeyObject(master, userID, ""); err != nil {
			return err
		}
	}
	if len(selfSigning) > 0 && string(selfSigning) != "null" {
		if ssk, err = remoteKeyObject(selfSigning, userID, ""); err != nil {
			return err
		}
	}
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		if mk != nil {
			if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET master_key = $2 WHERE user_id = $1 AND NOT stale`, string(userID), string(mk)); err != nil {
				return fmt.Errorf("caching master key of %s: %w", userID, err)
			}
		}
		if ssk != nil {
			if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET self_signing_key = $2 WHERE user_id = $1 AND NOT stale`, string(userID), string(ssk)); err != nil {
				return fmt.Errorf("caching self-signing key of %s: %w", userID, err)
			}
		}
		return n.deviceListChanged(ctx, tx, userID, nil, false)
	})
}

// BeginRemoteResync is called before fetching a remote user's device list: it
// makes sure the user has an entry (a stale one if new) and returns its
// generation, which StoreRemoteDeviceList checks.
func (s *Service) BeginRemoteResync(ctx context.Context, userID id.UserID) (gen int64, err error) {
	if s.IsLocal(userID) {
		return 0, fmt.Errorf("%s is a local user", userID)
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, updated_ts) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING`,
			string(userID), time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("adding cached device list of %s: %w", userID, err)
		}
		return tx.QueryRow(ctx, `SELECT gen FROM remote_device_lists WHERE user_id = $1`, string(userID)).Scan(&gen)
	})
	return gen, err
}

// StoreRemoteDeviceList replaces a remote user's cached device list with one
// fetched from their server, making the entry fresh, unless the entry was
// marked stale again since BeginRemoteResync returned gen: then the list may
// predate a change, and stored is false. Devices whose keys name another user
// or device are left out; a list longer than maxRemoteDevices is refused.
func (s *Service) StoreRemoteDeviceList(ctx context.Context, l *DeviceList, gen int64) (stored bool, err error) {
	if s.IsLocal(l.UserID) {
		return false, fmt.Errorf("%s is a local user", l.UserID)
	}
	if len(l.Devices) > maxRemoteDevices {
		return false, fmt.Errorf("%s has %d devices, more than the %d cached", l.UserID, len(l.Devices), maxRemoteDevices)
	}
	type row struct {
		dev        string
		keys, name any
	}
	rows := make([]row, 0, len(l.Devices))
	seen := make(map[id.DeviceID]struct{}, len(l.Devices))
	for _, d := range l.Devices {
		if _, dup := seen[d.DeviceID]; dup || d.DeviceID == "" {
			continue
		}
		seen[d.DeviceID] = struct{}{}
		var keys []byte
		if len(d.Keys) > 0 && string(d.Keys) != "null" {
			if keys, err = remoteKeyObject(d.Keys, l.UserID, d.DeviceID); err != nil {
				continue
			}
		}
		rows = append(rows, row{dev: string(d.DeviceID), keys: nullable(keys), name: nullable(d.DisplayName)})
	}
	var mk, ssk []byte
	if len(l.MasterKey) > 0 && string(l.MasterKey) != "null" {
		mk, _ = remoteKeyObject(l.MasterKey, l.UserID, "")
	}
	if len(l.SelfSigningKey) > 0 && string(l.SelfSigningKey) != "null" {
		ssk, _ = remoteKeyObject(l.SelfSigningKey, l.UserID, "")
	}
	user := string(l.UserID)
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var cur int64
		err := tx.QueryRow(ctx, `SELECT gen FROM remote_device_lists WHERE user_id = $1`, user).Scan(&cur)
		if isNoRows(err) || (err == nil && cur != gen) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading cached device list of %s: %w", l.UserID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, user); err != nil {
			return fmt.Errorf("clearing cached devices of %s: %w", l.UserID, err)
		}
		if len(rows) > 0 {
			ins, err := tx.Prepare(ctx, `INSERT INTO remote_devices (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)`)
			if err != nil {
				return fmt.Errorf("preparing cached device insert: %w", err)
			}
			defer ins.Close()
			for _, r := range rows {
				if _, err := ins.ExecContext(ctx, user, r.dev, r.keys, r.name); err != nil {
					return fmt.Errorf("caching device of %s: %w", l.UserID, err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, stale = FALSE, master_key = $3, self_signing_key = $4, updated_ts = $5
			WHERE user_id = $1`, user, l.StreamID, nullable(mk), nullable(ssk), time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("storing cached device list of %s: %w", l.UserID, err)
		}
		stored = true
		return nil
	})
	return stored, err
}

// CachedRemoteKeys answers the part of a key query (a user mapped to the
// devices wanted, or none for all) that the cache can: remote users who share a
// room with requester and whose entries are fresh. res has a DeviceKeys entry
// for each user it answers for (possibly empty); the others must be asked of
// their servers. resync lists users who share a room with requester but whose
// entries are missing or stale: fetching their lists would let later queries
// be answered here.
func (s *Service) CachedRemoteKeys(ctx context.Context, requester id.UserID, req map[id.UserID][]id.DeviceID) (res *QueryResult, resync []id.UserID, err error) {
	res = NewQueryResult()
	if s.rooms == nil || len(req) == 0 {
		return res, nil, nil
	}
	cands := make([]id.UserID, 0, len(req))
	s.watch.mu.Lock()
	busy := s.watch.pendingRooms > 0
	for u := range req {
		if !s.IsLocal(u) && s.watch.pendingUsers[u] == 0 {
			cands = append(cands, u)
		}
	}
	s.watch.mu.Unlock()
	if busy || len(cands) == 0 {
		// A join is being looked at: entries it makes stale are not marked yet.
		return res, nil, nil
	}
	slices.Sort(cands)
	sharing, err := s.rooms.UsersSharingRoom(ctx, requester, cands)
	if err != nil {
		return nil, nil, err
	}
	for rest := sharing; len(rest) > 0; {
		k := min(len(rest), queryChunk)
		if err := s.readCached(ctx, rest[:k], req, res); err != nil {
			return nil, nil, err
		}
		rest = rest[k:]
	}
	for _, u := range sharing {
		if _, ok := res.DeviceKeys[u]; !ok {
			resync = append(resync, u)
		}
	}
	return res, resync, nil
}

// readCached reads the fresh cached entries of users into res, in one
// statement so that an entry and its devices are read together.
func (s *Service) readCached(ctx context.Context, users []id.UserID, req map[id.UserID][]id.DeviceID, res *QueryResult) error {
	args := make([]any, len(users))
	for i, u := range users {
		args[i] = string(u)
	}
	rows, err := s.db.Query(ctx, `SELECT l.user_id, l.master_key, l.self_signing_key, d.device_id, d.key_json, d.display_name
		FROM remote_device_lists l LEFT JOIN remote_devices d ON d.user_id = l.user_id
		WHERE NOT l.stale AND l.user_id IN (`+placeholders(1, len(users))+`)`, args...)
	if err != nil {
		return fmt.Errorf("reading cached device lists: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var mk, ssk, dev, keys, name *string
		if err := rows.Scan(&u, &mk, &ssk, &dev, &keys, &name); err != nil {
			return err
		}
		uid := id.UserID(u)
		devs := res.DeviceKeys[uid]
		if devs == nil {
			devs = map[id.DeviceID]json.RawMessage{}
			res.DeviceKeys[uid] = devs
			if mk != nil {
				res.MasterKeys[uid] = json.RawMessage(*mk)
			}
			if ssk != nil {
				res.SelfSigningKeys[uid] = json.RawMessage(*ssk)
			}
		}
		if dev == nil || keys == nil {
			continue
		}
		if want := req[uid]; len(want) > 0 && !slices.Contains(want, id.DeviceID(*dev)) {
			continue
		}
		devs[id.DeviceID(*dev)] = withDisplayName(*keys, name)
	}
	return rows.Err()
}

// withDisplayName returns a stored key object (canonical, so ending in '}' and
// without "unsigned") with unsigned.device_display_name set to name, if any.
// Splicing is much cheaper than decoding and encoding the object.
func withDisplayName(obj string, name *string) json.RawMessage {
	if name == nil || len(obj) < 2 || obj[len(obj)-1] != '}' {
		return json.RawMessage(obj)
	}
	n, err := json.Marshal(*name)
	if err != nil {
		return json.RawMessage(obj)
	}
	out := make([]byte, 0, len(obj)+len(n)+36)
	out = append(out, obj[:len(obj)-1]...)
	if len(obj) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"unsigned":{"device_display_name":`...)
	out = append(out, n...)
	return append(out, "}}"...)
}
