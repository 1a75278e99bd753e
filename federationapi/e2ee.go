package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
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
	LocalDeviceList(ctx context.Context, userID id.UserID, only []id.DeviceID) (*e2ee.DeviceList, error)
	DeliverToDevice(ctx context.Context, sender id.UserID, evType string, msgs e2ee.ToDeviceMessages) error
	Subscribe(fn func(e2ee.Change))
	OnLocalJoin(fn func(e2ee.LocalJoin))
	// The remote device-list cache (devicelist.go).
	ApplyRemoteDeviceUpdate(ctx context.Context, u *e2ee.RemoteDeviceUpdate) (resync bool, err error)
	ApplyRemoteSigningKeyUpdate(ctx context.Context, userID id.UserID, master, selfSigning json.RawMessage) error
	BeginRemoteResync(ctx context.Context, userID id.UserID) (gen int64, err error)
	StoreRemoteDeviceList(ctx context.Context, l *e2ee.DeviceList, gen int64) (stored bool, err error)
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
	a.RegisterEDUHandler(eduSigningKey, EDUHandlerFunc(a.handleSigningKeyEDU))
	keys.Subscribe(a.onKeysChange)
	keys.OnLocalJoin(a.onLocalJoin)
}

// localUser checks that userID is a valid user ID of this server.
func (a *API) localUser(userID id.UserID) error {
	if _, server, err := userID.ParseAndValidateRelaxed(); err != nil || server != a.serverName {
		return httputil.InvalidParam("User %s is not a user of this server", userID)
	}
	return nil
}

