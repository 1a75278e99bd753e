package clientapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/gorilla/mux"

	"hearth/clientapi/e2ee"
	"hearth/httputil"
)

// registerToDeviceRoutes serves Send-to-Device messaging (Client-Server API,
// "Send-to-Device messaging"); delivery is through /sync's to_device.
func (a *API) registerToDeviceRoutes(r *mux.Router) {
	handle(r, v3R0, "/sendToDevice/{eventType}/{txnId}", a.authed(a.sendToDevice, allowGuests), http.MethodPut)
}

// maxToDeviceTargets bounds the devices one /sendToDevice request names.
const maxToDeviceTargets = 10_000

// PUT /sendToDevice/{eventType}/{txnId}
func (a *API) sendToDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	vars := mux.Vars(r)
	evType, txnID := vars["eventType"], vars["txnId"]
	if evType == "" || txnID == "" {
		return httputil.InvalidParam("Missing event type or transaction ID")
	}
	var req struct {
		Messages e2ee.ToDeviceMessages `json:"messages"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Messages == nil {
		return httputil.MissingParam("Missing messages")
	}
	n := 0
	remote := map[string]e2ee.ToDeviceMessages{}
	for u, devs := range req.Messages {
		if err := checkUserID(u); err != nil {
			return err
		}
		if n += len(devs); n > maxToDeviceTargets {
			return httputil.TooLarge("At most %d devices can be sent to at once", maxToDeviceTargets)
		}
		if !a.opts.Keys.IsLocal(u) {
			srv := u.Homeserver()
			if remote[srv] == nil {
				remote[srv] = e2ee.ToDeviceMessages{}
			}
			remote[srv][u] = devs
		}
	}
	ctx := r.Context()
	fresh, err := a.opts.Keys.SendToDevice(ctx, d.UserID, evType, req.Messages, &e2ee.Txn{DeviceID: d.DeviceID, ID: txnID})
	if err != nil {
		return keysErr(err)
	}
	if fresh && len(remote) > 0 {
		a.sendRemoteToDevice(ctx, d, evType, txnID, remote)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// sendRemoteToDevice hands messages for other servers to federation, which
// queues them; without federation they are dropped.
func (a *API) sendRemoteToDevice(ctx context.Context, d *Device, evType, txnID string, remote map[string]e2ee.ToDeviceMessages) {
	if a.opts.RemoteToDevice == nil {
		slog.DebugContext(ctx, "dropping to-device messages for other servers: no federation", "servers", len(remote))
		return
	}
	// message_id must be unique per sender; the sending device and its txnId are.
	msgID := string(d.DeviceID) + ":" + txnID
	for srv, msgs := range remote {
		logIfErr(ctx, "sending to-device messages", a.opts.RemoteToDevice.SendToDevice(ctx, srv, d.UserID, evType, msgID, msgs))
	}
}
