package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/storage"
)

// UploadRequest is the body of /keys/upload (and the key part of a dehydrated
// device upload).
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// validUpload is an UploadRequest after validation, every key in canonical form.
type validUpload struct {
	deviceKeys []byte // nil when absent
	ed25519    string
	otks       []keyEntry
	fallbacks  []keyEntry
}

type keyEntry struct {
	algorithm, keyID string
	json             []byte
}

// maxKeysPerUpload bounds the one-time keys of one upload.
const maxKeysPerUpload = 10_000

// validateUpload checks an upload for userID's device deviceID: the device keys
// must be that device's, and a signature by its own ed25519 key, when there is
// one, must be valid (Client-Server API, "Uploading keys"); one-time and
// fallback keys must be "<algorithm>:<key_id>" mapped to a string or an object.
func validateUpload(userID id.UserID, deviceID id.DeviceID, req *UploadRequest) (*validUpload, error) {
	v := &validUpload{}
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		dk, ed, err := validateDeviceKeys(userID, deviceID, req.DeviceKeys)
		if err != nil {
			return nil, err
		}
		v.deviceKeys, v.ed25519 = dk, ed
	}
	if len(req.OneTimeKeys) > maxKeysPerUpload {
		return nil, httputil.InvalidParam("At most %d one-time keys can be uploaded at once", maxKeysPerUpload)
	}
	var err error
	if v.otks, err = validateKeyMap("one_time_keys", req.OneTimeKeys); err != nil {
		return nil, err
	}
	if v.fallbacks, err = validateKeyMap("fallback_keys", req.FallbackKeys); err != nil {
		return nil, err
	}
	for i := 1; i < len(v.fallbacks); i++ {
		if v.fallbacks[i].algorithm == v.fallbacks[i-1].algorithm {
			return nil, httputil.InvalidParam("fallback_keys: at most one key per algorithm")
		}
	}
	return v, nil
}

