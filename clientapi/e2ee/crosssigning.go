package e2ee

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/storage"
)

// Cross-signing key types (Client-Server API, "Cross-signing").
const (
	keyTypeMaster      = "master"
	keyTypeSelfSigning = "self_signing"
	keyTypeUserSigning = "user_signing"
)

// CrossSigningUpload is the body of POST /keys/device_signing/upload, auth aside.
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

// CrossSigningKeys is a validated cross-signing upload.
type CrossSigningKeys struct {
	user id.UserID
	keys []*crossSigningKey // master first when present
}

type crossSigningKey struct {
	typ  string
	pub  string
	json []byte // canonical, without unsigned
}

// ErrCrossSigningAuthRequired is returned by StoreCrossSigningKeys when the
// upload replaces existing keys and the caller did not authenticate the user.
var ErrCrossSigningAuthRequired = errors.New("replacing cross-signing keys requires user-interactive auth")

type crossSigningFields struct {
	UserID *string           `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// parseCrossSigningKey validates one CrossSigningKey object of type typ.
func parseCrossSigningKey(userID id.UserID, typ string, raw json.RawMessage) (*crossSigningKey, error) {
	if !isObject(raw) {
		return nil, httputil.BadJSON("%s_key must be an object", typ)
	}
	var f crossSigningFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, httputil.BadJSON("%s_key: %v", typ, err)
	}
	if f.UserID == nil || *f.UserID != string(userID) {
		return nil, httputil.InvalidParam("%s_key.user_id must be the authenticated user", typ)
	}
	if !slices.Contains(f.Usage, typ) {
		return nil, httputil.InvalidParam("%s_key.usage must contain %q", typ, typ)
	}
	if len(f.Keys) != 1 {
		return nil, httputil.InvalidParam("%s_key.keys must hold exactly one key", typ)
	}
	var pub string
	for kid, v := range f.Keys {
		alg, name, _ := strings.Cut(kid, ":")
		if alg != "ed25519" || name != v {
			return nil, httputil.InvalidParam("%s_key.keys must be ed25519:<public key> mapped to the public key", typ)
		}
		if b, err := base64.RawStdEncoding.DecodeString(v); err != nil || len(b) != 32 {
			return nil, httputil.InvalidParam("%s_key holds no valid ed25519 public key", typ)
		}
		pub = v
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, httputil.BadJSON("%s_key must be an object", typ)
	}
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, httputil.BadJSON("%s_key: %v", typ, err)
	}
	c, err := canonical(b)
	if err != nil {
		return nil, err
	}
	return &crossSigningKey{typ: typ, pub: pub, json: c}, nil
}

// ValidateCrossSigningKeys checks the shape of an upload for userID. Signatures
// by the master key are checked when it is stored, against the right master.
func ValidateCrossSigningKeys(userID id.UserID, up *CrossSigningUpload) (*CrossSigningKeys, error) {
	out := &CrossSigningKeys{user: userID}
	for _, f := range []struct {
		typ string
		raw json.RawMessage
	}{{keyTypeMaster, up.MasterKey}, {keyTypeSelfSigning, up.SelfSigningKey}, {keyTypeUserSigning, up.UserSigningKey}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		k, err := parseCrossSigningKey(userID, f.typ, f.raw)
		if err != nil {
			return nil, err
		}
		out.keys = append(out.keys, k)
	}
	if len(out.keys) == 0 {
		return nil, httputil.MissingParam("No cross-signing keys given")
	}
	seen := map[string]bool{}
	for _, k := range out.keys {
		if seen[k.pub] {
			return nil, httputil.InvalidParam("Cross-signing keys must be distinct")
		}
		seen[k.pub] = true
	}
	return out, nil
}

// storedCrossSigning reads a user's cross-signing keys by type.
func storedCrossSigning(ctx context.Context, q storage.Conn, userID id.UserID) (map[string]*crossSigningKey, error) {
	rows, err := q.Query(ctx, `SELECT key_type, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("reading cross-signing keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]*crossSigningKey{}
	for rows.Next() {
		var k crossSigningKey
		var kj string
		if err := rows.Scan(&k.typ, &k.pub, &kj); err != nil {
			return nil, err
		}
		k.json = []byte(kj)
		out[k.typ] = &k
	}
	return out, rows.Err()
}

// replaces reports whether storing ks would change any stored key.
func (ks *CrossSigningKeys) replaces(stored map[string]*crossSigningKey) bool {
	for _, k := range ks.keys {
		old := stored[k.typ]
		if old == nil || !bytes.Equal(old.json, k.json) {
			return true
		}
	}
	return false
}

// CrossSigningNeedsAuth reports whether storing ks needs user-interactive auth:
// only when the user has a master key and ks is not exactly the keys already
// stored (Client-Server API, POST /keys/device_signing/upload, as of v1.11).
func (s *Service) CrossSigningNeedsAuth(ctx context.Context, ks *CrossSigningKeys) (bool, error) {
	stored, err := storedCrossSigning(ctx, s.db, ks.user)
	if err != nil {
		return false, err
	}
	return stored[keyTypeMaster] != nil && ks.replaces(stored), nil
}

// StoreCrossSigningKeys stores validated cross-signing keys. The self-signing and
// user-signing keys must be signed by the uploaded master key, or by the stored
// one when none is uploaded (M_INVALID_SIGNATURE; M_MISSING_PARAM without any
// master key). No key may equal one of the user's device IDs (M_FORBIDDEN).
// Without authed, replacing existing keys fails with ErrCrossSigningAuthRequired.
// Replaced keys lose the signatures they made and received.
func (s *Service) StoreCrossSigningKeys(ctx context.Context, ks *CrossSigningKeys, authed bool) error {
	return s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		stored, err := storedCrossSigning(ctx, tx, ks.user)
		if err != nil {
			return err
		}
		if !ks.replaces(stored) {
			return nil
		}
		if !authed && stored[keyTypeMaster] != nil {
			return ErrCrossSigningAuthRequired
		}
		master := stored[keyTypeMaster]
		if len(ks.keys) > 0 && ks.keys[0].typ == keyTypeMaster {
			master = ks.keys[0]
		}
		if master == nil {
			return httputil.MissingParam("No master signing key is available")
		}
		pubs := make([]any, 0, len(ks.keys)+1)
		pubs = append(pubs, localpart(ks.user))
		for _, k := range ks.keys {
			if k.typ != keyTypeMaster && !verifySigned(k.json, ks.user, master.pub, master.pub) {
				return errInvalidSignature("The %s key is not signed by the master signing key", k.typ)
			}
			pubs = append(pubs, k.pub)
		}
		// "Servers therefore must ensure that device IDs will not collide with
		// cross-signing public keys."
		var taken int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM devices WHERE localpart = $1 AND device_id IN (`+placeholders(2, len(pubs)-1)+`)`,
			pubs...).Scan(&taken); err != nil {
			return fmt.Errorf("checking device IDs: %w", err)
		}
		if taken > 0 {
			return httputil.Forbidden("Key ID in use")
		}
		for _, k := range ks.keys {
			if old := stored[k.typ]; old != nil && old.pub != k.pub {
				if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`,
					string(ks.user), "ed25519:"+old.pub); err != nil {
					return fmt.Errorf("deleting signatures of a replaced key: %w", err)
				}
				if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
					string(ks.user), old.pub); err != nil {
					return fmt.Errorf("deleting signatures on a replaced key: %w", err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
				string(ks.user), k.typ, k.pub, string(k.json)); err != nil {
				return fmt.Errorf("storing the %s key: %w", k.typ, err)
			}
		}
		return n.deviceListChanged(ctx, tx, ks.user, nil, false)
	})
}

