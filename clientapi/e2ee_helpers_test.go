package clientapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// keySigner is an ed25519 key pair that signs JSON objects as the spec says
// (Appendices, "Signing JSON").
type keySigner struct {
	pub  string
	priv ed25519.PrivateKey
}

func newKeySigner(t testing.TB) *keySigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &keySigner{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign adds user's signature by "ed25519:keyName" to obj and returns obj.
func (k *keySigner) sign(t testing.TB, obj map[string]any, user id.UserID, keyName string) map[string]any {
	t.Helper()
	c := map[string]any{}
	for f, v := range obj {
		if f != "signatures" && f != "unsigned" {
			c[f] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = canonicaljson.CanonicalJSON(b); err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	us, _ := sigs[string(user)].(map[string]any)
	if us == nil {
		us = map[string]any{}
	}
	us["ed25519:"+keyName] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, b))
	sigs[string(user)] = us
	obj["signatures"] = sigs
	return obj
}

// e2eDevice is a logged-in device with a signing key, speaking raw HTTP.
type e2eDevice struct {
	user   id.UserID
	device id.DeviceID
	key    *keySigner
	api    *api
}

func newE2EDevice(t testing.TB, u *user) *e2eDevice {
	return &e2eDevice{user: u.id, device: id.DeviceID(u.device), key: newKeySigner(t), api: u.api}
}

func (d *e2eDevice) deviceKeys(t testing.TB) map[string]any {
	return d.key.sign(t, map[string]any{
		"user_id":    string(d.user),
		"device_id":  string(d.device),
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"ed25519:" + string(d.device):    d.key.pub,
			"curve25519:" + string(d.device): "curve-of-" + string(d.device),
		},
	}, d.user, string(d.device))
}

func (d *e2eDevice) signedKey(t testing.TB, key string, fallback bool) map[string]any {
	obj := map[string]any{"key": key}
	if fallback {
		obj["fallback"] = true
	}
	return d.key.sign(t, obj, d.user, string(d.device))
}

// syncer follows one device's /sync stream.
type syncer struct {
	t     *testing.T
	api   *api
	since string
}

// next runs an incremental (or first) /sync without waiting and returns it.
func (s *syncer) next() resp {
	s.t.Helper()
	path := v3 + "/sync?timeout=0"
	if s.since != "" {
		path += "&since=" + url.QueryEscape(s.since)
	}
	r := s.api.do("GET", path, nil).expect(s.t, http.StatusOK, "")
	s.since = r.str("next_batch")
	return r
}

// from runs a /sync from an explicit token, leaving the stream where it was.
func (s *syncer) from(since string) resp {
	s.t.Helper()
	return s.api.do("GET", v3+"/sync?timeout=0&since="+url.QueryEscape(since), nil).expect(s.t, http.StatusOK, "")
}

// deviceListsChanged returns device_lists.changed of a sync response.
func deviceListsChanged(r resp) []string {
	var out []string
	dl, _ := r.body["device_lists"].(map[string]any)
	ch, _ := dl["changed"].([]any)
	for _, u := range ch {
		s, _ := u.(string)
		out = append(out, s)
	}
	return out
}

func toDeviceEvents(r resp) []map[string]any {
	var out []map[string]any
	td, _ := r.body["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	for _, e := range evs {
		m, _ := e.(map[string]any)
		out = append(out, m)
	}
	return out
}

// encryptedRoom has creator make an m.room.encryption room over HTTP, which the
// others join.
func encryptedRoom(t *testing.T, creator *user, others ...*user) id.RoomID {
	t.Helper()
	ctx := context.Background()
	r, err := creator.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("creating room: %v", err)
	}
	for _, o := range others {
		if _, err := o.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
			t.Fatalf("%s joining: %v", o.id, err)
		}
	}
	return r.RoomID
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
