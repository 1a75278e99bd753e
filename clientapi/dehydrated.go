package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
	"hearth/httputil"
)

// msc3814Prefix is where the dehydrated-device endpoints live until MSC3814 is
// in the spec; Element uses them.
const msc3814Prefix = "/unstable/org.matrix.msc3814.v1"

// registerDehydratedDeviceRoutes serves MSC3814 dehydrated devices.
func (a *API) registerDehydratedDeviceRoutes(r *mux.Router) {
	r.HandleFunc(msc3814Prefix+"/dehydrated_device", a.authed(a.getDehydratedDevice, 0)).Methods(http.MethodGet)
	r.HandleFunc(msc3814Prefix+"/dehydrated_device", a.authed(a.putDehydratedDevice, 0)).Methods(http.MethodPut)
	r.HandleFunc(msc3814Prefix+"/dehydrated_device", a.authed(a.deleteDehydratedDevice, 0)).Methods(http.MethodDelete)
	// The device ID is a curve25519 key in base64 and may hold "/": it is the
	// rest of the path before /events. The MSC first had POST with the token in
	// the body; later drafts use GET with a query parameter. Both are served.
	r.HandleFunc(msc3814Prefix+"/dehydrated_device/{deviceId:.+}/events", a.authed(a.dehydratedDeviceEvents, 0)).Methods(http.MethodPost, http.MethodGet)
}

// GET /dehydrated_device
func (a *API) getDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	dd, err := a.opts.Keys.GetDehydratedDevice(r.Context(), d.UserID)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, dd)
	return nil
}

// PUT /dehydrated_device
func (a *API) putDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		DeviceID    id.DeviceID     `json:"device_id"`
		DeviceData  json.RawMessage `json:"device_data"`
		DisplayName *string         `json:"initial_device_display_name"`
		e2ee.UploadRequest
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.DisplayName != nil && len(*req.DisplayName) > maxDisplayNameLen {
		return httputil.InvalidParam("initial_device_display_name is too long")
	}
	if err := a.opts.Keys.PutDehydratedDevice(r.Context(), d.UserID, req.DeviceID, req.DeviceData, req.DisplayName, &req.UploadRequest); err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.DeviceID{"device_id": req.DeviceID})
	return nil
}

// maxDisplayNameLen bounds a dehydrated device's display name.
const maxDisplayNameLen = 256

// DELETE /dehydrated_device
func (a *API) deleteDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	dev, err := a.opts.Keys.DeleteDehydratedDevice(r.Context(), d.UserID)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.DeviceID{"device_id": dev})
	return nil
}

// POST or GET /dehydrated_device/{deviceId}/events
func (a *API) dehydratedDeviceEvents(w http.ResponseWriter, r *http.Request, d *Device) error {
	next := r.URL.Query().Get("next_batch")
	if r.Method == http.MethodPost {
		var req struct {
			NextBatch *string `json:"next_batch"`
		}
		if err := decodeOptionalJSON(r, &req); err != nil {
			return err
		}
		if req.NextBatch != nil {
			next = *req.NextBatch
		}
	}
	evs, nb, err := a.opts.Keys.DehydratedDeviceEvents(r.Context(), d.UserID, id.DeviceID(mux.Vars(r)["deviceId"]), next)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"events": evs, "next_batch": nb})
	return nil
}
