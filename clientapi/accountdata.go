package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerAccountDataRoutes serves account data, room tags and, through
// m.ignored_user_list, ignored users (Client-Server API, "Client Config", "Room
// Tagging", "Ignoring Users").
func (a *API) registerAccountDataRoutes(r *mux.Router) {
	handle(r, v3R0, "/user/{userId}/account_data/{type}", a.authed(a.getAccountData, 0), http.MethodGet)
	handle(r, v3R0, "/user/{userId}/account_data/{type}", a.authed(a.putAccountData, 0), http.MethodPut)
	handle(r, v3R0, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.getAccountData, 0), http.MethodGet)
	handle(r, v3R0, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.putAccountData, 0), http.MethodPut)
	// MSC3391: deleting account data, under its unstable prefix (a PUT of {}
	// deletes too).
	r.HandleFunc(msc3391Prefix+"/user/{userId}/account_data/{type}", a.authed(a.deleteAccountData, 0)).Methods(http.MethodDelete)
	r.HandleFunc(msc3391Prefix+"/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.deleteAccountData, 0)).Methods(http.MethodDelete)
	handle(r, v3R0, "/user/{userId}/rooms/{roomId}/tags", a.authed(a.getTags, 0), http.MethodGet)
	handle(r, v3R0, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.authed(a.putTag, 0), http.MethodPut)
	handle(r, v3R0, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.authed(a.deleteTag, 0), http.MethodDelete)
}

// msc3391Prefix is where DELETE of account data lives until MSC3391 is stable.
const msc3391Prefix = "/unstable/org.matrix.msc3391"

// Account data types with special handling.
const (
	typeFullyRead   = "m.fully_read"
	typeTag         = "m.tag"
	typeIgnoredList = "m.ignored_user_list"
)

// ownUserParam checks that the {userId} in the path is the requester.
func ownUserParam(r *http.Request, d *Device) error {
	uid, _, _, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return err
	}
	if uid != d.UserID {
		return httputil.Forbidden("You cannot access another user's data")
	}
	return nil
}

// roomParam returns the {roomId} path parameter ("" when absent), validated.
func roomParam(r *http.Request) (string, error) {
	roomID, ok := mux.Vars(r)["roomId"]
	if !ok {
		return "", nil
	}
	if !validRoomID(roomID) {
		return "", httputil.InvalidParam("Invalid room ID %q", roomID)
	}
	return roomID, nil
}

// validRoomID checks the room ID sigil and length (Appendices, "Room IDs"; from
// room version 12 they have no server part).
func validRoomID(s string) bool {
	return len(s) > 1 && len(s) <= 255 && s[0] == '!' && !strings.ContainsAny(s, " \x00")
}

// ownDataPath checks the path of an account data or tag request: {userId} is
// the requester, {roomId} (when the route has one, "" otherwise) a valid room
// ID, and, with named, the parameter named reads it ({type}, {tag}).
func ownDataPath(r *http.Request, d *Device, named func(*http.Request) (string, error)) (roomID, name string, err error) {
	if err := ownUserParam(r, d); err != nil {
		return "", "", err
	}
	if roomID, err = roomParam(r); err != nil {
		return "", "", err
	}
	if named != nil {
		if name, err = named(r); err != nil {
			return "", "", err
		}
	}
	return roomID, name, nil
}

// accountDataType validates the {type} path parameter.
func accountDataType(r *http.Request) (string, error) {
	typ := mux.Vars(r)["type"]
	if typ == "" || len(typ) > 255 {
		return "", httputil.InvalidParam("Account data types must be 1–255 bytes")
	}
	return typ, nil
}

// GET /user/{userId}/account_data/{type}, /user/{userId}/rooms/{roomId}/account_data/{type}
func (a *API) getAccountData(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, typ, err := ownDataPath(r, d, accountDataType)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if typ == accounts.PushRulesType && roomID == "" {
		rs, err := a.pushRuleset(ctx, d.Localpart)
		if err != nil {
			return err
		}
		httputil.RespondJSON(w, http.StatusOK, map[string]any{"global": rs})
		return nil
	}
	content, err := a.accounts.AccountData(ctx, d.Localpart, roomID, typ)
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No account data of type %s", typ)
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.WriteJSONBytes(w, http.StatusOK, content)
	return nil
}

