package federationapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"hearth/config"
	"hearth/httputil"
)

// ownKeyValidity is how long the keys published at /_matrix/key/v2/server are
// declared valid; the signed response is re-made when less than half is left.
const ownKeyValidity = 24 * time.Hour

// maxNotaryServers bounds how many servers one notary query may name.
const maxNotaryServers = 100

// ownKeys makes and caches the signed response of /_matrix/key/v2/server.
type ownKeys struct {
	serverName string
	key        *config.SigningKey
	now        func() time.Time

	mu         sync.Mutex
	resp       []byte
	validUntil time.Time
}

// response returns the signed key response, valid for at least half of
// ownKeyValidity from now.
func (o *ownKeys) response() ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if o.resp != nil && o.validUntil.Sub(now) > ownKeyValidity/2 {
		return o.resp, nil
	}
	validUntil := now.Add(ownKeyValidity)
	obj := map[string]any{
		"server_name":     o.serverName,
		"valid_until_ts":  validUntil.UnixMilli(),
		"verify_keys":     map[string]any{o.key.ID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(o.key.Public())}},
		"old_verify_keys": map[string]any{},
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	signed, err := signJSON(b, o.serverName, o.key)
	if err != nil {
		return nil, err
	}
	o.resp, o.validUntil = signed, validUntil
	return signed, nil
}

// GET /_matrix/key/v2/server
func (a *API) getServerKeys(w http.ResponseWriter, r *http.Request) error {
	b, err := a.own.response()
	if err != nil {
		return err
	}
	httputil.WriteJSONBytes(w, http.StatusOK, b)
	return nil
}

// GET /_matrix/key/v2/query/{serverName}
func (a *API) getQueryKeys(w http.ResponseWriter, r *http.Request) error {
	server := mux.Vars(r)["serverName"]
	if err := config.ValidateServerName(server); err != nil {
		return httputil.InvalidParam("Bad server name: %v", err)
	}
	minValid := a.keyRing.now()
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return httputil.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		minValid = time.UnixMilli(ms)
	}
	return a.respondNotary(w, r.Context(), map[string]time.Time{server: minValid})
}

// POST /_matrix/key/v2/query
func (a *API) postQueryKeys(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return httputil.MissingParam("server_keys is required")
	}
	if len(req.ServerKeys) > maxNotaryServers {
		return httputil.InvalidParam("At most %d servers may be queried at once", maxNotaryServers)
	}
	now := a.keyRing.now()
	want := make(map[string]time.Time, len(req.ServerKeys))
	for server, keys := range req.ServerKeys {
		if config.ValidateServerName(server) != nil {
			continue
		}
		minValid := now
		for _, c := range keys {
			if c.MinimumValidUntilTS != nil && time.UnixMilli(*c.MinimumValidUntilTS).After(minValid) {
				minValid = time.UnixMilli(*c.MinimumValidUntilTS)
			}
		}
		want[server] = minValid
	}
	return a.respondNotary(w, r.Context(), want)
}

// respondNotary answers a notary query (Server-Server API, "Querying Keys Through
// Another Server"): for each server, its last signed response, refreshed from the
// server itself when older than asked (never through other notaries, so notaries
// cannot loop), served stale when the server is unreachable, and countersigned.
func (a *API) respondNotary(w http.ResponseWriter, ctx context.Context, want map[string]time.Time) error {
	results := make([][]byte, 0, len(want))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for server, minValid := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			b := a.notaryResponse(ctx, server, minValid)
			if b != nil {
				mu.Lock()
				results = append(results, b)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out := make([]byte, 0, 64+len(results)*512)
	out = append(out, `{"server_keys":[`...)
	for i, b := range results {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	out = append(out, "]}"...)
	httputil.WriteJSONBytes(w, http.StatusOK, out)
	return nil
}

// notaryResponse returns the countersigned key response of one server, or nil.
func (a *API) notaryResponse(ctx context.Context, server string, minValid time.Time) []byte {
	if server == a.serverName {
		b, err := a.own.response()
		if err != nil {
			return nil
		}
		return b
	}
	raw, validUntilTS, err := a.store.keyResponse(ctx, server)
	if err != nil {
		return nil
	}
	if raw == nil || time.UnixMilli(validUntilTS).Before(minValid) {
		if err := a.keyRing.refreshDirect(ctx, server); err == nil {
			raw, _, _ = a.store.keyResponse(ctx, server)
		}
	}
	if raw == nil {
		return nil
	}
	signed, err := signJSON(raw, a.serverName, a.key)
	if err != nil {
		return nil
	}
	return signed
}