// deviceKeysFields are the parts of a DeviceKeys object the server checks.
type deviceKeysFields struct {
	UserID     *string                      `json:"user_id"`
	DeviceID   *string                      `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

func validateDeviceKeys(userID id.UserID, deviceID id.DeviceID, raw json.RawMessage) ([]byte, string, error) {
	if !isObject(raw) {
		return nil, "", httputil.BadJSON("device_keys must be an object")
	}
	var f deviceKeysFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, "", httputil.BadJSON("device_keys: %v", err)
	}
	switch {
	case f.UserID == nil || f.DeviceID == nil || f.Algorithms == nil || f.Keys == nil || f.Signatures == nil:
		return nil, "", httputil.BadJSON("device_keys needs user_id, device_id, algorithms, keys and signatures")
	case *f.UserID != string(userID):
		return nil, "", httputil.InvalidParam("device_keys.user_id does not match the authenticated user")
	case *f.DeviceID != string(deviceID):
		return nil, "", httputil.InvalidParam("device_keys.device_id does not match the authenticated device")
	}
	ed := f.Keys["ed25519:"+string(deviceID)]
	if ed == "" {
		return nil, "", httputil.InvalidParam("device_keys.keys has no ed25519:%s key", deviceID)
	}
	// A self-signature, if there is one, must verify. One may be missing: the
	// spec asks clients, not servers, to check it when they download keys
	// ("Downloading keys"), and Synapse stores keys uploaded without it, which
	// clients and test suites rely on. A wrong one is refused: it can only
	// come from a broken client, and would make every peer distrust the device.
	if _, signed := f.Signatures[string(userID)]["ed25519:"+string(deviceID)]; signed && !verifySigned(raw, userID, string(deviceID), ed) {
		return nil, "", errInvalidSignature("device_keys has an invalid signature by its device's ed25519 key")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", httputil.BadJSON("device_keys must be an object")
	}
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, "", httputil.BadJSON("device_keys: %v", err)
	}
	c, err := canonical(b)
	return c, ed, err
}

// validateKeyMap validates one_time_keys or fallback_keys, sorted by key ID.
func validateKeyMap(field string, keys map[string]json.RawMessage) ([]keyEntry, error) {
	out := make([]keyEntry, 0, len(keys))
	for name, raw := range keys {
		alg, keyID, ok := strings.Cut(name, ":")
		if !ok || alg == "" || keyID == "" {
			return nil, httputil.InvalidParam("%s: key %q is not <algorithm>:<key_id>", field, name)
		}
		t := strings.TrimSpace(string(raw))
		if t == "" || (t[0] != '{' && t[0] != '"') {
			return nil, httputil.BadJSON("%s: key %q must be a string or an object", field, name)
		}
		c, err := canonical(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, keyEntry{algorithm: alg, keyID: keyID, json: c})
	}
	slices.SortFunc(out, func(a, b keyEntry) int {
		if c := strings.Compare(a.algorithm, b.algorithm); c != 0 {
			return c
		}
		return strings.Compare(a.keyID, b.keyID)
	})
	return out, nil
}

// UploadKeys stores a device's keys and returns its unclaimed one-time key counts
// by algorithm (POST /keys/upload). Re-uploading identical device keys changes
// nothing; new or different ones are a device-list change.
func (s *Service) UploadKeys(ctx context.Context, userID id.UserID, deviceID id.DeviceID, req *UploadRequest) (map[string]int, error) {
	v, err := validateUpload(userID, deviceID, req)
	if err != nil {
		return nil, err
	}
	err = s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		return s.storeKeys(ctx, tx, n, userID, deviceID, v)
	})
	if err != nil {
		return nil, err
	}
	return s.OneTimeKeyCounts(ctx, userID, deviceID)
}

// storeKeys writes a validated upload inside tx.
func (s *Service) storeKeys(ctx context.Context, tx *storage.Tx, n *txNotes, userID id.UserID, deviceID id.DeviceID, v *validUpload) error {
	u, d := string(userID), string(deviceID)
	if v.deviceKeys != nil {
		var old string
		err := tx.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, u, d).Scan(&old)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("reading device keys: %w", err)
		}
		if old != string(v.deviceKeys) {
			if _, err := tx.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json, ed25519) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ed25519 = excluded.ed25519`,
				u, d, string(v.deviceKeys), v.ed25519); err != nil {
				return fmt.Errorf("storing device keys: %w", err)
			}
			if err := n.deviceListChanged(ctx, tx, userID, []id.DeviceID{deviceID}, false); err != nil {
				return err
			}
		}
	}
	if len(v.otks) > 0 {
		ins, err := tx.Prepare(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("preparing one-time key insert: %w", err)
		}
		defer ins.Close()
		for _, k := range v.otks {
			res, err := ins.ExecContext(ctx, u, d, k.algorithm, k.keyID, string(k.json))
			if err != nil {
				return fmt.Errorf("storing one-time key: %w", err)
			}
			if rows, _ := res.RowsAffected(); rows > 0 {
				continue
			}
			// The key ID is taken: a repeated upload of the same key is fine,
			// a different key under the same ID is not (it may have been
			// claimed already, and a sender would use the wrong key).
			var old string
			err = tx.QueryRow(ctx, `SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				u, d, k.algorithm, k.keyID).Scan(&old)
			if err == nil && old != string(k.json) {
				return httputil.InvalidParam("One-time key %s:%s already exists with different content", k.algorithm, k.keyID)
			}
			if err != nil && !isNoRows(err) {
				return fmt.Errorf("reading one-time key: %w", err)
			}
		}
	}
	for _, k := range v.fallbacks {
		var oldID, oldJSON string
		err := tx.QueryRow(ctx, `SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			u, d, k.algorithm).Scan(&oldID, &oldJSON)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("reading fallback key: %w", err)
		}
		if err == nil && oldID == k.keyID && oldJSON == string(k.json) {
			continue // the same key again keeps its used flag
		}
		if _, err := tx.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE`,
			u, d, k.algorithm, k.keyID, string(k.json)); err != nil {
			return fmt.Errorf("storing fallback key: %w", err)
		}
	}
	return nil
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		string(userID), string(deviceID))
	if err != nil {
		return nil, fmt.Errorf("counting one-time keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms for which the device has a fallback
// key that no claim has returned yet. It is never nil.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID id.UserID, deviceID id.DeviceID) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`,
		string(userID), string(deviceID))
	if err != nil {
		return nil, fmt.Errorf("listing fallback keys: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, err
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// QueryResult is the answer to a key query for local users.
type QueryResult struct {
	DeviceKeys      map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
	MasterKeys      map[id.UserID]json.RawMessage                 `json:"master_keys,omitempty"`
	SelfSigningKeys map[id.UserID]json.RawMessage                 `json:"self_signing_keys,omitempty"`
	UserSigningKeys map[id.UserID]json.RawMessage                 `json:"user_signing_keys,omitempty"`
}

// NewQueryResult is an empty QueryResult with its maps made.
func NewQueryResult() *QueryResult {
	return &QueryResult{
		DeviceKeys:      map[id.UserID]map[id.DeviceID]json.RawMessage{},
		MasterKeys:      map[id.UserID]json.RawMessage{},
		SelfSigningKeys: map[id.UserID]json.RawMessage{},
		UserSigningKeys: map[id.UserID]json.RawMessage{},
	}
}

// QueryLocalKeys returns the device keys and cross-signing keys of the local users
// in req (a user mapped to the devices wanted, or to none for all of them), as
// requester may see them (Client-Server API, "Key and signature security"):
// cross-signing signatures made by the key's owner or by requester, and the
// user-signing key only of requester. requester is "" for a remote server
// asking, which sees only the owners' signatures. Remote users in req are
// ignored; unknown users and devices are left out.
func (s *Service) QueryLocalKeys(ctx context.Context, requester id.UserID, req map[id.UserID][]id.DeviceID) (*QueryResult, error) {
	res := NewQueryResult()
	users := make([]id.UserID, 0, len(req))
	for u := range req {
		if s.IsLocal(u) {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	for len(users) > 0 {
		n := min(len(users), queryChunk)
		if err := s.queryChunk(ctx, requester, users[:n], req, res); err != nil {
			return nil, err
		}
		users = users[n:]
	}
	return res, nil
}

func (s *Service) queryChunk(ctx context.Context, requester id.UserID, users []id.UserID, req map[id.UserID][]id.DeviceID, res *QueryResult) error {
	args := make([]any, len(users))
	lps := make([]any, len(users))
	for i, u := range users {
		args[i] = string(u)
		lps[i] = localpart(u)
	}
	in := placeholders(1, len(users))

	// Signatures visible to requester: the owner's own, and requester's.
	sigs := map[[2]string][]sig{}
	rows, err := s.db.Query(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures
		WHERE target_user_id IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("reading key signatures: %w", err)
	}
	for rows.Next() {
		var tu, tk string
		var sg sig
		if err := rows.Scan(&tu, &tk, &sg.user, &sg.keyID, &sg.signature); err != nil {
			rows.Close()
			return err
		}
		if sg.user == tu || (requester != "" && sg.user == string(requester)) {
			sigs[[2]string{tu, tk}] = append(sigs[[2]string{tu, tk}], sg)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	names := map[[2]string]string{}
	rows, err = s.db.Query(ctx, `SELECT localpart, device_id, display_name FROM devices WHERE display_name IS NOT NULL AND localpart IN (`+in+`)`, lps...)
	if err != nil {
		return fmt.Errorf("reading device names: %w", err)
	}
	for rows.Next() {
		var lp, dev, name string
		if err := rows.Scan(&lp, &dev, &name); err != nil {
			rows.Close()
			return err
		}
		names[[2]string{lp, dev}] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = s.db.Query(ctx, `SELECT user_id, device_id, display_name FROM dehydrated_devices WHERE display_name IS NOT NULL AND user_id IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("reading dehydrated device names: %w", err)
	}
	for rows.Next() {
		var u, dev, name string
		if err := rows.Scan(&u, &dev, &name); err != nil {
			rows.Close()
			return err
		}
		names[[2]string{localpart(id.UserID(u)), dev}] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = s.db.Query(ctx, `SELECT user_id, device_id, key_json FROM device_keys WHERE user_id IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("reading device keys: %w", err)
	}
	type dk struct{ user, dev, json string }
	var found []dk
	for rows.Next() {
		var k dk
		if err := rows.Scan(&k.user, &k.dev, &k.json); err != nil {
			rows.Close()
			return err
		}
		found = append(found, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, u := range users {
		res.DeviceKeys[u] = map[id.DeviceID]json.RawMessage{}
	}
	for _, k := range found {
		uid := id.UserID(k.user)
		if want := req[uid]; len(want) > 0 && !slices.Contains(want, id.DeviceID(k.dev)) {
			continue
		}
		var dn *string
		if name, ok := names[[2]string{localpart(uid), k.dev}]; ok {
			dn = &name
		}
		obj, err := mergeSignatures([]byte(k.json), sigs[[2]string{k.user, k.dev}], dn)
		if err != nil {
			return err
		}
		res.DeviceKeys[uid][id.DeviceID(k.dev)] = obj
	}

	rows, err = s.db.Query(ctx, `SELECT user_id, key_type, public_key, key_json FROM cross_signing_keys WHERE user_id IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("reading cross-signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, typ, pub, kj string
		if err := rows.Scan(&u, &typ, &pub, &kj); err != nil {
			return err
		}
		uid := id.UserID(u)
		switch typ {
		case keyTypeMaster:
			obj, err := mergeSignatures([]byte(kj), sigs[[2]string{u, pub}], nil)
			if err != nil {
				return err
			}
			res.MasterKeys[uid] = obj
		case keyTypeSelfSigning:
			res.SelfSigningKeys[uid] = json.RawMessage(kj)
		case keyTypeUserSigning:
			if uid == requester {
				res.UserSigningKeys[uid] = json.RawMessage(kj)
			}
		}
	}
	return rows.Err()
}

// ClaimResult maps users to devices to "<algorithm>:<key_id>" to key objects.
type ClaimResult map[id.UserID]map[id.DeviceID]map[string]json.RawMessage

// ClaimLocalKeys claims one key per requested local device and algorithm: the
// oldest unclaimed one-time key, else the device's fallback key, which is marked
// used but kept (Client-Server API, POST /keys/claim). Each one-time key is
// returned at most once, even to concurrent claims. Remote users are ignored.
func (s *Service) ClaimLocalKeys(ctx context.Context, req map[id.UserID]map[id.DeviceID]string) (ClaimResult, error) {
	out := ClaimResult{}
	claimOTK := `DELETE FROM one_time_keys WHERE otk_nid = (SELECT otk_nid FROM one_time_keys
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY otk_nid LIMIT 1) RETURNING key_id, key_json`
	if s.db.Dialect == storage.Postgres {
		// Concurrent claims skip a key another transaction is taking rather
		// than both waiting on it and one coming back empty.
		claimOTK = `DELETE FROM one_time_keys WHERE otk_nid = (SELECT otk_nid FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY otk_nid LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_id, key_json`
	}
	err := s.withTx(ctx, func(tx *storage.Tx, _ *txNotes) error {
		for user, devs := range req {
			if !s.IsLocal(user) {
				continue
			}
			for dev, alg := range devs {
				if alg == "" {
					continue
				}
				var keyID, kj string
				err := tx.QueryRow(ctx, claimOTK, string(user), string(dev), alg).Scan(&keyID, &kj)
				if isNoRows(err) {
					err = tx.QueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
						RETURNING key_id, key_json`, string(user), string(dev), alg).Scan(&keyID, &kj)
					if isNoRows(err) {
						continue
					}
				}
				if err != nil {
					return fmt.Errorf("claiming a key of %s/%s: %w", user, dev, err)
				}
				if out[user] == nil {
					out[user] = map[id.DeviceID]map[string]json.RawMessage{}
				}
				out[user][dev] = map[string]json.RawMessage{alg + ":" + keyID: json.RawMessage(kj)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteDeviceKeys removes everything E2EE about deleted devices: their keys,
// one-time and fallback keys, waiting to-device messages, transaction records
// and signatures on or by them. If any had device keys, the user's device list
// changed. It implements clientapi.DeviceKeysDeleter.
func (s *Service) DeleteDeviceKeys(ctx context.Context, userID id.UserID, deviceIDs []id.DeviceID) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		var had []id.DeviceID
		for _, d := range deviceIDs {
			ok, err := deleteDeviceData(ctx, tx, userID, d)
			if err != nil {
				return err
			}
			if ok {
				had = append(had, d)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id IN (`+placeholders(2, len(deviceIDs))+`)`,
			append([]any{string(userID)}, devArgs(deviceIDs)...)...); err != nil {
			return fmt.Errorf("deleting dehydrated device: %w", err)
		}
		if len(had) == 0 {
			return nil
		}
		return n.deviceListChanged(ctx, tx, userID, had, true)
	})
}

func devArgs(ds []id.DeviceID) []any {
	out := make([]any, len(ds))
	for i, d := range ds {
		out[i] = string(d)
	}
	return out
}

// deleteDeviceData deletes one device's E2EE data inside tx, reporting whether it
// had device keys.
func deleteDeviceData(ctx context.Context, tx *storage.Tx, userID id.UserID, deviceID id.DeviceID) (bool, error) {
	u, d := string(userID), string(deviceID)
	res, err := tx.Exec(ctx, `DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2`, u, d)
	if err != nil {
		return false, fmt.Errorf("deleting device keys of %s: %w", deviceID, err)
	}
	had, _ := res.RowsAffected()
	for _, q := range []string{
		`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
	} {
		if _, err := tx.Exec(ctx, q, u, d); err != nil {
			return false, fmt.Errorf("deleting E2EE data of device %s: %w", deviceID, err)
		}
	}
	// Signatures the device made (on its owner's master key).
	if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`, u, "ed25519:"+d); err != nil {
		return false, fmt.Errorf("deleting signatures by device %s: %w", deviceID, err)
	}
	return had > 0, nil
}

// LocalDeviceList is a local user's device list as other servers see it
// (Server-Server API, GET /user/devices/{userId}, and the m.device_list_update
// EDUs): every device, with its identity keys if it has uploaded any (and only
// its owner's signatures on them), and the master and self-signing keys.
// StreamID is the position of the user's latest device-list change. With only
// set, just those devices are listed.
func (s *Service) LocalDeviceList(ctx context.Context, userID id.UserID, only []id.DeviceID) (*DeviceList, error) {
	l := &DeviceList{UserID: userID}
	err := s.db.QueryRow(ctx, `SELECT pos FROM device_list_positions WHERE user_id = $1`, string(userID)).Scan(&l.StreamID)
	if err != nil && !isNoRows(err) {
		return nil, fmt.Errorf("reading device-list position of %s: %w", userID, err)
	}
	keys, err := s.QueryLocalKeys(ctx, "", map[id.UserID][]id.DeviceID{userID: only})
	if err != nil {
		return nil, err
	}
	l.MasterKey, l.SelfSigningKey = keys.MasterKeys[userID], keys.SelfSigningKeys[userID]
	rows, err := s.db.Query(ctx, `SELECT device_id, COALESCE(display_name, '') FROM devices WHERE localpart = $1
		UNION ALL SELECT device_id, COALESCE(display_name, '') FROM dehydrated_devices WHERE user_id = $2`, localpart(userID), string(userID))
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", userID, err)
	}
	defer rows.Close()
	seen := map[id.DeviceID]struct{}{}
	for rows.Next() {
		var d DeviceInfo
		if err := rows.Scan(&d.DeviceID, &d.DisplayName); err != nil {
			return nil, err
		}
		if _, dup := seen[d.DeviceID]; dup || (len(only) > 0 && !slices.Contains(only, d.DeviceID)) {
			continue
		}
		seen[d.DeviceID] = struct{}{}
		d.Keys = keys.DeviceKeys[userID][d.DeviceID]
		l.Devices = append(l.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Keys of a device whose row is gone (being deleted) are still listed
	// until its deletion is announced.
	for dev, k := range keys.DeviceKeys[userID] {
		if _, ok := seen[dev]; !ok {
			l.Devices = append(l.Devices, DeviceInfo{DeviceID: dev, Keys: k})
		}
	}
	slices.SortFunc(l.Devices, func(a, b DeviceInfo) int { return strings.Compare(string(a.DeviceID), string(b.DeviceID)) })
	return l, nil
}

// DeviceChanged records that a device's public information (its display name)
// changed: other users, here and on other servers, see the user's device list
// change (Server-Server API, "Device Management": updates are sent for changes
// in device information such as the human-readable name).
func (s *Service) DeviceChanged(ctx context.Context, userID id.UserID, deviceID id.DeviceID) error {
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		return n.deviceListChanged(ctx, tx, userID, []id.DeviceID{deviceID}, false)
	})
}

// RemoteDeviceListChanged records that a remote user's devices or cross-signing
// keys changed (the federation m.device_list_update and m.signing_key_update
// EDUs), so that local users sharing a room with them see them in
// device_lists.changed and query their keys again.
func (s *Service) RemoteDeviceListChanged(ctx context.Context, userID id.UserID) error {
	if s.IsLocal(userID) {
		return fmt.Errorf("%s is a local user", userID)
	}
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		return n.deviceListChanged(ctx, tx, userID, nil, false)
	})
}
