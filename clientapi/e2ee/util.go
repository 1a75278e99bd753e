package e2ee

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
)

// ErrInvalidSignature is M_INVALID_SIGNATURE (400).
func errInvalidSignature(format string, args ...any) *httputil.Error {
	return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_INVALID_SIGNATURE", Message: fmt.Sprintf(format, args...)}
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// placeholders returns "$from,$from+1,…" for n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	b.Grow(n * 4)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

// queryChunk bounds the parameters of one IN (…) list.
const queryChunk = 400

// canonical returns the canonical JSON form of an object (Appendices, "Canonical
// JSON"), or M_BAD_JSON.
func canonical(b []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, httputil.BadJSON("Invalid JSON")
		}
	}()
	out, err = canonicaljson.CanonicalJSON(b)
	if err != nil {
		return nil, httputil.BadJSON("Invalid JSON: %v", err)
	}
	return out, nil
}

// verifySigned checks the signature of userID's key "ed25519:keyName" (public
// key pub) on the signed JSON object obj (Appendices, "Checking for a
// signature"). A missing or bad signature reports false.
func verifySigned(obj []byte, userID id.UserID, keyName, pub string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	ok, err := signatures.VerifySignatureJSON(json.RawMessage(obj), userID, keyName, id.Ed25519(pub))
	return err == nil && ok
}

// withoutSignatures returns the canonical form of obj without its signatures
// and unsigned properties: what a signature covers, for comparing two versions
// of a signed object.
func withoutSignatures(obj []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, httputil.BadJSON("Expected a JSON object")
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return canonical(b)
}

// signaturesOf decodes an object's signatures property.
func signaturesOf(obj []byte) (map[string]map[string]string, error) {
	var v struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(obj, &v); err != nil {
		return nil, httputil.BadJSON("signatures must map user IDs to key IDs to strings")
	}
	return v.Signatures, nil
}

// isObject reports whether raw is a JSON object.
func isObject(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// sig is one signature to merge into a signed object.
type sig struct {
	user, keyID, signature string
}

// mergeSignatures adds sigs to obj's signatures and, when displayName is
// non-nil, sets unsigned.device_display_name. obj is a stored, valid object.
func mergeSignatures(obj []byte, sigs []sig, displayName *string) (json.RawMessage, error) {
	if len(sigs) == 0 && displayName == nil {
		return obj, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("decoding stored key: %w", err)
	}
	if len(sigs) > 0 {
		all := map[string]map[string]string{}
		if raw, ok := m["signatures"]; ok {
			_ = json.Unmarshal(raw, &all)
		}
		for _, s := range sigs {
			if all[s.user] == nil {
				all[s.user] = map[string]string{}
			}
			all[s.user][s.keyID] = s.signature
		}
		b, err := json.Marshal(all)
		if err != nil {
			return nil, err
		}
		m["signatures"] = b
	}
	if displayName != nil {
		b, err := json.Marshal(map[string]string{"device_display_name": *displayName})
		if err != nil {
			return nil, err
		}
		m["unsigned"] = b
	}
	return json.Marshal(m)
}