// PUT /user/{userId}/account_data/{type}, /user/{userId}/rooms/{roomId}/account_data/{type}
func (a *API) putAccountData(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, typ, err := writableAccountDataPath(r, d)
	if err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := decodeJSON(r, &obj); err != nil {
		return err
	}
	if typ == typeIgnoredList && roomID == "" {
		if err := validateIgnoredUsers(obj); err != nil {
			return err
		}
	}
	if len(obj) == 0 {
		// MSC3391: "{}" deletes the account data.
		return a.removeAccountData(w, r, d, roomID, typ)
	}
	content, err := json.Marshal(obj)
	if err != nil {
		return internalErr(err)
	}
	if _, err := a.accounts.SetAccountData(r.Context(), d.Localpart, roomID, typ, content); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// writableAccountDataPath is ownDataPath for writes of account data: the types
// the server manages are refused with 405 (Client-Server API, "Client Config",
// "Server Behaviour").
func writableAccountDataPath(r *http.Request, d *Device) (roomID, typ string, err error) {
	roomID, typ, err = ownDataPath(r, d, accountDataType)
	if err != nil {
		return "", "", err
	}
	if typ == typeFullyRead || typ == accounts.PushRulesType {
		return "", "", &httputil.Error{Status: http.StatusMethodNotAllowed, ErrCode: "M_BAD_JSON", Message: fmt.Sprintf("Cannot set %s through this API", typ)}
	}
	return roomID, typ, nil
}

// DELETE /unstable/org.matrix.msc3391/user/{userId}/account_data/{type} and
// /user/{userId}/rooms/{roomId}/account_data/{type} (MSC3391): the entry then
// reads as absent (404), is left out of initial syncs, and reaches incremental
// syncs as {}. Deleting what is not there succeeds too, as in Synapse.
func (a *API) deleteAccountData(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, typ, err := writableAccountDataPath(r, d)
	if err != nil {
		return err
	}
	return a.removeAccountData(w, r, d, roomID, typ)
}

// removeAccountData deletes an account data entry and answers {}.
func (a *API) removeAccountData(w http.ResponseWriter, r *http.Request, d *Device, roomID, typ string) error {
	if _, _, err := a.accounts.DeleteAccountData(r.Context(), d.Localpart, roomID, typ); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// validateIgnoredUsers checks m.ignored_user_list's content: an ignored_users
// object keyed by user IDs, each mapping to an object.
func validateIgnoredUsers(obj map[string]json.RawMessage) error {
	raw, ok := obj["ignored_users"]
	if !ok {
		return httputil.BadJSON("m.ignored_user_list needs an ignored_users object")
	}
	var users map[string]json.RawMessage
	if err := json.Unmarshal(raw, &users); err != nil || users == nil {
		return httputil.BadJSON("ignored_users must be an object")
	}
	for u, v := range users {
		if _, _, err := id.UserID(u).ParseAndValidateRelaxed(); err != nil {
			return httputil.InvalidParam("ignored_users: invalid user ID %q", u)
		}
		var o map[string]json.RawMessage
		if json.Unmarshal(v, &o) != nil || o == nil {
			return httputil.BadJSON("ignored_users: the value for %s must be an object", u)
		}
	}
	return nil
}

// IgnoredUsers returns the users a local user ignores (their
// m.ignored_user_list), for /sync to honour.
func (a *API) IgnoredUsers(ctx context.Context, localpart string) (map[id.UserID]struct{}, error) {
	content, err := a.accounts.AccountData(ctx, localpart, "", typeIgnoredList)
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[id.UserID]json.RawMessage `json:"ignored_users"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, fmt.Errorf("decoding ignored users of %s: %w", localpart, err)
	}
	out := make(map[id.UserID]struct{}, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = struct{}{}
	}
	return out, nil
}

// AccountDataSince returns a local user's account data changed after stream
// position since, with m.push_rules filled in with the current rule set; /sync
// uses it. Positions are per user and only grow. Deleted entries (MSC3391) come
// as {} after a position, and not at all from the start (since 0).
func (a *API) AccountDataSince(ctx context.Context, localpart string, since int64) ([]accounts.AccountDataEntry, error) {
	entries, err := a.accounts.AccountDataSince(ctx, localpart, since)
	if err != nil {
		return nil, err
	}
	if since == 0 {
		kept := entries[:0]
		for _, e := range entries {
			if string(e.Content) != accounts.DeletedContent || (e.Type == accounts.PushRulesType && e.RoomID == "") {
				kept = append(kept, e)
			}
		}
		entries = kept
	}
	for i := range entries {
		if entries[i].Type == accounts.PushRulesType && entries[i].RoomID == "" {
			rs, err := a.pushRuleset(ctx, localpart)
			if err != nil {
				return nil, err
			}
			b, err := json.Marshal(map[string]any{"global": rs})
			if err != nil {
				return nil, fmt.Errorf("encoding push rules: %w", err)
			}
			entries[i].Content = b
		}
	}
	return entries, nil
}

// roomTags is the content of m.tag.
type roomTags struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

// GET /user/{userId}/rooms/{roomId}/tags
func (a *API) getTags(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, _, err := ownDataPath(r, d, nil)
	if err != nil {
		return err
	}
	content, err := a.accounts.AccountData(r.Context(), d.Localpart, roomID, typeTag)
	tags := roomTags{Tags: map[string]json.RawMessage{}}
	switch {
	case err == nil:
		_ = json.Unmarshal(content, &tags)
		if tags.Tags == nil {
			tags.Tags = map[string]json.RawMessage{}
		}
	case !errors.Is(err, accounts.ErrNotFound):
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, tags)
	return nil
}

// tagParam validates the {tag} path parameter ("The name of a tag MUST NOT
// exceed 255 bytes").
func tagParam(r *http.Request) (string, error) {
	tag := mux.Vars(r)["tag"]
	if tag == "" || len(tag) > 255 {
		return "", httputil.InvalidParam("Tags must be 1–255 bytes")
	}
	return tag, nil
}

// PUT /user/{userId}/rooms/{roomId}/tags/{tag}
func (a *API) putTag(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, tag, err := ownDataPath(r, d, tagParam)
	if err != nil {
		return err
	}
	var info map[string]json.RawMessage
	if err := decodeJSON(r, &info); err != nil {
		return err
	}
	if o, ok := info["order"]; ok {
		var f float64
		if json.Unmarshal(o, &f) != nil {
			return httputil.BadJSON("order must be a number")
		}
	}
	infoJSON, err := json.Marshal(info)
	if err != nil {
		return internalErr(err)
	}
	return a.updateTags(w, r, d, roomID, func(t map[string]json.RawMessage) { t[tag] = infoJSON })
}

// DELETE /user/{userId}/rooms/{roomId}/tags/{tag}
func (a *API) deleteTag(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, tag, err := ownDataPath(r, d, tagParam)
	if err != nil {
		return err
	}
	return a.updateTags(w, r, d, roomID, func(t map[string]json.RawMessage) { delete(t, tag) })
}

func (a *API) updateTags(w http.ResponseWriter, r *http.Request, d *Device, roomID string, change func(map[string]json.RawMessage)) error {
	_, err := a.accounts.UpdateAccountData(r.Context(), d.Localpart, roomID, typeTag, func(old []byte) ([]byte, error) {
		var t roomTags
		if old != nil {
			_ = json.Unmarshal(old, &t)
		}
		if t.Tags == nil {
			t.Tags = map[string]json.RawMessage{}
		}
		change(t.Tags)
		return json.Marshal(t)
	})
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}
