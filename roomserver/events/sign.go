package events

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Signature check failures. VerifySignatures wraps one of them.
var (
	// ErrMissingSignature means a server that must sign the event has no
	// signature on it from a known, valid key.
	ErrMissingSignature = errors.New("missing signature")
	// ErrInvalidSignature means a signature from a known key does not verify.
	ErrInvalidSignature = errors.New("invalid signature")
)

const ed25519Prefix = "ed25519:"

// RequiredSigners returns the servers whose signatures an event must carry
// (Server-Server API, "Validating hashes and signatures on received events",
// and the restricted-join auth rule of room v8+):
//
//   - the server of the sender, except for an invite made from a third-party
//     invite (membership "invite" with content.third_party_invite), which the
//     spec lets another server send;
//   - for room v1/v2, the server named in the event ID, if different;
//   - for room v8+, for a join with content.join_authorised_via_users_server,
//     the server of that user.
//
// It fails if join_authorised_via_users_server is not a valid user ID.
func (e *Event) RequiredSigners() ([]string, error) {
	servers := make([]string, 0, 2)
	add := func(s string) {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	var membership string
	if e.pdu.Type == typeMember {
		membership, _ = decodeString(lookupMember(e.raw.content, "membership"))
	}
	thirdPartyInvite := membership == membershipInv && lookupMember(e.raw.content, "third_party_invite") != nil
	if !thirdPartyInvite {
		add(domainOf(string(e.pdu.Sender)))
	}
	if e.version.IsOriginBasedEventIDs() {
		add(domainOf(string(e.id)))
	}
	if e.version.RestrictedJoins && membership == membershipJoin {
		if raw := lookupMember(e.raw.content, "join_authorised_via_users_server"); raw != nil {
			user, ok := decodeString(raw)
			if !ok || !validUserID(user) {
				return nil, badJSON("join_authorised_via_users_server %s is not a valid user ID", raw)
			}
			add(domainOf(user))
		}
	}
	return servers, nil
}

// VerifySignatures checks the signatures on an event as the spec requires of
// received events (Server-Server API, "Validating hashes and signatures on
// received events"; Appendices, "Checking for a signature"). The signed bytes
// are the redacted event, so the check passes for a redacted copy too.
//
// For every server in RequiredSigners, each of its ed25519 signatures is
// looked up with getKey; unknown keys (getKey returns an empty key or an
// error) and, from room v5, keys whose validity ends before the event's
// origin_server_ts are skipped. Every remaining signature must verify, and at
// least one must remain. Signatures from servers that are not required (such
// as a policy server) are ignored.
func VerifySignatures(ev *Event, getKey pdu.GetKeyFunc) error {
	servers, err := ev.RequiredSigners()
	if err != nil {
		return fmt.Errorf("checking signatures of %s: %w", ev.id, err)
	}
	b := getBuf()
	defer putBuf(b)
	*b = appendRedactedWithType((*b)[:0], ev.version.Redaction, ev.json, ev.raw.typ, true)
	ts := time.UnixMilli(ev.pdu.OriginServerTS)
	for _, server := range servers {
		if err := verifyServerSignatures(ev, server, *b, ts, getKey); err != nil {
			return fmt.Errorf("checking signatures of %s by %s: %w", ev.id, server, err)
		}
	}
	return nil
}

func verifyServerSignatures(ev *Event, server string, msg []byte, ts time.Time, getKey pdu.GetKeyFunc) error {
	sigs := ev.pdu.Signatures[server]
	if len(sigs) == 0 {
		return fmt.Errorf("%w: the event has no signature from %s", ErrMissingSignature, server)
	}
	keyIDs := make([]id.KeyID, 0, len(sigs))
	for k := range sigs {
		keyIDs = append(keyIDs, k)
	}
	slices.Sort(keyIDs)
	verified := 0
	var skipped []error
	for _, keyID := range keyIDs {
		if !strings.HasPrefix(string(keyID), ed25519Prefix) {
			continue // an algorithm we do not understand
		}
		key, validUntil, err := getKey(server, keyID, ts)
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Errorf("key %s: %w", keyID, err))
			continue
		case key == "":
			skipped = append(skipped, fmt.Errorf("key %s is unknown", keyID))
			continue
		case ev.version.EnforceKeyValidity && validUntil.Before(ts):
			skipped = append(skipped, fmt.Errorf("key %s expired at %d, before the event", keyID, validUntil.UnixMilli()))
			continue
		}
		pub := decodeBase64(string(key))
		if len(pub) != ed25519.PublicKeySize {
			skipped = append(skipped, fmt.Errorf("key %s is malformed", keyID))
			continue
		}
		sig := decodeBase64(sigs[keyID])
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, sig) {
			return fmt.Errorf("%w: key %s", ErrInvalidSignature, keyID)
		}
		verified++
	}
	if verified == 0 {
		if len(skipped) == 0 {
			return fmt.Errorf("%w: no ed25519 signature from %s", ErrMissingSignature, server)
		}
		return fmt.Errorf("%w: no signature from %s with a known, valid key: %w", ErrMissingSignature, server, errors.Join(skipped...))
	}
	return nil
}

