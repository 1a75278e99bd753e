package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerProfileRoutes serves profiles (Client-Server API, "Profiles").
func (a *API) registerProfileRoutes(r *mux.Router) {
	handle(r, v3R0, "/profile/{userId}", a.public(a.getProfile), http.MethodGet)
	handle(r, v3R0, "/profile/{userId}/{keyName}", a.public(a.getProfileField), http.MethodGet)
	handle(r, v3R0, "/profile/{userId}/{keyName}", a.authed(a.putProfileField, allowGuests), http.MethodPut)
	handle(r, v3Only, "/profile/{userId}/{keyName}", a.authed(a.deleteProfileField, allowGuests), http.MethodDelete)
}

// profileKeyPattern is the keyName grammar of the profile endpoints (spec v1.16).
var profileKeyPattern = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// maxDisplayName is the longest display name accepted (as Synapse).
const maxDisplayName = 256

// maxAvatarURL is the longest avatar_url accepted, in bytes (as Synapse).
const maxAvatarURL = 1000

// parseUserIDParam validates a user ID from a path.
func parseUserIDParam(s string) (id.UserID, string, string, error) {
	uid := id.UserID(s)
	lp, server, err := uid.ParseAndValidateRelaxed()
	if err != nil || lp == "" {
		return "", "", "", httputil.InvalidParam("Invalid user ID %q", s)
	}
	return uid, lp, server, nil
}

// localProfile loads the profile of a local user named in the path, or answers
// 404 for unknown and remote users.
func (a *API) localProfile(r *http.Request) (*accounts.Profile, error) {
	_, lp, server, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return nil, err
	}
	if server != a.cfg.ServerName {
		// Remote profiles come with federation.
		return nil, httputil.NotFound("Profile lookup for remote users is not available yet")
	}
	p, err := a.accounts.Profile(r.Context(), lp)
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, httputil.NotFound("Profile not found")
	}
	if err != nil {
		return nil, internalErr(err)
	}
	return p, nil
}

// GET /profile/{userId}
func (a *API) getProfile(w http.ResponseWriter, r *http.Request) error {
	if obj, remote, err := a.remoteProfile(r, ""); remote {
		if err != nil {
			return err
		}
		httputil.RespondJSON(w, http.StatusOK, obj)
		return nil
	}
	p, err := a.localProfile(r)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, p.Object())
	return nil
}

func profileKey(r *http.Request) (string, error) {
	key := mux.Vars(r)["keyName"]
	if len(key) > 255 {
		return "", &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_KEY_TOO_LARGE", Message: "Profile keys may be at most 255 bytes"}
	}
	if !profileKeyPattern.MatchString(key) {
		return "", httputil.InvalidParam("Invalid profile key %q", key)
	}
	return key, nil
}

// GET /profile/{userId}/{keyName}
func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) error {
	key, err := profileKey(r)
	if err != nil {
		return err
	}
	obj, remote, err := a.remoteProfile(r, key)
	if !remote {
		var p *accounts.Profile
		if p, err = a.localProfile(r); err == nil {
			obj = p.Object()
		}
	}
	if err != nil {
		return err
	}
	v, ok := obj[key]
	if !ok {
		return httputil.NotFound("No %s in this profile", key)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]json.RawMessage{key: v})
	return nil
}

// ownProfileKey checks that the path names the requester and a key they may
// change (guests: only their display name).
func ownProfileKey(r *http.Request, d *Device) (string, error) {
	uid, _, _, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return "", err
	}
	key, err := profileKey(r)
	if err != nil {
		return "", err
	}
	if uid != d.UserID {
		return "", httputil.Forbidden("You cannot change another user's profile")
	}
	if d.IsGuest && key != "displayname" {
		return "", httputil.Forbidden("Guests may only change their display name")
	}
	return key, nil
}

// PUT /profile/{userId}/{keyName}
func (a *API) putProfileField(w http.ResponseWriter, r *http.Request, d *Device) error {
	key, err := ownProfileKey(r, d)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	v, ok := body[key]
	if !ok {
		return httputil.MissingParam("The body must have a %q property", key)
	}
	if err := validateProfileValue(key, v); err != nil {
		return err
	}
	return a.setProfileField(w, r, d, key, v)
}

// DELETE /profile/{userId}/{keyName}
func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request, d *Device) error {
	key, err := ownProfileKey(r, d)
	if err != nil {
		return err
	}
	return a.setProfileField(w, r, d, key, nil)
}

func (a *API) setProfileField(w http.ResponseWriter, r *http.Request, d *Device, key string, v json.RawMessage) error {
	ctx := r.Context()
	p, err := a.accounts.SetProfileField(ctx, d.Localpart, key, v)
	switch {
	case errors.Is(err, accounts.ErrProfileTooLarge):
		return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_PROFILE_TOO_LARGE", Message: "The profile would exceed 64 KiB"}
	case errors.Is(err, accounts.ErrNotFound):
		return httputil.NotFound("No such user")
	case err != nil:
		return internalErr(err)
	}
	if (key == "displayname" || key == "avatar_url") && a.opts.Membership != nil {
		var dn, av string
		if p.DisplayName != nil {
			dn = *p.DisplayName
		}
		if p.AvatarURL != nil {
			av = *p.AvatarURL
		}
		logIfErr(ctx, "propagating profile change to rooms", a.opts.Membership.UpdateProfileInRooms(ctx, d.UserID, dn, av))
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// validateProfileValue checks the value types the spec fixes: strings for
// displayname, avatar_url and m.tz ("" or null clear the first two); custom
// fields may hold any JSON. avatar_url is meant to be an MXC URI, but the spec
// does not require one and clients do store other strings (Synapse accepts
// any), so only its length is bounded.
func validateProfileValue(key string, v json.RawMessage) error {
	isNull := bytes.Equal(bytes.TrimSpace(v), []byte("null"))
	var s string
	switch key {
	case "displayname", "avatar_url":
		if isNull {
			return nil
		}
		if json.Unmarshal(v, &s) != nil {
			return httputil.BadJSON("%s must be a string", key)
		}
		if key == "displayname" && utf8.RuneCountInString(s) > maxDisplayName {
			return httputil.InvalidParam("Display names may be at most %d characters", maxDisplayName)
		}
		if key == "avatar_url" && len(s) > maxAvatarURL {
			return httputil.InvalidParam("avatar_url may be at most %d bytes", maxAvatarURL)
		}
	case "m.tz":
		if json.Unmarshal(v, &s) != nil {
			return httputil.BadJSON("m.tz must be a string")
		}
	}
	return nil
}