// GET /_matrix/federation/v1/user/devices/{userId}: every device of the user,
// with its keys when it has uploaded some (as Synapse answers), and the stream
// position later m.device_list_update EDUs follow on from.
func (a *API) getUserDevices(w http.ResponseWriter, r *http.Request, origin string) error {
	userID := id.UserID(mux.Vars(r)["userId"])
	if err := a.localUser(userID); err != nil {
		return err
	}
	l, err := a.keys.LocalDeviceList(r.Context(), userID, nil)
	if err != nil {
		return fmt.Errorf("listing devices of %s: %w", userID, err)
	}
	type device struct {
		DeviceID    id.DeviceID     `json:"device_id"`
		Keys        json.RawMessage `json:"keys,omitempty"`
		DisplayName string          `json:"device_display_name,omitempty"`
	}
	devs := make([]device, len(l.Devices))
	for i, d := range l.Devices {
		devs[i] = device{DeviceID: d.DeviceID, Keys: d.Keys, DisplayName: d.DisplayName}
	}
	out := map[string]any{"user_id": userID, "stream_id": l.StreamID, "devices": devs}
	if l.MasterKey != nil {
		out["master_key"] = l.MasterKey
	}
	if l.SelfSigningKey != nil {
		out["self_signing_key"] = l.SelfSigningKey
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

// handleDeviceListEDU takes an m.device_list_update EDU: a remote user's
// device was added, changed or deleted. Local users sharing a room with them
// see them in device_lists.changed; the cached list is updated, or fetched
// again when the update does not follow on from it.
func (a *API) handleDeviceListEDU(ctx context.Context, origin, eduType string, content json.RawMessage) error {
	if !gjson.ValidBytes(content) {
		return fmt.Errorf("%s is not JSON", eduType)
	}
	g := gjson.ParseBytes(content)
	u := &e2ee.RemoteDeviceUpdate{
		UserID:      id.UserID(g.Get("user_id").Str),
		DeviceID:    id.DeviceID(g.Get("device_id").Str),
		DisplayName: g.Get("device_display_name").Str,
		StreamID:    g.Get("stream_id").Int(),
		Deleted:     g.Get("deleted").Bool(),
	}
	for _, p := range g.Get("prev_id").Array() {
		u.PrevID = append(u.PrevID, p.Int())
	}
	if k := g.Get("keys"); k.Exists() {
		u.Keys = json.RawMessage(k.Raw)
	}
	if ok, err := a.deviceListConcernsUs(ctx, origin, eduType, u.UserID); !ok || err != nil {
		return err
	}
	resync, err := a.keys.ApplyRemoteDeviceUpdate(ctx, u)
	if err != nil {
		return err
	}
	if resync {
		a.ResyncDeviceLists([]id.UserID{u.UserID})
	}
	return nil
}

// handleSigningKeyEDU takes an m.signing_key_update EDU: a remote user's
// cross-signing keys changed.
func (a *API) handleSigningKeyEDU(ctx context.Context, origin, eduType string, content json.RawMessage) error {
	g := gjson.ParseBytes(content)
	userID := id.UserID(g.Get("user_id").Str)
	if ok, err := a.deviceListConcernsUs(ctx, origin, eduType, userID); !ok || err != nil {
		return err
	}
	var master, selfSigning json.RawMessage
	if k := g.Get("master_key"); k.IsObject() {
		master = json.RawMessage(k.Raw)
	}
	if k := g.Get("self_signing_key"); k.IsObject() {
		selfSigning = json.RawMessage(k.Raw)
	}
	return a.keys.ApplyRemoteSigningKeyUpdate(ctx, userID, master, selfSigning)
}

// deviceListConcernsUs checks that a device-list EDU is about a user of its
// origin, and reports whether the user is in a room here: only those concern
// local users, and recording others would let a server fill the tables with
// made-up users.
func (a *API) deviceListConcernsUs(ctx context.Context, origin, eduType string, userID id.UserID) (bool, error) {
	if _, server, err := userID.ParseAndValidateRelaxed(); err != nil || server != origin {
		return false, fmt.Errorf("%s for %q is not from its server", eduType, userID)
	}
	rooms, err := a.rs.RoomsForUser(ctx, userID, "join")
	if err != nil {
		return false, fmt.Errorf("listing rooms of %s: %w", userID, err)
	}
	return len(rooms) > 0, nil
}

// onKeysChange sends local users' device-list changes to the servers sharing a
// room with them (in the background: subscribers must be quick).
func (a *API) onKeysChange(c e2ee.Change) {
	if c.Kind != e2ee.DeviceListChange || !a.keys.IsLocal(c.User) {
		return
	}
	a.goBackground(func(base context.Context) {
		ctx, cancel := context.WithTimeout(base, deviceUpdateTimeout)
		defer cancel()
		if err := a.sendDeviceListUpdate(ctx, c); err != nil && base.Err() == nil {
			slog.Warn("sending device list update", "user", c.User, "err", err)
		}
	})
}

// sendDeviceListUpdate sends one change of a local user's devices or
// cross-signing keys (Server-Server API, "Device Management"): an
// m.device_list_update per device, with the device's keys and name unless it
// was deleted, or an m.signing_key_update when no device is concerned.
func (a *API) sendDeviceListUpdate(ctx context.Context, c e2ee.Change) error {
	dests, err := a.serversSharingRooms(ctx, c.User)
	if err != nil || len(dests) == 0 {
		return err
	}
	l, err := a.keys.LocalDeviceList(ctx, c.User, c.Devices)
	if err != nil {
		return fmt.Errorf("loading devices of %s: %w", c.User, err)
	}
	if len(c.Devices) == 0 {
		return a.sendSigningKeyUpdate(ctx, dests, l)
	}
	// prev_id is never empty for a change, even the user's first (0): an
	// empty one is the notice sent on joins (sendDeviceListsOnJoin).
	prev := []int64{c.PrevPos}
	for _, d := range c.Devices {
		u := e2ee.RemoteDeviceUpdate{UserID: c.User, DeviceID: d, StreamID: c.Pos, PrevID: prev, Deleted: true}
		if i := slices.IndexFunc(l.Devices, func(x e2ee.DeviceInfo) bool { return x.DeviceID == d }); i >= 0 && !c.Deleted {
			// A device gone since the change is announced as deleted.
			u.Deleted, u.Keys, u.DisplayName = false, l.Devices[i].Keys, l.Devices[i].DisplayName
		}
		if err := a.SendEDU(ctx, dests, eduDeviceList, u); err != nil {
			return err
		}
	}
	return nil
}

// sendSigningKeyUpdate sends a user's cross-signing keys as an
// m.signing_key_update, if they have any.
func (a *API) sendSigningKeyUpdate(ctx context.Context, dests []string, l *e2ee.DeviceList) error {
	if l.MasterKey == nil && l.SelfSigningKey == nil {
		return nil
	}
	content := map[string]any{"user_id": l.UserID}
	if l.MasterKey != nil {
		content["master_key"] = l.MasterKey
	}
	if l.SelfSigningKey != nil {
		content["self_signing_key"] = l.SelfSigningKey
	}
	return a.SendEDU(ctx, dests, eduSigningKey, content)
}

// serversSharingRooms lists the other servers with users joined to a room
// userID is joined to.
func (a *API) serversSharingRooms(ctx context.Context, userID id.UserID) ([]string, error) {
	return a.serversSharingRoomsExcept(ctx, userID, "")
}

// serversSharingRoomsExcept lists the other servers with users joined to a
// room userID is joined to, leaving out the room except.
func (a *API) serversSharingRoomsExcept(ctx context.Context, userID id.UserID, except id.RoomID) ([]string, error) {
	rooms, err := a.rs.RoomsForUser(ctx, userID, "join")
	if err != nil {
		return nil, fmt.Errorf("listing rooms of %s: %w", userID, err)
	}
	seen := map[string]struct{}{a.serverName: {}}
	var out []string
	for _, roomID := range rooms {
		if roomID == except {
			continue
		}
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
