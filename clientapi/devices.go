package clientapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerDeviceRoutes serves device management (Client-Server API, "Device
// Management").
func (a *API) registerDeviceRoutes(r *mux.Router) {
	handle(r, v3R0, "/devices", a.authed(a.listDevices, allowGuests), http.MethodGet)
	handle(r, v3R0, "/devices/{deviceId}", a.authed(a.getDevice, allowGuests), http.MethodGet)
	handle(r, v3R0, "/devices/{deviceId}", a.authed(a.putDevice, allowGuests), http.MethodPut)
	handle(r, v3R0, "/devices/{deviceId}", a.authed(a.deleteDevice, 0), http.MethodDelete)
	handle(r, v3R0, "/delete_devices", a.authed(a.deleteDevicesHandler, 0), http.MethodPost)
}

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d *accounts.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// GET /devices
func (a *API) listDevices(w http.ResponseWriter, r *http.Request, d *Device) error {
	devs, err := a.accounts.Devices(r.Context(), d.Localpart)
	if err != nil {
		return internalErr(err)
	}
	out := make([]deviceJSON, len(devs))
	for i := range devs {
		out[i] = toDeviceJSON(&devs[i])
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"devices": out})
	return nil
}

// GET /devices/{deviceId}
func (a *API) getDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	dev, err := a.accounts.Device(r.Context(), d.Localpart, mux.Vars(r)["deviceId"])
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("No such device")
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, toDeviceJSON(dev))
	return nil
}

// PUT /devices/{deviceId}
func (a *API) putDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	deviceID := mux.Vars(r)["deviceId"]
	if req.DisplayName == nil {
		// Nothing to change, but the device must exist.
		if _, err := a.accounts.Device(ctx, d.Localpart, deviceID); errors.Is(err, accounts.ErrNotFound) {
			return httputil.NotFound("No such device")
		} else if err != nil {
			return internalErr(err)
		}
	} else {
		if err := validateDeviceFields(nil, *req.DisplayName); err != nil {
			return err
		}
		err := a.accounts.SetDeviceDisplayName(ctx, d.Localpart, deviceID, *req.DisplayName)
		if errors.Is(err, accounts.ErrNotFound) {
			return httputil.NotFound("No such device")
		}
		if err != nil {
			return internalErr(err)
		}
		// The name is public device information: others see the device list change.
		if a.opts.Keys != nil {
			if err := a.opts.Keys.DeviceChanged(ctx, d.UserID, id.DeviceID(deviceID)); err != nil {
				return internalErr(err)
			}
		}
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /devices/{deviceId}
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	deviceID := mux.Vars(r)["deviceId"]
	return a.uiaDeleteDevices(w, r, d, req.Auth, []string{deviceID})
}

// POST /delete_devices
func (a *API) deleteDevicesHandler(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices *[]string       `json:"devices"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return httputil.MissingParam("Missing devices")
	}
	return a.uiaDeleteDevices(w, r, d, req.Auth, *req.Devices)
}

// maxDeleteDevices bounds one /delete_devices request.
const maxDeleteDevices = 1000

func (a *API) uiaDeleteDevices(w http.ResponseWriter, r *http.Request, d *Device, auth json.RawMessage, deviceIDs []string) error {
	if len(deviceIDs) > maxDeleteDevices {
		return httputil.InvalidParam("At most %d devices can be deleted at once", maxDeleteDevices)
	}
	ids := slices.Clone(deviceIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	ctx := r.Context()
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	op := "delete_devices:" + hex.EncodeToString(sum[:])
	sess, err := a.userInteractiveAuth(ctx, r, auth, uiaRequest{operation: op, localpart: d.Localpart, flows: passwordUIA})
	if err != nil {
		return err
	}
	if err := a.deleteDevices(ctx, d.Localpart, ids); err != nil {
		return err
	}
	logIfErr(ctx, "ending UIA session", a.accounts.DeleteUIASession(ctx, sess.ID))
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}
