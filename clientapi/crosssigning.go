package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/clientapi/e2ee"
	"hearth/httputil"
)

// registerCrossSigningRoutes serves cross-signing key and signature uploads
// (Client-Server API, "Cross-signing"); the keys show in /keys/query.
func (a *API) registerCrossSigningRoutes(r *mux.Router) {
	handle(r, v3R0, "/keys/device_signing/upload", a.authed(a.uploadCrossSigningKeys, 0), http.MethodPost)
	handle(r, v3R0, "/keys/signatures/upload", a.authed(a.uploadSignatures, 0), http.MethodPost)
}

// POST /keys/device_signing/upload. User-interactive auth is needed only to
// replace existing keys: a first upload, or the same keys again, goes through
// without (spec v1.11).
func (a *API) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		e2ee.CrossSigningUpload
		Auth json.RawMessage `json:"auth"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	svc := a.opts.Keys
	ks, err := e2ee.ValidateCrossSigningKeys(d.UserID, &req.CrossSigningUpload)
	if err != nil {
		return keysErr(err)
	}
	needs, err := svc.CrossSigningNeedsAuth(ctx, ks)
	if err != nil {
		return keysErr(err)
	}
	uia := uiaRequest{operation: "device_signing_upload:" + ks.Digest(), localpart: d.Localpart, flows: passwordUIA}
	var sess *accounts.UIASession
	if needs {
		if sess, err = a.userInteractiveAuth(ctx, r, req.Auth, uia); err != nil {
			return err
		}
	}
	err = svc.StoreCrossSigningKeys(ctx, ks, sess != nil)
	if errors.Is(err, e2ee.ErrCrossSigningAuthRequired) {
		// Keys appeared since the check: authenticate after all.
		if sess, err = a.userInteractiveAuth(ctx, r, req.Auth, uia); err != nil {
			return err
		}
		err = svc.StoreCrossSigningKeys(ctx, ks, true)
	}
	if err != nil {
		return keysErr(err)
	}
	if sess != nil {
		logIfErr(ctx, "ending UIA session", a.accounts.DeleteUIASession(ctx, sess.ID))
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /keys/signatures/upload
func (a *API) uploadSignatures(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body map[id.UserID]map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	for u := range body {
		if err := checkUserID(u); err != nil {
			return err
		}
	}
	failures, err := a.opts.Keys.UploadSignatures(r.Context(), d.UserID, body)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"failures": failures})
	return nil
}