// SignatureFailures maps users to key IDs to the error for that key.
type SignatureFailures map[id.UserID]map[string]*httputil.Error

func (f SignatureFailures) add(user id.UserID, keyID string, err *httputil.Error) {
	if f[user] == nil {
		f[user] = map[string]*httputil.Error{}
	}
	f[user][keyID] = err
}

// UploadSignatures validates and stores signatures requester made
// (POST /keys/signatures/upload): on their own devices by their self-signing
// key, on their own master key by their devices, and on other users' master keys
// by their user-signing key. Each signed object must be the stored key apart
// from its signatures. Per-key problems are returned as failures, not errors;
// a signature that does not verify is M_INVALID_SIGNATURE.
func (s *Service) UploadSignatures(ctx context.Context, requester id.UserID, body map[id.UserID]map[string]json.RawMessage) (SignatureFailures, error) {
	failures := SignatureFailures{}
	own, err := storedCrossSigning(ctx, s.db, requester)
	if err != nil {
		return nil, err
	}
	type newSig struct {
		targetUser id.UserID
		targetKey  string
		sig
	}
	var valid []newSig
	for target, objs := range body {
		for keyID, obj := range objs {
			sigs, ferr := s.checkSignedObject(ctx, requester, own, target, keyID, obj)
			if ferr != nil {
				failures.add(target, keyID, ferr)
				continue
			}
			for _, sg := range sigs {
				valid = append(valid, newSig{target, keyID, sg})
			}
		}
	}
	if len(valid) == 0 {
		return failures, nil
	}
	err = s.withTx(ctx, func(tx *storage.Tx, n *txNotes) error {
		for _, v := range valid {
			if _, err := tx.Exec(ctx, `INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				string(v.targetUser), v.targetKey, v.user, v.keyID, v.signature); err != nil {
				return fmt.Errorf("storing signature: %w", err)
			}
		}
		// Signatures on one's own keys show in others' device lists; those by
		// the user-signing key only in the signer's own, so the signer's list is
		// the one that changed either way.
		return n.deviceListChanged(ctx, tx, requester, nil, false)
	})
	if err != nil {
		return nil, err
	}
	return failures, nil
}

// checkSignedObject validates one signed object of /keys/signatures/upload and
// returns the signatures by requester it carries, all verified.
func (s *Service) checkSignedObject(ctx context.Context, requester id.UserID, own map[string]*crossSigningKey, target id.UserID, keyID string, obj json.RawMessage) ([]sig, *httputil.Error) {
	if !isObject(obj) {
		return nil, httputil.BadJSON("Expected a signed JSON object")
	}
	var stored []byte
	var signers map[string]string // acceptable signer key ID -> public key
	switch {
	case target == requester && own[keyTypeMaster] != nil && keyID == own[keyTypeMaster].pub:
		// The user's devices sign their own master key.
		stored = own[keyTypeMaster].json
		devs, err := s.deviceSigningKeys(ctx, requester)
		if err != nil {
			return nil, httputil.Internal("%v", err)
		}
		signers = devs
	case target == requester:
		// The self-signing key signs the user's own devices.
		var kj string
		err := s.db.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, string(target), keyID).Scan(&kj)
		if isNoRows(err) {
			return nil, httputil.NotFound("Unknown device or key %s", keyID)
		}
		if err != nil {
			return nil, httputil.Internal("reading device keys: %v", err)
		}
		stored = []byte(kj)
		if ssk := own[keyTypeSelfSigning]; ssk != nil {
			signers = map[string]string{"ed25519:" + ssk.pub: ssk.pub}
		}
	default:
		// The user-signing key signs other users' master keys.
		if !s.IsLocal(target) {
			return nil, httputil.NotFound("Keys of users on other servers are not known here")
		}
		theirs, err := storedCrossSigning(ctx, s.db, target)
		if err != nil {
			return nil, httputil.Internal("%v", err)
		}
		m := theirs[keyTypeMaster]
		if m == nil || m.pub != keyID {
			return nil, httputil.NotFound("%s has no master key %s", target, keyID)
		}
		stored = m.json
		if usk := own[keyTypeUserSigning]; usk != nil {
			signers = map[string]string{"ed25519:" + usk.pub: usk.pub}
		}
	}
	a, err := withoutSignatures(obj)
	if err != nil {
		return nil, httputil.BadJSON("Expected a signed JSON object")
	}
	b, err := withoutSignatures(stored)
	if err != nil {
		return nil, httputil.Internal("%v", err)
	}
	if !bytes.Equal(a, b) {
		return nil, httputil.InvalidParam("The signed object does not match the stored key %s", keyID)
	}
	all, herr := signaturesOf(obj)
	if herr != nil {
		return nil, httputil.BadJSON("Invalid signatures")
	}
	var out []sig
	for sk, sv := range all[string(requester)] {
		if target == requester && (sk == "ed25519:"+keyID) {
			continue // the key's own self-signature, stored with it
		}
		pub, ok := signers[sk]
		if !ok {
			return nil, errInvalidSignature("%s is not a key that may sign %s", sk, keyID)
		}
		if !verifySigned(obj, requester, strings.TrimPrefix(sk, "ed25519:"), pub) {
			return nil, errInvalidSignature("Invalid signature by %s", sk)
		}
		out = append(out, sig{user: string(requester), keyID: sk, signature: sv})
	}
	if len(out) == 0 {
		return nil, errInvalidSignature("No signature by %s to upload", requester)
	}
	return out, nil
}

// deviceSigningKeys maps "ed25519:<device>" to the ed25519 key of each of the
// user's devices with keys.
func (s *Service) deviceSigningKeys(ctx context.Context, userID id.UserID) (map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, ed25519 FROM device_keys WHERE user_id = $1`, string(userID))
	if err != nil {
		return nil, fmt.Errorf("reading device keys: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var d, k string
		if err := rows.Scan(&d, &k); err != nil {
			return nil, err
		}
		out["ed25519:"+d] = k
	}
	return out, rows.Err()
}

// Digest identifies the uploaded keys, to bind a user-interactive auth session
// to exactly this upload.
func (ks *CrossSigningKeys) Digest() string {
	h := sha256.New()
	for _, k := range ks.keys {
		h.Write([]byte(k.typ))
		h.Write([]byte{0})
		h.Write(k.json)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
