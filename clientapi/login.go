package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerAuthRoutes serves login, refresh, logout and registration (Client-Server
// API, "Legacy API": "Login", "Refreshing access tokens", "Account registration").
func (a *API) registerAuthRoutes(r *mux.Router) {
	handle(r, v3R0, "/login", a.public(a.getLogin), http.MethodGet)
	handle(r, v3R0, "/login", a.public(a.postLogin), http.MethodPost)
	handle(r, v1Only, "/login/get_token", a.authed(a.getLoginToken, 0), http.MethodPost)
	handle(r, v3Only, "/refresh", a.public(a.refresh), http.MethodPost)
	handle(r, v3R0, "/logout", a.authed(a.logout, allowGuests), http.MethodPost)
	handle(r, v3R0, "/logout/all", a.authed(a.logoutAll, allowGuests), http.MethodPost)
	handle(r, v3R0, "/register", a.public(a.register), http.MethodPost)
	handle(r, v3R0, "/register/available", a.public(a.registerAvailable), http.MethodGet)
	handle(r, v1Only, "/register/m.login.registration_token/validity", a.public(a.registrationTokenValidity), http.MethodGet)
}

// GET /login
func (a *API) getLogin(w http.ResponseWriter, r *http.Request) error {
	flows := []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token", "get_login_token": true},
	}
	if len(a.opts.AppServices.All()) > 0 {
		flows = append(flows, map[string]any{"type": appServiceLoginType})
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"flows": flows})
	return nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               json.RawMessage `json:"identifier"`
	User                     string          `json:"user"`
	Medium                   string          `json:"medium"`
	Address                  string          `json:"address"`
	Password                 *string         `json:"password"`
	Token                    *string         `json:"token"`
	DeviceID                 *string         `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// POST /login
func (a *API) postLogin(w http.ResponseWriter, r *http.Request) error {
	if as := a.requestAppService(r); as == nil || as.RateLimited {
		if err := a.loginLimit.check(r); err != nil {
			return err
		}
	}
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := validateDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	ctx := r.Context()
	var localpart string
	switch req.Type {
	case "":
		return httputil.MissingParam("Missing login type")
	case "m.login.password":
		if req.Password == nil {
			return httputil.MissingParam("Missing password")
		}
		lp, err := a.loginIdentifier(&req)
		if err != nil {
			return err
		}
		acc, ok, err := a.accounts.CheckPassword(ctx, lp, *req.Password)
		if err != nil {
			return internalErr(err)
		}
		if !ok {
			return httputil.Forbidden("Invalid username or password")
		}
		if acc.Deactivated {
			return httputil.UserDeactivated("This account has been deactivated")
		}
		localpart = lp
	case "m.login.token":
		if req.Token == nil {
			return httputil.MissingParam("Missing token")
		}
		lp, err := a.accounts.ConsumeLoginToken(ctx, *req.Token)
		if errors.Is(err, accounts.ErrUnknownToken) {
			return httputil.Forbidden("Invalid login token")
		}
		if err != nil {
			return internalErr(err)
		}
		acc, err := a.accounts.Get(ctx, lp)
		if err != nil {
			return internalErr(err)
		}
		if acc.Deactivated {
			return httputil.UserDeactivated("This account has been deactivated")
		}
		localpart = lp
	case appServiceLoginType:
		lp, err := a.appServiceLogin(ctx, r, &req)
		if err != nil {
			return err
		}
		localpart = lp
	default:
		return httputil.Unknown("Unknown login type %q", req.Type)
	}
	deviceID := ""
	if req.DeviceID != nil {
		deviceID = *req.DeviceID
	}
	resp, err := a.issueLogin(ctx, r, localpart, deviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	resp["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.BaseURL()}}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// loginIdentifier resolves the user of an m.login.password login. Third-party
// identifiers are refused as unknown (no 3PIDs are bound on this server).
func (a *API) loginIdentifier(req *loginRequest) (string, error) {
	user := req.User
	if len(req.Identifier) > 0 {
		ident, err := parseIdentifier(req)
		if err != nil {
			return "", err
		}
		switch ident.Type {
		case "m.id.user":
			user = ident.User
		case "m.id.thirdparty", "m.id.phone":
			return "", httputil.Forbidden("Unknown third-party identifier")
		case "":
			return "", httputil.MissingParam("identifier.type is required")
		default:
			return "", httputil.Unknown("Unknown identifier type %q", ident.Type)
		}
	} else if req.Medium != "" || req.Address != "" {
		return "", httputil.Forbidden("Unknown third-party identifier")
	}
	if user == "" {
		return "", httputil.MissingParam("Missing user identifier")
	}
	lp, ok := a.localpartOf(user)
	if !ok {
		return "", httputil.Forbidden("Invalid username or password")
	}
	return lp, nil
}

// loginIdent is the identifier object of a login request (only its type and,
// for m.id.user, its user are read).
type loginIdent struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// parseIdentifier decodes req.Identifier, which must be present.
func parseIdentifier(req *loginRequest) (loginIdent, error) {
	var ident loginIdent
	if err := httputil.UnmarshalJSON(req.Identifier, &ident); err != nil {
		return ident, httputil.BadJSON("identifier: %s", err.Message)
	}
	return ident, nil
}

// maxDeviceDisplayName is the longest device display name accepted (as Synapse).
const maxDeviceDisplayName = 100

// validateDeviceFields checks client-chosen device IDs and display names.
func validateDeviceFields(deviceID *string, displayName string) error {
	if deviceID != nil {
		d := *deviceID
		if d == "" || len(d) > 255 || !utf8.ValidString(d) {
			return httputil.InvalidParam("device_id must be 1–255 bytes of UTF-8")
		}
		for _, c := range d {
			if c < 0x20 || c == 0x7f {
				return httputil.InvalidParam("device_id must not contain control characters")
			}
		}
	}
	if utf8.RuneCountInString(displayName) > maxDeviceDisplayName {
		return httputil.InvalidParam("Device display name is longer than %d characters", maxDeviceDisplayName)
	}
	return nil
}

// issueLogin logs a user in on a device and builds the response shared by
// /login and /register.
func (a *API) issueLogin(ctx context.Context, r *http.Request, localpart, deviceID, displayName string, refreshable bool) (map[string]any, error) {
	nl := accounts.NewLogin{Localpart: localpart, DeviceID: deviceID, DeviceDisplayName: displayName, IP: clientIP(r)}
	if refreshable {
		nl.Lifetime = a.accessTokenLifetime()
	}
	if deviceID != "" {
		// The device's old tokens are revoked; forget them here too.
		a.tokens.invalidate(localpart, []string{deviceID})
	}
	t, err := a.accounts.Login(ctx, nl)
	if err != nil {
		return nil, internalErr(err)
	}
	resp := map[string]any{
		"user_id":      a.userID(localpart),
		"access_token": t.AccessToken,
		"device_id":    t.DeviceID,
		"home_server":  a.cfg.ServerName,
	}
	if t.RefreshToken != "" {
		resp["refresh_token"] = t.RefreshToken
		resp["expires_in_ms"] = t.ExpiresInMS
	}
	return resp, nil
}

// POST /login/get_token (Client-Server API, v1.7): a single-use token another
// client can log in with.
func (a *API) getLoginToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	sess, err := a.userInteractiveAuth(ctx, r, req.Auth, uiaRequest{operation: "get_login_token", localpart: d.Localpart, flows: passwordUIA})
	if err != nil {
		return err
	}
	logIfErr(ctx, "ending UIA session", a.accounts.DeleteUIASession(ctx, sess.ID))
	tok, err := a.accounts.CreateLoginToken(ctx, d.Localpart, loginTokenLifetime)
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"login_token": tok, "expires_in_ms": loginTokenLifetime.Milliseconds()})
	return nil
}

// POST /refresh
func (a *API) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == nil || *req.RefreshToken == "" {
		return httputil.MissingParam("Missing refresh_token")
	}
	t, _, err := a.accounts.Refresh(r.Context(), *req.RefreshToken, a.accessTokenLifetime())
	if errors.Is(err, accounts.ErrUnknownToken) {
		return httputil.UnknownToken("Unknown or already used refresh token").With("soft_logout", false)
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{
		"access_token":  t.AccessToken,
		"refresh_token": t.RefreshToken,
		"expires_in_ms": t.ExpiresInMS,
	})
	return nil
}

// POST /logout: the token's device goes, with its tokens (and E2EE keys).
func (a *API) logout(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := a.deleteDevices(r.Context(), d.Localpart, []string{string(d.DeviceID)}); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /logout/all
func (a *API) logoutAll(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	deleted, err := a.accounts.DeleteAllDevices(ctx, d.Localpart, "")
	if err != nil {
		return internalErr(err)
	}
	a.tokens.invalidate(d.Localpart, nil)
	a.afterDevicesDeleted(ctx, d.Localpart, deleted)
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// deleteDevices deletes devices with their tokens and keys.
func (a *API) deleteDevices(ctx context.Context, localpart string, deviceIDs []string) error {
	deleted, err := a.accounts.DeleteDevices(ctx, localpart, deviceIDs)
	if err != nil {
		return internalErr(err)
	}
	a.tokens.invalidate(localpart, deviceIDs)
	a.afterDevicesDeleted(ctx, localpart, deleted)
	return nil
}

// afterDevicesDeleted tells /sync that deleting the devices changed account
// data (their MSC3890 notification settings go with them), forgets the
// pushers that went with them, and removes their E2EE keys, once a keys module
// is wired in.
func (a *API) afterDevicesDeleted(ctx context.Context, localpart string, deviceIDs []string) {
	if len(deviceIDs) == 0 {
		return
	}
	if a.opts.Sync != nil {
		a.opts.Sync.AccountDataChanged(a.userID(localpart))
	}
	a.push.refreshUser(ctx, localpart)
	if a.opts.DeviceKeys == nil {
		return
	}
	ids := make([]id.DeviceID, len(deviceIDs))
	for i, d := range deviceIDs {
		ids[i] = id.DeviceID(d)
	}
	logIfErr(ctx, "deleting device keys", a.opts.DeviceKeys.DeleteDeviceKeys(ctx, a.userID(localpart), ids))
}
