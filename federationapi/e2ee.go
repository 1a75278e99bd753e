package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
	"hearth/httputil"
)

// End-to-end encryption across servers (Server-Server API, "End-to-End
// Encryption" and "Send-to-device messaging"): the key endpoints answered from
// the E2EE module, remote key queries and claims for the client API, and the
// m.direct_to_device, m.device_list_update and m.signing_key_update EDUs both
// ways.

// E2EEKeys is what the federation API needs from the end-to-end encryption
// module; *e2ee.Service implements it.
type E2EEKeys interface {
	IsLocal(userID id.UserID) bool
	QueryLocalKeys(ctx context.Context, requester id.UserID, req map[id.UserID][]id.DeviceID) (*e2ee.QueryResult, error)
	ClaimLocalKeys(ctx context.Context, req map[id.UserID]map[id.DeviceID]string) (e2ee.ClaimResult, error)
	UserDevices(ctx context.Context, userID id.UserID) (int64, *e2ee.QueryResult, error)
	DeliverToDevice(ctx context.Context, sender id.UserID, evType string, msgs e2ee.ToDeviceMessages) error
	RemoteDeviceListChanged(ctx context.Context, userID id.UserID) error
	Subscribe(fn func(e2ee.Change))
}

var _ E2EEKeys = (*e2ee.Service)(nil)

// EDU types of end-to-end encryption.
const (
	eduDirectToDevice = "m.direct_to_device"
	eduDeviceList     = "m.device_list_update"
	eduSigningKey     = "m.signing_key_update"
)

// Bounds of inbound key requests.
const (
	maxKeyQueryUsers = 1000
	maxKeyClaimKeys  = 10_000
	// deviceUpdateTimeout bounds the work of sending one device-list change.
	deviceUpdateTimeout = 30 * time.Second
)

// EnableE2EE serves the key endpoints from keys, consumes the E2EE EDUs and
// sends local users' device-list changes to the servers sharing a room with
// them. It is called once, before the server takes requests.
func (a *API) EnableE2EE(r httputil.Routers, keys E2EEKeys) {
	a.keys = keys
	f := r.Federation
	f.HandleFunc("/v1/user/devices/{userId}", a.authed(a.getUserDevices)).Methods(http.MethodGet)
	f.HandleFunc("/v1/user/keys/query", a.authed(a.postUserKeysQuery)).Methods(http.MethodPost)
	f.HandleFunc("/v1/user/keys/claim", a.authed(a.postUserKeysClaim)).Methods(http.MethodPost)
	a.RegisterEDUHandler(eduDirectToDevice, EDUHandlerFunc(a.handleDirectToDevice))
	a.RegisterEDUHandler(eduDeviceList, EDUHandlerFunc(a.handleDeviceListEDU))
	a.RegisterEDUHandler(eduSigningKey, EDUHandlerFunc(a.handleDeviceListEDU))
	keys.Subscribe(a.onKeysChange)
}

// localUser checks that userID is a valid user ID of this server.
func (a *API) localUser(userID id.UserID) error {
	if _, server, err := userID.ParseAndValidateRelaxed(); err != nil || server != a.serverName {
		return httputil.InvalidParam("User %s is not a user of this server", userID)
	}
	return nil
}

// GET /_matrix/federation/v1/user/devices/{userId}
func (a *API) getUserDevices(w http.ResponseWriter, r *http.Request, origin string) error {
	userID := id.UserID(mux.Vars(r)["userId"])
	if err := a.localUser(userID); err != nil {
		return err
	}
	pos, res, err := a.keys.UserDevices(r.Context(), userID)
	if err != nil {
		return fmt.Errorf("listing devices of %s: %w", userID, err)
	}
	type device struct {
		DeviceID    id.DeviceID     `json:"device_id"`
		Keys        json.RawMessage `json:"keys"`
		DisplayName string          `json:"device_display_name,omitempty"`
	}
	devs := make([]device, 0, len(res.DeviceKeys[userID]))
	for devID, keys := range res.DeviceKeys[userID] {
		devs = append(devs, device{DeviceID: devID, Keys: keys,
			DisplayName: gjson.GetBytes(keys, "unsigned.device_display_name").Str})
	}
	slices.SortFunc(devs, func(x, y device) int { return strings.Compare(string(x.DeviceID), string(y.DeviceID)) })
	out := map[string]any{"user_id": userID, "stream_id": pos, "devices": devs}
	if k, ok := res.MasterKeys[userID]; ok {
		out["master_key"] = k
	}
	if k, ok := res.SelfSigningKeys[userID]; ok {
		out["self_signing_key"] = k
	}
	httputil.RespondJSON(w, http.StatusOK, out)
	return nil
}

