package e2ee

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/storage"
	"hearth/storage/storagetest"
)

const testServer = "hs.test"

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// env is a service over a fresh database with the room engine behind it.
type env struct {
	t   testing.TB
	ctx context.Context
	db  *storage.DB
	rs  *roomserver.Roomserver
	s   *Service
}

func forEachEnv(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		key, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		rs, err := roomserver.New(ctx, db, testServer, key)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(ctx, db, testServer, rs)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, &env{t: t, ctx: ctx, db: db, rs: rs, s: s})
	})
}

func uid(name string) id.UserID { return id.UserID("@" + name + ":" + testServer) }

// addDevice creates an account (if needed) and a device row, as login does.
func (e *env) addDevice(user id.UserID, dev string) {
	e.t.Helper()
	now := time.Now().UnixMilli()
	lp := localpart(user)
	if _, err := e.db.Exec(e.ctx, `INSERT INTO accounts (localpart, created_ts) VALUES ($1, $2) ON CONFLICT (localpart) DO NOTHING`, lp, now); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.Exec(e.ctx, `INSERT INTO devices (localpart, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)`, lp, dev, "name of "+dev, now); err != nil {
		e.t.Fatal(err)
	}
}

// signer is an ed25519 key pair that signs JSON as the spec says.
type signer struct {
	pub  string
	priv ed25519.PrivateKey
}

func newSigner(t testing.TB) *signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign adds user's signature by key "ed25519:keyName" to obj (Appendices,
// "Signing JSON") and returns it.
func (s *signer) sign(t testing.TB, obj map[string]any, user id.UserID, keyName string) map[string]any {
	t.Helper()
	c := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err = canonicaljson.CanonicalJSON(b)
	if err != nil {
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
	us["ed25519:"+keyName] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(s.priv, b))
	sigs[string(user)] = us
	obj["signatures"] = sigs
	return obj
}

// device is a test device with its signing key.
type device struct {
	user id.UserID
	id   id.DeviceID
	key  *signer
}

func newDevice(t testing.TB, user id.UserID, dev string) *device {
	return &device{user: user, id: id.DeviceID(dev), key: newSigner(t)}
}

// keys returns the device's signed device_keys object.
func (d *device) keys(t testing.TB) map[string]any {
	obj := map[string]any{
		"user_id":    string(d.user),
		"device_id":  string(d.id),
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"ed25519:" + string(d.id):    d.key.pub,
			"curve25519:" + string(d.id): "curve-" + string(d.id),
		},
	}
	return d.key.sign(t, obj, d.user, string(d.id))
}

// otk returns a signed one-time (or fallback) key object.
func (d *device) otk(t testing.TB, key string, fallback bool) json.RawMessage {
	obj := map[string]any{"key": key}
	if fallback {
		obj["fallback"] = true
	}
	return mustJSON(t, d.key.sign(t, obj, d.user, string(d.id)))
}

// upload uploads the device's keys with the given one-time and fallback keys.
func (e *env) upload(d *device, otks, fallbacks map[string]json.RawMessage) map[string]int {
	e.t.Helper()
	counts, err := e.s.UploadKeys(e.ctx, d.user, d.id, &UploadRequest{DeviceKeys: mustJSON(e.t, d.keys(e.t)), OneTimeKeys: otks, FallbackKeys: fallbacks})
	if err != nil {
		e.t.Fatalf("uploading keys of %s: %v", d.id, err)
	}
	return counts
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// errcode is the Matrix errcode of err ("" if none).
func errcode(err error) string {
	var me *httputil.Error
	if errors.As(err, &me) {
		return me.ErrCode
	}
	if err != nil {
		return fmt.Sprintf("non-Matrix error: %v", err)
	}
	return ""
}

// room builds a room through the real room engine.
type room struct {
	e  *env
	id id.RoomID
}

func (e *env) newRoom(creator id.UserID) *room {
	e.t.Helper()
	roomID, _, err := e.rs.CreateRoom(e.ctx, "10", creator, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	r := &room{e: e, id: roomID}
	r.state(creator, "m.room.member", string(creator), map[string]any{"membership": "join"})
	r.state(creator, "m.room.power_levels", "", map[string]any{"users": map[string]any{string(creator): 100}})
	r.state(creator, "m.room.join_rules", "", map[string]any{"join_rule": "public"})
	return r
}

func (r *room) state(sender id.UserID, typ, key string, content any) int64 {
	r.e.t.Helper()
	out, err := r.e.rs.SendEvent(r.e.ctx, r.id, roomserver.SendRequest{Type: typ, StateKey: &key, Sender: sender, Content: mustJSON(r.e.t, content)})
	if err != nil {
		r.e.t.Fatalf("sending %s: %v", typ, err)
	}
	return out.StreamPos
}

func (r *room) join(u id.UserID) int64 {
	return r.state(u, "m.room.member", string(u), map[string]any{"membership": "join"})
}

func (r *room) leave(u id.UserID) int64 {
	return r.state(u, "m.room.member", string(u), map[string]any{"membership": "leave"})
}
