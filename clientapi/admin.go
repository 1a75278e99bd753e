package clientapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerAdminRoutes serves the Synapse admin API endpoints Hearth implements
// (on /_synapse/admin), which admin tools and test suites use: shared-secret
// registration and registration-token management.
func (a *API) registerAdminRoutes(r *mux.Router) {
	r.HandleFunc("/v1/register", a.public(a.getRegisterNonce)).Methods(http.MethodGet)
	r.HandleFunc("/v1/register", a.public(a.sharedSecretRegister)).Methods(http.MethodPost)
	r.HandleFunc("/v1/registration_tokens", a.authed(a.listRegistrationTokens, adminOnly)).Methods(http.MethodGet)
	r.HandleFunc("/v1/registration_tokens/new", a.authed(a.createRegistrationToken, adminOnly)).Methods(http.MethodPost)
	r.HandleFunc("/v1/registration_tokens/{token}", a.authed(a.getRegistrationToken, adminOnly)).Methods(http.MethodGet)
	r.HandleFunc("/v1/registration_tokens/{token}", a.authed(a.updateRegistrationToken, adminOnly)).Methods(http.MethodPut)
	r.HandleFunc("/v1/registration_tokens/{token}", a.authed(a.deleteRegistrationToken, adminOnly)).Methods(http.MethodDelete)
}

var errSharedSecretOff = httputil.Unknown("Shared secret registration is not enabled")

// GET /_synapse/admin/v1/register
func (a *API) getRegisterNonce(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Registration.SharedSecret == "" {
		return errSharedSecretOff
	}
	if err := a.registerLimit.check(r); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"nonce": a.nonces.New()})
	return nil
}

// sharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type sharedSecretRequest struct {
	Nonce        *string `json:"nonce"`
	Username     *string `json:"username"`
	Password     *string `json:"password"`
	Admin        bool    `json:"admin"`
	UserType     *string `json:"user_type"`
	DisplayName  string  `json:"displayname"`
	MAC          *string `json:"mac"`
	InhibitLogin bool    `json:"inhibit_login"`
	RefreshToken bool    `json:"refresh_token"`
}

// SharedSecretMAC computes the MAC of a shared-secret registration exactly as
// Synapse defines it: hex HMAC-SHA1 keyed with the shared secret over nonce,
// username, password, "admin" or "notadmin" and, if given, the user type, with
// NUL bytes between them.
func SharedSecretMAC(secret, nonce, username, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// POST /_synapse/admin/v1/register: the checks are made in Synapse's order, and
// the nonce is spent even when a later check fails.
func (a *API) sharedSecretRegister(w http.ResponseWriter, r *http.Request) error {
	secret := a.cfg.Registration.SharedSecret
	if secret == "" {
		return errSharedSecretOff
	}
	var req sharedSecretRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Nonce == nil {
		return httputil.MissingParam("nonce must be specified")
	}
	if !a.nonces.Take(*req.Nonce) {
		return httputil.Unknown("Unrecognised nonce")
	}
	if req.Username == nil {
		return httputil.BadJSON("username must be specified")
	}
	if len(*req.Username) > 512 || strings.ContainsRune(*req.Username, 0) {
		return httputil.Unknown("Invalid username")
	}
	if req.Password == nil {
		return httputil.BadJSON("password must be specified")
	}
	if len(*req.Password) > 512 || strings.ContainsRune(*req.Password, 0) {
		return httputil.Unknown("Invalid password")
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
		if userType != "support" && userType != "bot" {
			return httputil.Unknown("Invalid user type")
		}
	}
	if req.MAC == nil {
		return httputil.BadJSON("mac must be specified")
	}
	want := SharedSecretMAC(secret, *req.Nonce, *req.Username, *req.Password, req.Admin, userType)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(*req.MAC))) {
		return httputil.Forbidden("HMAC incorrect")
	}
	ctx := r.Context()
	localpart, err := a.accounts.RegisterUser(ctx, *req.Username, *req.Password, req.Admin, userType, req.DisplayName)
	if err != nil {
		return accountErr(err)
	}
	resp := map[string]any{"user_id": a.userID(localpart), "home_server": a.cfg.ServerName}
	if !req.InhibitLogin {
		if resp, err = a.issueLogin(ctx, r, localpart, "", "", req.RefreshToken); err != nil {
			return err
		}
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// GET /_synapse/admin/v1/registration_tokens
func (a *API) listRegistrationTokens(w http.ResponseWriter, r *http.Request, d *Device) error {
	var valid *bool
	if q := r.URL.Query(); q.Has("valid") {
		switch q.Get("valid") {
		case "true":
			t := true
			valid = &t
		case "false":
			f := false
			valid = &f
		default:
			return httputil.InvalidParam("valid must be true or false")
		}
	}
	toks, err := a.accounts.RegistrationTokens(r.Context(), valid, nowMS())
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"registration_tokens": toks})
	return nil
}

