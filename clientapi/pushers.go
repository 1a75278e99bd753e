package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerPusherRoutes serves the pushers API (Client-Server API, "Push
// Notifications", "Client behaviour": GET /pushers, POST /pushers/set).
func (a *API) registerPusherRoutes(r *mux.Router) {
	handle(r, v3R0, "/pushers", a.authed(a.getPushers, 0), http.MethodGet)
	handle(r, v3R0, "/pushers/set", a.authed(a.setPusher, 0), http.MethodPost)
}

// Pusher limits (POST /pushers/set: app_id "Max length, 64 chars", pushkey
// "Max length, 512 bytes"); the free-text fields are bounded so that one user
// cannot store megabytes.
const (
	maxAppIDChars  = 64
	maxPushKeyLen  = 512
	maxPusherText  = 1024
	maxPusherData  = 8 << 10
	pushNotifyPath = "/_matrix/push/v1/notify"
)

// pusherJSON is a pusher in GET /pushers.
type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// GET /pushers
func (a *API) getPushers(w http.ResponseWriter, r *http.Request, d *Device) error {
	ps, err := a.accounts.Pushers(r.Context(), d.Localpart)
	if err != nil {
		return internalErr(err)
	}
	out := make([]pusherJSON, len(ps))
	for i, p := range ps {
		out[i] = pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data}
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"pushers": out})
	return nil
}

// POST /pushers/set: kind null deletes the user's pusher with the app ID and
// pushkey; otherwise it is created or replaced, bound to the requesting device.
func (a *API) setPusher(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	appID, err := pusherString(body, "app_id", true)
	if err != nil {
		return err
	}
	pushKey, err := pusherString(body, "pushkey", true)
	if err != nil {
		return err
	}
	if appID == "" || pushKey == "" {
		return httputil.InvalidParam("app_id and pushkey must not be empty")
	}
	if utf8.RuneCountInString(appID) > maxAppIDChars {
		return httputil.InvalidParam("app_id may be at most %d characters", maxAppIDChars)
	}
	if len(pushKey) > maxPushKeyLen {
		return httputil.InvalidParam("pushkey may be at most %d bytes", maxPushKeyLen)
	}
	rawKind, ok := body["kind"]
	if !ok {
		return httputil.MissingParam("Missing kind")
	}
	ctx := r.Context()
	if bytes.Equal(bytes.TrimSpace(rawKind), []byte("null")) {
		if _, err := a.accounts.DeletePusher(ctx, d.Localpart, appID, pushKey); err != nil {
			return internalErr(err)
		}
		a.push.refreshUser(ctx, d.Localpart)
		httputil.RespondJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	p := accounts.Pusher{Localpart: d.Localpart, AppID: appID, PushKey: pushKey, DeviceID: string(d.DeviceID)}
	if p.Kind, err = pusherString(body, "kind", true); err != nil {
		return err
	}
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{"app_display_name", &p.AppDisplayName, true},
		{"device_display_name", &p.DeviceDisplayName, true},
		{"lang", &p.Lang, true},
		{"profile_tag", &p.ProfileTag, false},
	} {
		if *f.dst, err = pusherString(body, f.name, f.required); err != nil {
			return err
		}
		if len(*f.dst) > maxPusherText {
			return httputil.InvalidParam("%s may be at most %d bytes", f.name, maxPusherText)
		}
	}
	rawData, ok := body["data"]
	if !ok {
		return httputil.MissingParam("Missing data")
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(rawData, &data) != nil || data == nil {
		return httputil.BadJSON("data must be an object")
	}
	if len(rawData) > maxPusherData {
		return httputil.InvalidParam("data may be at most %d bytes", maxPusherData)
	}
	switch p.Kind {
	case "http":
		if err := validatePusherData(data); err != nil {
			return err
		}
	case "email":
		// An email pusher's pushkey must be one of the user's verified email
		// addresses; Hearth binds no third-party identifiers and sends no
		// email, so there is none (Synapse answers the same for an unbound
		// address).
		return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_NOT_FOUND",
			Message: "Email pushers need an email address bound to the account; this server binds none and sends no email"}
	default:
		return httputil.InvalidParam("Unknown pusher kind %q: expected http, email or null", p.Kind)
	}
	if p.Data, err = json.Marshal(data); err != nil {
		return internalErr(err)
	}
	appendPusher := false
	if raw, ok := body["append"]; ok && json.Unmarshal(raw, &appendPusher) != nil {
		return httputil.BadJSON("append must be a boolean")
	}
	removed, err := a.accounts.SetPusher(ctx, p, appendPusher)
	if err != nil {
		return internalErr(err)
	}
	a.push.addUser(d.Localpart)
	for _, lp := range removed {
		a.push.refreshUser(ctx, lp)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// pusherString reads a string field of the /pushers/set body.
func pusherString(body map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := body[name]
	if !ok {
		if required {
			return "", httputil.MissingParam("Missing %s", name)
		}
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", httputil.BadJSON("%s must be a string", name)
	}
	return s, nil
}

// validatePusherData checks an http pusher's data: "this MUST contain url",
// an absolute http(s) URL whose path is /_matrix/push/v1/notify. The spec asks
// clients for HTTPS; like Synapse, the server does not insist (gateways on a
// private network are often plain HTTP). format, when given, is a string.
func validatePusherData(data map[string]json.RawMessage) error {
	raw, ok := data["url"]
	if !ok {
		return httputil.MissingParam("data.url is required for http pushers")
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return httputil.BadJSON("data.url must be a string")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return httputil.InvalidParam("data.url must be an absolute https URL")
	}
	if u.Path != pushNotifyPath {
		return httputil.InvalidParam("data.url must have the path %s", pushNotifyPath)
	}
	if f, ok := data["format"]; ok {
		var fs string
		if json.Unmarshal(f, &fs) != nil {
			return httputil.BadJSON("data.format must be a string")
		}
	}
	return nil
}
