package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerAccountRoutes serves account management (Client-Server API, "Account
// management", "Current account information", "Adding Account Administrative
// Contact Information").
func (a *API) registerAccountRoutes(r *mux.Router) {
	handle(r, v3R0, "/account/whoami", a.authed(a.whoami, allowGuests), http.MethodGet)
	handle(r, v3R0, "/account/password", a.authed(a.changePassword, 0), http.MethodPost)
	handle(r, v3R0, "/account/deactivate", a.authed(a.deactivate, 0), http.MethodPost)
	handle(r, v3R0, "/account/3pid", a.authed(a.listThreePIDs, 0), http.MethodGet)
}

// GET /account/whoami
func (a *API) whoami(w http.ResponseWriter, r *http.Request, d *Device) error {
	resp := map[string]any{"user_id": d.UserID, "is_guest": d.IsGuest}
	if d.DeviceID != "" { // application services may act without a device
		resp["device_id"] = d.DeviceID
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// POST /account/password
func (a *API) changePassword(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   *string         `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return httputil.MissingParam("Missing new_password")
	}
	if len(*req.NewPassword) > 72 {
		return httputil.InvalidParam("Passwords may be at most 72 bytes long")
	}
	ctx := r.Context()
	sess, err := a.userInteractiveAuth(ctx, r, req.Auth, uiaRequest{operation: "password", localpart: d.Localpart, flows: passwordUIA})
	if err != nil {
		return err
	}
	// logout_devices defaults to true: other devices and their tokens go, this
	// one stays.
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	deleted, err := a.accounts.SetPassword(ctx, d.Localpart, *req.NewPassword, logout, string(d.DeviceID))
	if err != nil {
		return accountErr(err)
	}
	logIfErr(ctx, "ending UIA session", a.accounts.DeleteUIASession(ctx, sess.ID))
	if len(deleted) > 0 {
		a.tokens.invalidate(d.Localpart, deleted)
		a.afterDevicesDeleted(ctx, d.Localpart, deleted)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /account/deactivate: the account keeps its user ID (never handed out
// again) but loses devices, tokens, profile, account data and push rules, and
// leaves its rooms.
func (a *API) deactivate(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	if _, err := a.userInteractiveAuth(ctx, r, req.Auth, uiaRequest{operation: "deactivate", localpart: d.Localpart, flows: passwordUIA}); err != nil {
		return err
	}
	deleted, err := a.accounts.Deactivate(ctx, d.Localpart, req.Erase)
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No such account")
	}
	if err != nil {
		return internalErr(err)
	}
	a.tokens.invalidate(d.Localpart, nil)
	a.pushRules.invalidate(d.Localpart)
	a.afterDevicesDeleted(ctx, d.Localpart, deleted)
	if a.opts.Rooms != nil {
		logIfErr(ctx, "leaving rooms of deactivated user", a.opts.Rooms.LeaveAllRooms(ctx, d.UserID))
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
	return nil
}

// GET /account/3pid: Hearth binds no third-party identifiers.
func (a *API) listThreePIDs(w http.ResponseWriter, r *http.Request, d *Device) error {
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
	return nil
}