// checkSigningKey validates the arguments used to sign an event.
func checkSigningKey(origin string, keyID id.KeyID, key ed25519.PrivateKey) error {
	if !validServerName(origin) {
		return fmt.Errorf("signing: %q is not a valid server name", origin)
	}
	if !strings.HasPrefix(string(keyID), ed25519Prefix) || len(keyID) == len(ed25519Prefix) {
		return fmt.Errorf("signing: key ID %q is not an ed25519 key ID", keyID)
	}
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	return nil
}

// appendSignatures writes a signatures object with sorted keys.
func appendSignatures(dst []byte, sigs map[string]map[id.KeyID]string) ([]byte, error) {
	servers := make([]string, 0, len(sigs))
	for s := range sigs {
		servers = append(servers, s)
	}
	slices.Sort(servers)
	dst = append(dst, '{')
	for i, s := range servers {
		if i > 0 {
			dst = append(dst, ',')
		}
		var ok bool
		if dst, ok = appendJSONString(dst, s); !ok {
			return nil, badJSON("server name %q is not valid UTF-8", s)
		}
		dst = append(dst, ':', '{')
		keyIDs := make([]id.KeyID, 0, len(sigs[s]))
		for k := range sigs[s] {
			keyIDs = append(keyIDs, k)
		}
		slices.Sort(keyIDs)
		for j, k := range keyIDs {
			if j > 0 {
				dst = append(dst, ',')
			}
			if dst, ok = appendJSONString(dst, string(k)); !ok {
				return nil, badJSON("key ID %q is not valid UTF-8", k)
			}
			dst = append(dst, ':')
			if dst, ok = appendJSONString(dst, sigs[s][k]); !ok {
				return nil, badJSON("signature is not valid UTF-8")
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
}

// Sign returns a copy of the event with a signature by origin added, as a
// resident server does to a restricted join it authorises, or an invitee's
// server to an invite. The event ID does not change.
func (e *Event) Sign(origin string, keyID id.KeyID, key ed25519.PrivateKey) (*Event, error) {
	if err := checkSigningKey(origin, keyID, key); err != nil {
		return nil, err
	}
	b := getBuf()
	*b = appendRedactedWithType((*b)[:0], e.version.Redaction, e.json, e.raw.typ, true)
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, *b))
	putBuf(b)

	sigs := make(map[string]map[id.KeyID]string, len(e.pdu.Signatures)+1)
	for s, keys := range e.pdu.Signatures {
		sigs[s] = make(map[id.KeyID]string, len(keys)+1)
		for k, v := range keys {
			sigs[s][k] = v
		}
	}
	if sigs[origin] == nil {
		sigs[origin] = make(map[id.KeyID]string, 1)
	}
	sigs[origin][keyID] = sig
	sigJSON, err := appendSignatures(nil, sigs)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", e.id, err)
	}

	out := make([]byte, 0, len(e.json)+len(sig)+len(origin)+len(keyID)+16)
	out = append(out, '{')
	first := true
	it := newMemberIter(e.json)
	for {
		k, _, start, end, ok := it.next()
		if !ok {
			break
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		if keyIs(k, "signatures") {
			out = append(out, `"signatures":`...)
			out = append(out, sigJSON...)
			continue
		}
		out = append(out, e.json[start:end]...)
	}
	out = append(out, '}')
	if len(out) > MaxEventSize {
		return nil, fmt.Errorf("signing %s: %w", e.id, tooLarge("signed event exceeds %d bytes", MaxEventSize))
	}
	ref := e.refHash
	signed, err := eventFromCanonical(e.version, out, e.id, &ref)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", e.id, err)
	}
	return signed, nil
}
