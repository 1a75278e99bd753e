package events

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"hearth/roomserver/roomversion"
)

// The "Cryptographic Test Vectors" of the spec's appendices: a fixed signing
// key (server "domain", key "ed25519:1") and the expected signatures of two
// JSON objects and the expected hashes and signatures of two events. The
// event vectors predate room versions; they follow the room v1 redaction
// algorithm (which keeps "origin").
const specSeed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

func specKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString(specSeed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func TestSpecJSONSigningVectors(t *testing.T) {
	key := specKey(t)
	tests := []struct {
		name, in, wantSig string
	}{
		{"empty object", `{}`, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"},
		{"data values", `{"one": 1, "two": "Two"}`, "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			canon, err := CanonicalJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, canon))
			if got != tt.wantSig {
				t.Errorf("signature = %s, want %s", got, tt.wantSig)
			}
		})
	}
}

func TestSpecEventSigningVectors(t *testing.T) {
	key := specKey(t)
	v1 := roomversion.MustLookup("1")
	tests := []struct {
		name string
		// in is the event as given; want* are the hash and signature the spec
		// says signing must add.
		in                string
		withHashes        string // in, canonical, with the expected hashes
		wantHash, wantSig string
	}{
		{
			name: "minimal event",
			in: `{"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
				"origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
				"content": {}, "prev_events": [], "auth_events": [], "depth": 3,
				"unsigned": {"age_ts": 1000000}}`,
			withHashes: `{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{},"type":"X","unsigned":{"age_ts":1000000}}`,
			wantHash:   "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
			wantSig:    "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
		},
		{
			name: "redactable content",
			in: `{"content": {"body": "Here is the message content"}, "event_id": "$0:domain",
				"origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
				"room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
				"unsigned": {"age_ts": 1000000}}`,
			withHashes: `{"content":{"body":"Here is the message content"},"event_id":"$0:domain","hashes":{"sha256":"onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},"origin":"domain","origin_server_ts":1000000,"room_id":"!r:domain","sender":"@u:domain","signatures":{},"type":"m.room.message","unsigned":{"age_ts":1000000}}`,
			wantHash:   "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
			wantSig:    "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			canon, err := canonicalize(nil, []byte(tt.in), numLegacy, MaxEventSize)
			if err != nil {
				t.Fatal(err)
			}
			sum := contentHash(canon)
			if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != tt.wantHash {
				t.Errorf("content hash = %s, want %s", got, tt.wantHash)
			}
			msg := appendRedacted(nil, v1.Redaction, []byte(tt.withHashes), true)
			if got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, msg)); got != tt.wantSig {
				t.Errorf("signature = %s, want %s\nsigned bytes: %s", got, tt.wantSig, msg)
			}
			// The reference hash is the SHA-256 of those same bytes.
			if ref := referenceHash(v1, []byte(tt.withHashes), lookupMember([]byte(tt.withHashes), "type")); ref != sha256.Sum256(msg) {
				t.Error("reference hash is not the hash of the signed bytes")
			}
		})
	}
}
