package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
	"hearth/clientapi/syncstream"
	"hearth/httputil"
)

// RemoteKeys reaches other servers for their users' keys (Server-Server API,
// "End-to-End Encryption": POST /user/keys/query and /user/keys/claim). It is
// implemented by the federation API; nil until it exists, and remote users then
// land in the answers' failures.
type RemoteKeys interface {
	QueryKeys(ctx context.Context, server string, req map[id.UserID][]id.DeviceID) (*e2ee.QueryResult, error)
	ClaimKeys(ctx context.Context, server string, req map[id.UserID]map[id.DeviceID]string) (e2ee.ClaimResult, error)
}

// DeviceListResyncer refreshes cached device lists of remote users from their
// servers in the background; the federation API's RemoteKeys implements it.
type DeviceListResyncer interface {
	ResyncDeviceLists(users []id.UserID)
}

// RemoteToDevice sends to-device messages to users on another server (the
// m.direct_to_device EDU). It is implemented by the federation API; nil until
// it exists, and such messages are then dropped.
type RemoteToDevice interface {
	SendToDevice(ctx context.Context, server string, sender id.UserID, evType, messageID string, msgs e2ee.ToDeviceMessages) error
}

// registerE2EERoutes serves the end-to-end encryption module (Client-Server API,
// "End-to-End Encryption", "Send-to-Device messaging", "Server-side key
// backups", and MSC3814 dehydrated devices) when a keys service is configured.
func (a *API) registerE2EERoutes(r *mux.Router) {
	if a.opts.Keys == nil {
		return
	}
	handle(r, v3R0, "/keys/upload", a.authed(a.uploadKeys, allowGuests), http.MethodPost)
	handle(r, v3R0, "/keys/query", a.authed(a.queryKeys, allowGuests), http.MethodPost)
	handle(r, v3R0, "/keys/claim", a.authed(a.claimKeys, allowGuests), http.MethodPost)
	handle(r, v3R0, "/keys/changes", a.authed(a.keyChanges, 0), http.MethodGet)
	a.registerToDeviceRoutes(r)
	a.registerCrossSigningRoutes(r)
	a.registerBackupRoutes(r)
	a.registerDehydratedDeviceRoutes(r)
}

// keysErr passes Matrix errors through and turns anything else into a 500.
func keysErr(err error) error {
	var me *httputil.Error
	if err == nil || errors.As(err, &me) {
		return err
	}
	return internalErr(err)
}

// POST /keys/upload
func (a *API) uploadKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	if d.DeviceID == "" {
		// An application service acting without ?device_id= (appservice.go).
		return httputil.Unknown("To upload keys, you must pass device_id when authenticating")
	}
	var req e2ee.UploadRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	counts, err := a.opts.Keys.UploadKeys(r.Context(), d.UserID, d.DeviceID, &req)
	if err != nil {
		return keysErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
	return nil
}

// Bounds of the timeout of /keys/query and /keys/claim for remote servers.
const (
	defaultRemoteKeysTimeout = 10 * time.Second
	maxRemoteKeysTimeout     = 60 * time.Second
)

func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultRemoteKeysTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, maxRemoteKeysTimeout)
}

// remoteFailure is a failures entry for a server that could not be asked.
func remoteFailure(err error) map[string]any {
	if err == nil {
		return map[string]any{"status": http.StatusServiceUnavailable, "message": "Federation is not available"}
	}
	return map[string]any{"status": http.StatusServiceUnavailable, "message": err.Error()}
}

// checkUserID validates a user ID from a request body.
func checkUserID(u id.UserID) error {
	if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
		return httputil.InvalidParam("Invalid user ID %q", u)
	}
	return nil
}

// queryResponse is the body of a /keys/query answer.
type queryResponse struct {
	*e2ee.QueryResult
	Failures map[string]map[string]any `json:"failures"`
}