// POST /_matrix/federation/v1/user/keys/query
func (a *API) postUserKeysQuery(w http.ResponseWriter, r *http.Request, origin string) error {
	var body struct {
		DeviceKeys map[id.UserID][]id.DeviceID `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.DeviceKeys == nil {
		return httputil.MissingParam("device_keys is required")
	}
	if len(body.DeviceKeys) > maxKeyQueryUsers {
		return httputil.TooLarge("At most %d users can be queried at once", maxKeyQueryUsers)
	}
	for u := range body.DeviceKeys {
		if err := a.localUser(u); err != nil {
			return err
		}
	}
	// A remote server sees only the owners' signatures (requester "").
	res, err := a.keys.QueryLocalKeys(r.Context(), "", body.DeviceKeys)
	if err != nil {
		return fmt.Errorf("querying keys: %w", err)
	}
	res.UserSigningKeys = nil
	httputil.RespondJSON(w, http.StatusOK, res)
	return nil
}

// POST /_matrix/federation/v1/user/keys/claim
func (a *API) postUserKeysClaim(w http.ResponseWriter, r *http.Request, origin string) error {
	var body struct {
		OneTimeKeys map[id.UserID]map[id.DeviceID]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.OneTimeKeys == nil {
		return httputil.MissingParam("one_time_keys is required")
	}
	n := 0
	for u, devs := range body.OneTimeKeys {
		if err := a.localUser(u); err != nil {
			return err
		}
		if n += len(devs); n > maxKeyClaimKeys {
			return httputil.TooLarge("At most %d keys can be claimed at once", maxKeyClaimKeys)
		}
	}
	claimed, err := a.keys.ClaimLocalKeys(r.Context(), body.OneTimeKeys)
	if err != nil {
		return fmt.Errorf("claiming keys: %w", err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed})
	return nil
}

// QueryKeys asks server for the keys of its users in req (POST
// /_matrix/federation/v1/user/keys/query); it implements clientapi.RemoteKeys.
// ctx bounds the request.
func (a *API) QueryKeys(ctx context.Context, server string, req map[id.UserID][]id.DeviceID) (*e2ee.QueryResult, error) {
	res := e2ee.NewQueryResult()
	body := map[string]any{"device_keys": req}
	if err := a.client.MakeRequest(ctx, server, true, http.MethodPost,
		federation.URLPath{"v1", "user", "keys", "query"}, body, res); err != nil {
		return nil, fmt.Errorf("querying keys on %s: %w", server, err)
	}
	// A server answers only for its own users, and never with user-signing keys.
	res.UserSigningKeys = nil
	for u, devs := range res.DeviceKeys {
		if u.Homeserver() != server {
			delete(res.DeviceKeys, u)
			continue
		}
		for devID, keys := range devs {
			if !deviceKeysMatch(keys, u, devID) {
				delete(devs, devID)
			}
		}
	}
	return res, nil
}

// deviceKeysMatch reports whether a device-keys object names the user and
// device it is filed under (Client-Server API, POST /keys/query: clients
// must check it too, but a server should not pass on mismatches).
func deviceKeysMatch(keys json.RawMessage, userID id.UserID, deviceID id.DeviceID) bool {
	g := gjson.ParseBytes(keys)
	return g.IsObject() && g.Get("user_id").Str == string(userID) && g.Get("device_id").Str == string(deviceID)
}

// ClaimKeys claims one-time keys of server's users (POST
// /_matrix/federation/v1/user/keys/claim); it implements clientapi.RemoteKeys.
func (a *API) ClaimKeys(ctx context.Context, server string, req map[id.UserID]map[id.DeviceID]string) (e2ee.ClaimResult, error) {
	var resp struct {
		OneTimeKeys e2ee.ClaimResult `json:"one_time_keys"`
	}
	body := map[string]any{"one_time_keys": req}
	if err := a.client.MakeRequest(ctx, server, true, http.MethodPost,
		federation.URLPath{"v1", "user", "keys", "claim"}, body, &resp); err != nil {
		return nil, fmt.Errorf("claiming keys on %s: %w", server, err)
	}
	out := e2ee.ClaimResult{}
	for u, devs := range resp.OneTimeKeys {
		if u.Homeserver() == server && req[u] != nil {
			out[u] = devs
		}
	}
	return out, nil
}

// SendToDevice queues an m.direct_to_device EDU for server; it implements
// clientapi.RemoteToDevice.
func (a *API) SendToDevice(ctx context.Context, server string, sender id.UserID, evType, messageID string, msgs e2ee.ToDeviceMessages) error {
	return a.SendEDU(ctx, []string{server}, eduDirectToDevice, map[string]any{
		"sender": sender, "type": evType, "message_id": messageID, "messages": msgs,
	})
}

// handleDirectToDevice delivers an m.direct_to_device EDU's messages for local
// users. The sender must belong to the origin server.
func (a *API) handleDirectToDevice(ctx context.Context, origin, _ string, content json.RawMessage) error {
	var edu struct {
		Sender   id.UserID             `json:"sender"`
		Type     string                `json:"type"`
		Messages e2ee.ToDeviceMessages `json:"messages"`
	}
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("decoding m.direct_to_device: %w", err)
	}
	if edu.Sender.Homeserver() != origin {
		return fmt.Errorf("m.direct_to_device sender %s is not of %s", edu.Sender, origin)
	}
	if edu.Type == "" {
		return fmt.Errorf("m.direct_to_device without a type")
	}
	for u := range edu.Messages {
		if !a.keys.IsLocal(u) {
			delete(edu.Messages, u)
		}
	}
	if len(edu.Messages) == 0 {
		return nil
	}
	return a.keys.DeliverToDevice(ctx, edu.Sender, edu.Type, edu.Messages)
}

// handleDeviceListEDU records that a remote user's devices (m.device_list_update)
// or cross-signing keys (m.signing_key_update) changed, so local users sharing a
// room with them see them in device_lists.changed and query their keys again.
// Hearth keeps no copy of remote device lists, so the update's keys, stream_id
// and prev_id are not needed.
func (a *API) handleDeviceListEDU(ctx context.Context, origin, eduType string, content json.RawMessage) error {
	userID := id.UserID(gjson.GetBytes(content, "user_id").Str)
	if userID.Homeserver() != origin {
		return fmt.Errorf("%s for %q is not from its server", eduType, userID)
	}
	// Only users in a room here concern local users; recording others would let
	// a server fill the device-list table with made-up users.
	rooms, err := a.rs.RoomsForUser(ctx, userID, "join")
	if err != nil {
		return fmt.Errorf("listing rooms of %s: %w", userID, err)
	}
	if len(rooms) == 0 {
		return nil
	}
	return a.keys.RemoteDeviceListChanged(ctx, userID)
}

// onKeysChange sends local users' device-list changes to the servers sharing a
// room with them (in the background: subscribers must be quick).
func (a *API) onKeysChange(c e2ee.Change) {
	if c.Kind != e2ee.DeviceListChange || !a.keys.IsLocal(c.User) {
		return
	}
	// The work belongs to the sender: Stop waits for it, and it ends with it.
	s := a.sender
	s.mu.Lock()
	base := s.ctx
	if base == nil {
		base = context.Background() // not started yet: the change is still sent
	} else if base.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(base, deviceUpdateTimeout)
		defer cancel()
		if err := a.sendDeviceListUpdate(ctx, c); err != nil && base.Err() == nil {
			slog.Warn("sending device list update", "user", c.User, "err", err)
		}
	}()
}

// sendDeviceListUpdate sends one change of a local user's devices or
// cross-signing keys (Server-Server API, "Device Management").
func (a *API) sendDeviceListUpdate(ctx context.Context, c e2ee.Change) error {
	dests, err := a.serversSharingRooms(ctx, c.User)
	if err != nil || len(dests) == 0 {
		return err
	}
	devs := make([]id.DeviceID, len(c.Devices))
	copy(devs, c.Devices)
	req := map[id.UserID][]id.DeviceID{c.User: devs}
	if len(devs) == 0 {
		req[c.User] = nil
	}
	res, err := a.keys.QueryLocalKeys(ctx, "", req)
	if err != nil {
		return fmt.Errorf("loading keys of %s: %w", c.User, err)
	}
	if len(c.Devices) == 0 {
		// Only cross-signing keys or signatures changed.
		content := map[string]any{"user_id": c.User}
		if k, ok := res.MasterKeys[c.User]; ok {
			content["master_key"] = k
		}
		if k, ok := res.SelfSigningKeys[c.User]; ok {
			content["self_signing_key"] = k
		}
		return a.SendEDU(ctx, dests, eduSigningKey, content)
	}
	prev := []int64{}
	if c.PrevPos > 0 {
		prev = append(prev, c.PrevPos)
	}
	for _, d := range c.Devices {
		content := map[string]any{"user_id": c.User, "device_id": d, "stream_id": c.Pos, "prev_id": prev}
		keys, ok := res.DeviceKeys[c.User][d]
		if c.Deleted || !ok {
			content["deleted"] = true
		} else {
			content["keys"] = keys
			if name := gjson.GetBytes(keys, "unsigned.device_display_name").Str; name != "" {
				content["device_display_name"] = name
			}
		}
		if err := a.SendEDU(ctx, dests, eduDeviceList, content); err != nil {
			return err
		}
	}
	return nil
}

// serversSharingRooms lists the other servers with users joined to a room
// userID is joined to.
func (a *API) serversSharingRooms(ctx context.Context, userID id.UserID) ([]string, error) {
	rooms, err := a.rs.RoomsForUser(ctx, userID, "join")
	if err != nil {
		return nil, fmt.Errorf("listing rooms of %s: %w", userID, err)
	}
	seen := map[string]struct{}{a.serverName: {}}
	var out []string
	for _, roomID := range rooms {
		servers, err := a.serversInRoom(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, s := range servers {
			if _, ok := seen[s]; !ok {
				seen[s] = struct{}{}
				out = append(out, s)
			}
		}
	}
	return out, nil
}