// isOpaqueIDChar: the Opaque Identifier Grammar (Appendices) that registration
// tokens use: [0-9A-Za-z._~-].
func isOpaqueIDChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' || c == '_' || c == '~' || c == '-'
}

// optionalInt reads a field that may be absent, null, or a non-negative integer.
// present is false when absent; v is nil for null.
func optionalInt(body map[string]json.RawMessage, name string) (v *int64, present bool, err error) {
	raw, ok := body[name]
	if !ok {
		return nil, false, nil
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, true, nil
	}
	var n int64
	if json.Unmarshal(raw, &n) != nil || n < 0 {
		return nil, true, httputil.InvalidParam("%s must be a non-negative integer or null", name)
	}
	return &n, true, nil
}

// tokenLimits reads and checks uses_allowed and expiry_time.
func tokenLimits(body map[string]json.RawMessage) (accounts.RegistrationTokenUpdate, error) {
	var u accounts.RegistrationTokenUpdate
	var err error
	if u.UsesAllowed, u.SetUsesAllowed, err = optionalInt(body, "uses_allowed"); err != nil {
		return u, err
	}
	if u.ExpiryTime, u.SetExpiryTime, err = optionalInt(body, "expiry_time"); err != nil {
		return u, err
	}
	if u.ExpiryTime != nil && *u.ExpiryTime < nowMS() {
		return u, httputil.InvalidParam("expiry_time must not be in the past")
	}
	return u, nil
}

// POST /_synapse/admin/v1/registration_tokens/new
func (a *API) createRegistrationToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	t := &accounts.RegistrationToken{}
	if raw, ok := body["token"]; ok {
		if json.Unmarshal(raw, &t.Token) != nil || t.Token == "" || len(t.Token) > 64 {
			return httputil.InvalidParam("token must be a string of 1 to 64 characters")
		}
		for i := 0; i < len(t.Token); i++ {
			if !isOpaqueIDChar(t.Token[i]) {
				return httputil.InvalidParam("token may only contain A-Z, a-z, 0-9, '.', '_', '~' and '-'")
			}
		}
	}
	length := int64(16)
	if raw, ok := body["length"]; ok {
		if json.Unmarshal(raw, &length) != nil || length < 1 || length > 64 {
			return httputil.InvalidParam("length must be an integer from 1 to 64")
		}
	}
	lim, err := tokenLimits(body)
	if err != nil {
		return err
	}
	t.UsesAllowed, t.ExpiryTime = lim.UsesAllowed, lim.ExpiryTime
	t, err = a.accounts.CreateRegistrationToken(r.Context(), t, int(length))
	if errors.Is(err, accounts.ErrTokenExists) {
		return httputil.InvalidParam("Token already exists")
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, t)
	return nil
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (a *API) getRegistrationToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	tok := mux.Vars(r)["token"]
	t, err := a.accounts.RegistrationToken(r.Context(), tok)
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No such registration token: %s", tok)
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, t)
	return nil
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
func (a *API) updateRegistrationToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	lim, err := tokenLimits(body)
	if err != nil {
		return err
	}
	tok := mux.Vars(r)["token"]
	t, err := a.accounts.UpdateRegistrationToken(r.Context(), tok, lim)
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No such registration token: %s", tok)
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, t)
	return nil
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (a *API) deleteRegistrationToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	tok := mux.Vars(r)["token"]
	err := a.accounts.DeleteRegistrationToken(r.Context(), tok)
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No such registration token: %s", tok)
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}