// POST /keys/query
func (a *API) queryKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Timeout    *int64                      `json:"timeout"`
		DeviceKeys map[id.UserID][]id.DeviceID `json:"device_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return httputil.MissingParam("Missing device_keys")
	}
	ctx := r.Context()
	local := map[id.UserID][]id.DeviceID{}
	remote := map[string]map[id.UserID][]id.DeviceID{}
	for u, devs := range req.DeviceKeys {
		if err := checkUserID(u); err != nil {
			return err
		}
		if a.opts.Keys.IsLocal(u) {
			local[u] = devs
			continue
		}
		srv := u.Homeserver()
		if remote[srv] == nil {
			remote[srv] = map[id.UserID][]id.DeviceID{}
		}
		remote[srv][u] = devs
	}
	res, err := a.opts.Keys.QueryLocalKeys(ctx, d.UserID, local)
	if err != nil {
		return keysErr(err)
	}
	if len(remote) > 0 {
		a.cachedRemoteKeys(ctx, d.UserID, remote, res)
	}
	out := queryResponse{QueryResult: res, Failures: map[string]map[string]any{}}
	fanOut(ctx, remote, remoteTimeout(req.Timeout), a.opts.RemoteKeys == nil,
		func(ctx context.Context, srv string, q map[id.UserID][]id.DeviceID) (*e2ee.QueryResult, error) {
			return a.opts.RemoteKeys.QueryKeys(ctx, srv, q)
		},
		func(srv string, rr *e2ee.QueryResult, err error) {
			if err != nil || rr == nil {
				out.Failures[srv] = remoteFailure(err)
				return
			}
			// Keep only what was asked about users of that server.
			for u, devs := range rr.DeviceKeys {
				if u.Homeserver() == srv && remote[srv][u] != nil {
					res.DeviceKeys[u] = devs
				}
			}
			for _, m := range []struct{ from, to map[id.UserID]json.RawMessage }{
				{rr.MasterKeys, res.MasterKeys}, {rr.SelfSigningKeys, res.SelfSigningKeys},
			} {
				for u, k := range m.from {
					if u.Homeserver() == srv && remote[srv][u] != nil {
						m.to[u] = k
					}
				}
			}
		})
	httputil.RespondJSON(w, http.StatusOK, out)
	return nil
}

// cachedRemoteKeys answers, from the remote device-list cache, for the remote
// users it can (those sharing a room with requester, with a fresh entry): their
// keys go into res and they are taken out of remote, which is left with the
// users to ask their servers about. Users who share a room with requester but
// are not cached are fetched in the background for next time. A failing cache
// only means asking the servers.
func (a *API) cachedRemoteKeys(ctx context.Context, requester id.UserID, remote map[string]map[id.UserID][]id.DeviceID, res *e2ee.QueryResult) {
	want := map[id.UserID][]id.DeviceID{}
	for _, users := range remote {
		for u, devs := range users {
			want[u] = devs
		}
	}
	cached, resync, err := a.opts.Keys.CachedRemoteKeys(ctx, requester, want)
	if err != nil {
		slog.WarnContext(ctx, "reading cached remote device lists", "err", err)
		return
	}
	for u, devs := range cached.DeviceKeys {
		res.DeviceKeys[u] = devs
		if k, ok := cached.MasterKeys[u]; ok {
			res.MasterKeys[u] = k
		}
		if k, ok := cached.SelfSigningKeys[u]; ok {
			res.SelfSigningKeys[u] = k
		}
		srv := u.Homeserver()
		delete(remote[srv], u)
		if len(remote[srv]) == 0 {
			delete(remote, srv)
		}
	}
	if r, ok := a.opts.RemoteKeys.(DeviceListResyncer); ok && len(resync) > 0 {
		r.ResyncDeviceLists(resync)
	}
}

// fanOut asks each remote server concurrently, bounded by timeout, and hands
// each answer to done one at a time. With unavailable set, every server fails.
func fanOut[Q, R any](ctx context.Context, remote map[string]Q, timeout time.Duration, unavailable bool,
	ask func(context.Context, string, Q) (R, error), done func(string, R, error)) {
	var zero R
	if unavailable {
		for srv := range remote {
			done(srv, zero, nil)
		}
		return
	}
	if len(remote) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, q := range remote {
		wg.Go(func() {
			res, err := safeAsk(ctx, srv, q, ask)
			if err == nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				done(srv, zero, err)
			} else {
				done(srv, res, nil)
			}
		})
	}
	wg.Wait()
}

// safeAsk calls a federation collaborator, turning a panic into an error.
func safeAsk[Q, R any](ctx context.Context, srv string, q Q, ask func(context.Context, string, Q) (R, error)) (res R, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errors.New("internal error asking " + srv)
		}
	}()
	return ask(ctx, srv, q)
}

// POST /keys/claim
func (a *API) claimKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Timeout     *int64                               `json:"timeout"`
		OneTimeKeys map[id.UserID]map[id.DeviceID]string `json:"one_time_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return httputil.MissingParam("Missing one_time_keys")
	}
	ctx := r.Context()
	local := map[id.UserID]map[id.DeviceID]string{}
	remote := map[string]map[id.UserID]map[id.DeviceID]string{}
	for u, devs := range req.OneTimeKeys {
		if err := checkUserID(u); err != nil {
			return err
		}
		if a.opts.Keys.IsLocal(u) {
			local[u] = devs
			continue
		}
		srv := u.Homeserver()
		if remote[srv] == nil {
			remote[srv] = map[id.UserID]map[id.DeviceID]string{}
		}
		remote[srv][u] = devs
	}
	claimed, err := a.opts.Keys.ClaimLocalKeys(ctx, local)
	if err != nil {
		return keysErr(err)
	}
	failures := map[string]map[string]any{}
	fanOut(ctx, remote, remoteTimeout(req.Timeout), a.opts.RemoteKeys == nil,
		func(ctx context.Context, srv string, q map[id.UserID]map[id.DeviceID]string) (e2ee.ClaimResult, error) {
			return a.opts.RemoteKeys.ClaimKeys(ctx, srv, q)
		},
		func(srv string, rr e2ee.ClaimResult, err error) {
			if err != nil || rr == nil {
				failures[srv] = remoteFailure(err)
				return
			}
			for u, devs := range rr {
				if u.Homeserver() == srv && remote[srv][u] != nil {
					claimed[u] = devs
				}
			}
		})
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed, "failures": failures})
	return nil
}

// GET /keys/changes?from=&to=
func (a *API) keyChanges(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	fromS, toS := q.Get("from"), q.Get("to")
	if fromS == "" {
		return httputil.MissingParam("Missing from")
	}
	from, err := syncstream.ParseToken(fromS)
	if err != nil {
		return httputil.InvalidParam("Invalid from token")
	}
	// Without a to token, changes are read to the newest.
	upto, roomTo := a.opts.Keys.Position(), int64(math.MaxInt64)
	if toS != "" {
		to, err := syncstream.ParseToken(toS)
		if err != nil {
			return httputil.InvalidParam("Invalid to token")
		}
		upto, roomTo = min(upto, to.E2EE), to.Events
	}
	changed, left, err := a.opts.Keys.DeviceListChanges(r.Context(), d.UserID, from.E2EE, upto, from.Events, roomTo)
	if err != nil {
		return keysErr(err)
	}
	if changed == nil {
		changed = []id.UserID{}
	}
	if left == nil {
		left = []id.UserID{}
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
	return nil
}
