package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// errRegistrationDisabled is the answer when nobody may register.
var errRegistrationDisabled = httputil.Forbidden("Registration is disabled on this server")

// registrationFlows returns the UIA flows /register offers: m.login.dummy when
// registration is open; otherwise m.login.registration_token once an admin has
// made a registration token; otherwise none (registration is closed).
func (a *API) registrationFlows(ctx context.Context) ([][]string, error) {
	if a.cfg.Registration.Open {
		return [][]string{{stageDummy}}, nil
	}
	has, err := a.accounts.HasRegistrationTokens(ctx)
	if err != nil {
		return nil, internalErr(err)
	}
	if !has {
		return nil, errRegistrationDisabled
	}
	return [][]string{{stageRegToken}}, nil
}

type registerRequest struct {
	// Type is m.login.application_service for application services
	// (appservice.go); otherwise absent.
	Type                     string          `json:"type"`
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 *string         `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

// POST /register
func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	as := a.requestAppService(r)
	if as == nil || as.RateLimited {
		if err := a.registerLimit.check(r); err != nil {
			return err
		}
	}
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return a.registerGuest(w, r)
	default:
		return httputil.InvalidParam("Unknown kind %q: expected user or guest", kind)
	}
	var req registerRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	if req.Type == appServiceLoginType {
		return a.registerAppService(w, r, as, &req)
	}
	ctx := r.Context()
	flows, err := a.registrationFlows(ctx)
	if err != nil {
		return err
	}
	// "Homeservers MUST perform the relevant checks and return these codes
	// before performing User-Interactive Authentication."
	localpart := ""
	if req.Username != nil {
		if localpart, err = a.checkUsername(ctx, *req.Username); err != nil {
			return err
		}
	}
	if req.Password != nil && len(*req.Password) > 72 {
		return httputil.InvalidParam("Passwords may be at most 72 bytes long")
	}
	if err := validateDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	sess, err := a.userInteractiveAuth(ctx, r, req.Auth, uiaRequest{operation: "register", flows: flows})
	if err != nil {
		return err
	}
	if req.Password == nil || *req.Password == "" {
		return httputil.MissingParam("Missing password")
	}
	generated := localpart == ""
	for attempt := 0; ; attempt++ {
		if generated {
			localpart = randomNumericLocalpart()
		}
		err = a.accounts.CreateAccount(ctx, accounts.NewAccount{Localpart: localpart, Password: *req.Password, UIASession: sess.ID})
		if errors.Is(err, accounts.ErrUserInUse) && generated && attempt < 5 {
			continue
		}
		break
	}
	if err != nil {
		return accountErr(err)
	}
	deviceID := ""
	if req.DeviceID != nil {
		deviceID = *req.DeviceID
	}
	resp := map[string]any{"user_id": a.userID(localpart), "home_server": a.cfg.ServerName}
	if !req.InhibitLogin {
		if resp, err = a.issueLogin(ctx, r, localpart, deviceID, req.InitialDeviceDisplayName, req.RefreshToken); err != nil {
			return err
		}
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// registerGuest makes a guest account (Client-Server API, "Guest Access"):
// everything but initial_device_display_name is ignored, and no UIA applies.
func (a *API) registerGuest(w http.ResponseWriter, r *http.Request) error {
	if !a.cfg.Registration.AllowGuests {
		return httputil.GuestAccessForb("Guest access is disabled on this server")
	}
	var req struct {
		InitialDeviceDisplayName string `json:"initial_device_display_name"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	if err := validateDeviceFields(nil, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	ctx := r.Context()
	var localpart string
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		localpart = randomNumericLocalpart()
		err = a.accounts.CreateAccount(ctx, accounts.NewAccount{Localpart: localpart, Guest: true})
		if !errors.Is(err, accounts.ErrUserInUse) {
			break
		}
	}
	if err != nil {
		return accountErr(err)
	}
	resp, err := a.issueLogin(ctx, r, localpart, "", req.InitialDeviceDisplayName, false)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// randomNumericLocalpart makes a localpart for users who did not choose one.
// Purely numeric localparts are reserved for these, so they cannot clash with
// chosen usernames.
func randomNumericLocalpart() string {
	return accounts.RandomDigits(12)
}

// checkUsername applies the registration rules to a desired username and returns
// the localpart: lower-cased (Appendices, "User Identifiers": homeservers
// downcase usernames when creating user IDs), within the grammar and length,
// not purely numeric (reserved for generated IDs), and not taken.
func (a *API) checkUsername(ctx context.Context, username string) (string, error) {
	lp := strings.ToLower(username)
	if err := a.accounts.ValidateLocalpart(lp); err != nil {
		return "", httputil.InvalidUsername("%s", strings.TrimPrefix(err.Error(), accounts.ErrInvalidUsername.Error()+": "))
	}
	if strings.Trim(lp, "0123456789") == "" {
		return "", httputil.InvalidUsername("Numeric user IDs are reserved for generated accounts")
	}
	if a.cfg.IsReservedLocalpart(lp) {
		return "", httputil.UserInUse("User ID already taken") // the server notices user
	}
	if err := a.checkNotExclusive(a.userID(lp), nil); err != nil {
		return "", err
	}
	taken, err := a.accounts.Exists(ctx, lp)
	if err != nil {
		return "", internalErr(err)
	}
	if taken {
		return "", httputil.UserInUse("User ID already taken")
	}
	return lp, nil
}

// accountErr maps account-creation errors to Matrix errors.
func accountErr(err error) error {
	switch {
	case errors.Is(err, accounts.ErrUserInUse):
		return httputil.UserInUse("User ID already taken")
	case errors.Is(err, accounts.ErrInvalidUsername):
		return httputil.InvalidUsername("%s", err.Error())
	case errors.Is(err, accounts.ErrPasswordTooLong):
		return httputil.InvalidParam("Passwords may be at most 72 bytes long")
	}
	return internalErr(err)
}

// GET /register/available
func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) error {
	if err := a.registerLimit.check(r); err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("username") {
		return httputil.MissingParam("Missing username")
	}
	if _, err := a.registrationFlows(r.Context()); err != nil {
		return err
	}
	if _, err := a.checkUsername(r.Context(), q.Get("username")); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]bool{"available": true})
	return nil
}

// GET /register/m.login.registration_token/validity
func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if err := a.registerLimit.check(r); err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("token") {
		return httputil.MissingParam("Missing token")
	}
	ctx := r.Context()
	if _, err := a.registrationFlows(ctx); err != nil {
		return err
	}
	valid := false
	t, err := a.accounts.RegistrationToken(ctx, q.Get("token"))
	switch {
	case err == nil:
		valid = t.Valid(nowMS())
	case !errors.Is(err, accounts.ErrNotFound):
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]bool{"valid": valid})
	return nil
}
