package auth

import (
	"crypto/ed25519"
	"encoding/base64"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// thirdPartyInviteSigned applies rule 5.4.1.7 (v12 numbering): "If any
// signature in signed matches any public key in the m.room.third_party_invite
// event, allow." It is reached once eventauth has checked 5.4.1.1–5.4.1.6.
//
// eventauth gap: it reads the public keys from the m.room.member event rather
// than the m.room.third_party_invite event, expects the entries of
// public_keys to be strings (they are objects holding a public_key), and
// verifies signed.Str, which is empty because signed is an object. No
// third-party invite passes it.
func (c *check) thirdPartyInviteSigned() bool {
	signed := gjson.GetBytes(c.evt.Content, "third_party_invite.signed")
	if !signed.IsObject() {
		return false
	}
	tpi := c.find(typeThirdPartyInvite, signed.Get("token").Str)
	if tpi == nil {
		return false
	}
	var keys []ed25519.PublicKey
	addKey := func(v gjson.Result) {
		if v.Type != gjson.String {
			return
		}
		if key := decodeBase64(v.Str); len(key) == ed25519.PublicKeySize {
			keys = append(keys, key)
		}
	}
	tpiContent := gjson.ParseBytes(tpi.Content)
	addKey(tpiContent.Get("public_key"))
	tpiContent.Get("public_keys").ForEach(func(_, v gjson.Result) bool {
		addKey(v.Get("public_key"))
		return true
	})
	if len(keys) == 0 {
		return false
	}
	// The signed object is signed as described in the appendices, "Signing
	// JSON": canonical JSON without signatures and unsigned.
	message, err := sjson.Delete(signed.Raw, "signatures")
	if err != nil {
		return false
	}
	if message, err = sjson.Delete(message, "unsigned"); err != nil {
		return false
	}
	canonical := canonicaljson.CanonicalJSONAssumeValid([]byte(message))
	var valid bool
	signed.Get("signatures").ForEach(func(_, server gjson.Result) bool {
		server.ForEach(func(_, sig gjson.Result) bool {
			raw := decodeBase64(sig.Str)
			if sig.Type != gjson.String || len(raw) != ed25519.SignatureSize {
				return true
			}
			for _, key := range keys {
				if ed25519.Verify(key, canonical, raw) {
					valid = true
					return false
				}
			}
			return true
		})
		return !valid
	})
	return valid
}

// decodeBase64 decodes standard or URL-safe base64, padded or not; the spec
// asks for unpadded standard base64, but keys and signatures are accepted in
// either alphabet by other servers. It returns nil for anything else.
func decodeBase64(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.StdEncoding, base64.RawURLEncoding, base64.URLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}
