package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
	"hearth/httputil"
)

// registerBackupRoutes serves server-side key backups (Client-Server API,
// "Server-side key backups").
func (a *API) registerBackupRoutes(r *mux.Router) {
	handle(r, v3R0, "/room_keys/version", a.authed(a.createBackup, 0), http.MethodPost)
	handle(r, v3R0, "/room_keys/version", a.authed(a.getBackup, 0), http.MethodGet)
	handle(r, v3R0, "/room_keys/version/{version}", a.authed(a.getBackup, 0), http.MethodGet)
	handle(r, v3R0, "/room_keys/version/{version}", a.authed(a.updateBackup, 0), http.MethodPut)
	handle(r, v3R0, "/room_keys/version/{version}", a.authed(a.deleteBackup, 0), http.MethodDelete)
	// Megolm session IDs are standard base64 and may hold "/" (sent as %2F,
	// which routing sees decoded): the session ID is the rest of the path.
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId:.+}"} {
		handle(r, v3R0, p, a.authed(a.putBackupKeys, 0), http.MethodPut)
		handle(r, v3R0, p, a.authed(a.getBackupKeys, 0), http.MethodGet)
		handle(r, v3R0, p, a.authed(a.deleteBackupKeys, 0), http.MethodDelete)
	}
}

// backupVersionBody is the body of POST /room_keys/version and PUT
// /room_keys/version/{version}.
type backupVersionBody struct {
	Algorithm *string         `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (b *backupVersionBody) check() error {
	if b.Algorithm == nil || *b.Algorithm == "" {
		return httputil.MissingParam("Missing algorithm")
	}
	if len(b.AuthData) == 0 || string(b.AuthData) == "null" {
		return httputil.MissingParam("Missing auth_data")
	}
	if !rawIsObject(b.AuthData) {
		return httputil.BadJSON("auth_data must be an object")
	}
	return nil
}

func rawIsObject(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// POST /room_keys/version
func (a *API) createBackup(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req backupVersionBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	v, err := a.opts.Keys.CreateBackupVersion(r.Context(), d.UserID, *req.Algorithm, req.AuthData)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"version": v})
	return nil
}

// GET /room_keys/version and /room_keys/version/{version}
func (a *API) getBackup(w http.ResponseWriter, r *http.Request, d *Device) error {
	b, err := a.opts.Keys.Backup(r.Context(), d.UserID, mux.Vars(r)["version"])
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, b)
	return nil
}

// PUT /room_keys/version/{version}: only auth_data changes.
func (a *API) updateBackup(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req backupVersionBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	version := mux.Vars(r)["version"]
	if req.Version != nil && *req.Version != version {
		return httputil.InvalidParam("The version in the body does not match the path")
	}
	if err := a.opts.Keys.UpdateBackup(r.Context(), d.UserID, version, *req.Algorithm, req.AuthData); err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /room_keys/version/{version}
func (a *API) deleteBackup(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := a.opts.Keys.DeleteBackup(r.Context(), d.UserID, mux.Vars(r)["version"]); err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// backupKeyBody is KeyBackupData as uploaded: every field is required.
type backupKeyBody struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (b *backupKeyBody) key() (*e2ee.BackupKey, error) {
	if b == nil || b.FirstMessageIndex == nil || b.ForwardedCount == nil || b.IsVerified == nil || len(b.SessionData) == 0 {
		return nil, httputil.BadJSON("Key data needs first_message_index, forwarded_count, is_verified and session_data")
	}
	return &e2ee.BackupKey{FirstMessageIndex: *b.FirstMessageIndex, ForwardedCount: *b.ForwardedCount, IsVerified: *b.IsVerified, SessionData: b.SessionData}, nil
}

type roomBackupBody struct {
	Sessions map[string]*backupKeyBody `json:"sessions"`
}

func (b *roomBackupBody) keys() (map[string]*e2ee.BackupKey, error) {
	if b == nil || b.Sessions == nil {
		return nil, httputil.BadJSON("Missing sessions")
	}
	out := make(map[string]*e2ee.BackupKey, len(b.Sessions))
	for sid, kb := range b.Sessions {
		k, err := kb.key()
		if err != nil {
			return nil, err
		}
		out[sid] = k
	}
	return out, nil
}

// backupVersionParam reads the required version query parameter.
func backupVersionParam(r *http.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", httputil.MissingParam("Missing version")
	}
	return v, nil
}

// PUT /room_keys/keys[/{roomId}[/{sessionId}]]?version=
func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	vars := mux.Vars(r)
	roomID, sessionID := id.RoomID(vars["roomId"]), vars["sessionId"]
	keys := e2ee.BackupKeys{}
	switch {
	case sessionID != "":
		var kb backupKeyBody
		if err := decodeJSON(r, &kb); err != nil {
			return err
		}
		k, err := kb.key()
		if err != nil {
			return err
		}
		keys[roomID] = map[string]*e2ee.BackupKey{sessionID: k}
	case roomID != "":
		var rb roomBackupBody
		if err := decodeJSON(r, &rb); err != nil {
			return err
		}
		if keys[roomID], err = rb.keys(); err != nil {
			return err
		}
	default:
		var body struct {
			Rooms map[id.RoomID]*roomBackupBody `json:"rooms"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		if body.Rooms == nil {
			return httputil.BadJSON("Missing rooms")
		}
		for room, rb := range body.Rooms {
			if keys[room], err = rb.keys(); err != nil {
				return err
			}
		}
	}
	up, err := a.opts.Keys.PutBackupKeys(r.Context(), d.UserID, version, keys)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, up)
	return nil
}

// GET /room_keys/keys[/{roomId}[/{sessionId}]]?version=
func (a *API) getBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	vars := mux.Vars(r)
	roomID, sessionID := id.RoomID(vars["roomId"]), vars["sessionId"]
	keys, err := a.opts.Keys.BackupKeysOf(r.Context(), d.UserID, version, roomID, sessionID)
	if err != nil {
		return keysErr(err)
	}
	switch {
	case sessionID != "":
		k := keys[roomID][sessionID]
		if k == nil {
			return httputil.NotFound("Key not found.")
		}
		httputil.RespondJSON(w, http.StatusOK, k)
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]*e2ee.BackupKey{}
		}
		httputil.RespondJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := make(map[id.RoomID]any, len(keys))
		for room, sessions := range keys {
			rooms[room] = map[string]any{"sessions": sessions}
		}
		httputil.RespondJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
	return nil
}

// DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=
func (a *API) deleteBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	vars := mux.Vars(r)
	up, err := a.opts.Keys.DeleteBackupKeys(r.Context(), d.UserID, version, id.RoomID(vars["roomId"]), vars["sessionId"])
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, up)
	return nil
}
