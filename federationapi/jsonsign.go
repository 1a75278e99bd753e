package federationapi

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"hearth/config"
	"hearth/roomserver/events"
)

// signJSON returns obj (a JSON object) with a signature by serverName's key added
// to its signatures (Appendices, "Signing JSON": the canonical JSON of the object
// without signatures and unsigned is signed).
func signJSON(obj []byte, serverName string, key *config.SigningKey) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("signing JSON: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("signing JSON: not an object")
	}
	sigsRaw, hadSigs := m["signatures"]
	unsigned, hadUnsigned := m["unsigned"]
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("signing JSON: %w", err)
	}
	canon, err := events.CanonicalJSON(b)
	if err != nil {
		return nil, fmt.Errorf("signing JSON: %w", err)
	}
	sigs := map[string]map[string]string{}
	if hadSigs {
		if err := json.Unmarshal(sigsRaw, &sigs); err != nil {
			return nil, fmt.Errorf("signing JSON: bad signatures: %w", err)
		}
		if sigs == nil {
			sigs = map[string]map[string]string{}
		}
	}
	if sigs[serverName] == nil {
		sigs[serverName] = map[string]string{}
	}
	sigs[serverName][key.ID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(key.PrivateKey, canon))
	if m["signatures"], err = json.Marshal(sigs); err != nil {
		return nil, err
	}
	if hadUnsigned {
		m["unsigned"] = unsigned
	}
	return json.Marshal(m)
}

// withoutForeignSignatures returns obj with only serverName's signatures kept.
func withoutForeignSignatures(obj []byte, serverName string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	var sigs map[string]json.RawMessage
	if raw, ok := m["signatures"]; ok {
		if err := json.Unmarshal(raw, &sigs); err != nil {
			return nil, fmt.Errorf("bad signatures: %w", err)
		}
	}
	if len(sigs) <= 1 {
		if _, only := sigs[serverName]; only || len(sigs) == 0 {
			return obj, nil
		}
	}
	keep := map[string]json.RawMessage{}
	if own, ok := sigs[serverName]; ok {
		keep[serverName] = own
	}
	var err error
	if m["signatures"], err = json.Marshal(keep); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}
