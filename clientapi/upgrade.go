package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/roomversion"
)

// Room upgrades (Client-Server API, "Room Upgrades", "Server behaviour").

// transferredState is the state copied into the replacement room: the spec's
// recommended list (membership is never copied; bans are, separately).
var transferredState = []string{
	"m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.guest_access", "m.room.history_visibility", "m.room.join_rules",
}

// POST /rooms/{roomId}/upgrade
func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.NewVersion == "" {
		return httputil.BadJSON("new_version is required")
	}
	v, ok := roomversion.Lookup(id.RoomVersion(body.NewVersion))
	if !ok {
		return httputil.UnsupportedRoomV("Room version %q is not supported by this server", body.NewVersion)
	}
	var creators []id.UserID
	for _, s := range body.AdditionalCreators {
		u, _, _, err := parseUserIDParam(s)
		if err != nil {
			return httputil.BadJSON("additional_creators: %q is not a valid user ID", s)
		}
		creators = appendUnique(creators, u)
	}
	unlock := a.rooms.upgrades.lock(string(roomID))
	defer unlock()
	newRoom, err := a.upgrade(ctx, d, roomID, v, creators)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.RoomID{"replacement_room": newRoom})
	return nil
}

// upgrade replaces a room with a new one of version v.
func (a *API) upgrade(ctx context.Context, d *Device, oldRoom id.RoomID, v *roomversion.Version, additionalCreators []id.UserID) (id.RoomID, error) {
	rs := a.opts.Roomserver
	if err := a.requireJoined(ctx, oldRoom, d.UserID); err != nil {
		return "", err
	}
	empty := ""
	// 1. The user must be allowed to send the tombstone.
	probe := []byte(`{"body":"","replacement_room":"!probe:` + a.cfg.ServerName + `"}`)
	if err := rs.CheckEvent(ctx, oldRoom, roomserver.SendRequest{Type: "m.room.tombstone", StateKey: &empty, Sender: d.UserID, Content: probe}); err != nil {
		return "", roomErr(err)
	}
	oldVersion, err := rs.RoomVersion(ctx, oldRoom)
	if err != nil {
		return "", roomErr(err)
	}
	state, err := rs.CurrentState(ctx, oldRoom)
	if err != nil {
		return "", roomErr(err)
	}
	byKey := make(map[pdu.StateKey]*roomserver.StoredEvent, len(state))
	for _, s := range state {
		byKey[s.Key] = s.Event
	}
	// 2. The replacement room, with its predecessor and the old room's type.
	createContent := map[string]any{}
	if old := byKey[keyCreate]; old != nil {
		var c map[string]json.RawMessage
		if json.Unmarshal(old.Content(), &c) == nil {
			for _, k := range []string{"type", "m.federate"} {
				if val, ok := c[k]; ok {
					createContent[k] = val
				}
			}
		}
	}
	predecessor := map[string]any{"room_id": oldRoom}
	// predecessor.event_id is deprecated: left out when upgrading to room
	// version 12 or later (Client-Server API, "Room Upgrades", server
	// behaviour step 2), kept for older versions whose clients may need it.
	if !v.RoomIDIsCreateEventID {
		if exts, err := rs.ForwardExtremities(ctx, oldRoom); err == nil && len(exts) > 0 {
			predecessor["event_id"] = exts[0]
		}
	}
	createContent["predecessor"] = predecessor
	if v.PrivilegedCreators && len(additionalCreators) > 0 {
		createContent["additional_creators"] = additionalCreators
	}
	cb, err := json.Marshal(createContent)
	if err != nil {
		return "", internalErr(err)
	}
	newRoom, _, err := rs.CreateRoom(ctx, v.ID, d.UserID, cb)
	if err != nil {
		return "", roomErr(err)
	}
	join, err := a.memberContent(ctx, d.Localpart, "join", nil)
	if err != nil {
		return "", err
	}
	if err := a.sendMembership(ctx, newRoom, d.UserID, d.UserID, join); err != nil {
		return "", err
	}
	send := func(room id.RoomID, typ, key string, content any) error {
		b, err := json.Marshal(content)
		if err != nil {
			return err
		}
		_, err = rs.SendEvent(ctx, room, roomserver.SendRequest{Type: typ, StateKey: &key, Sender: d.UserID, Content: b})
		return err
	}
	// 3. Power levels: the old ones, adapted to the new version, with the
	// upgrader raised (until the end) so every copied event can be sent.
	final := upgradedPowerLevels(byKey[keyPower], oldVersion, v, d.UserID, additionalCreators)
	initial, raised := raisedPowerLevels(final, v, d.UserID)
	if err := send(newRoom, keyPower.Type, "", initial); err != nil {
		return "", roomErr(err)
	}
	for _, typ := range transferredState {
		if e := byKey[pdu.StateKey{Type: typ}]; e != nil {
			if err := send(newRoom, typ, "", json.RawMessage(e.Content())); err != nil {
				slog.WarnContext(ctx, "copying state into upgraded room", "room_id", newRoom, "type", typ, "err", err)
			}
		}
	}
	for k, e := range byKey {
		if k.Type == "m.room.member" && membershipOf(e) == "ban" {
			content := map[string]any{"membership": "ban"}
			if reason := contentString(e, "reason"); reason != "" {
				content["reason"] = reason
			}
			if err := send(newRoom, "m.room.member", k.StateKey, content); err != nil {
				slog.WarnContext(ctx, "copying ban into upgraded room", "room_id", newRoom, "user_id", k.StateKey, "err", err)
			}
		}
	}
	if raised {
		if err := send(newRoom, keyPower.Type, "", final); err != nil {
			slog.WarnContext(ctx, "restoring power levels of upgraded room", "room_id", newRoom, "err", err)
		}
	}
	// 4. Local aliases move, and the canonical alias with them.
	if _, err := a.db.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, string(newRoom), string(oldRoom)); err != nil {
		return "", internalErr(err)
	}
	if e := byKey[keyCanonical]; e != nil && len(e.Content()) > 2 {
		if err := send(newRoom, keyCanonical.Type, "", json.RawMessage(e.Content())); err != nil {
			slog.WarnContext(ctx, "moving canonical alias to upgraded room", "room_id", newRoom, "err", err)
		} else if err := send(oldRoom, keyCanonical.Type, "", map[string]any{}); err != nil {
			slog.WarnContext(ctx, "clearing canonical alias of old room", "room_id", oldRoom, "err", err)
		}
	}
	// 5. The tombstone.
	if err := send(oldRoom, "m.room.tombstone", "", map[string]any{"body": "This room has been replaced", "replacement_room": newRoom}); err != nil {
		return "", roomErr(err)
	}
	// 6. The old room stops taking messages and invites.
	if old := oldPowerLevelsLocked(byKey[keyPower]); old != nil {
		if err := send(oldRoom, keyPower.Type, "", old); err != nil {
			slog.WarnContext(ctx, "restricting the old room after upgrade", "room_id", oldRoom, "err", err)
		}
	}
	if pub, err := a.isPublished(ctx, oldRoom); err == nil && pub {
		logIfErr(ctx, "publishing upgraded room", a.setPublished(ctx, newRoom, true))
		logIfErr(ctx, "unpublishing old room", a.setPublished(ctx, oldRoom, false))
	}
	return newRoom, nil
}

// powerContent decodes power levels content (nil event: empty).
func powerContent(e *roomserver.StoredEvent) map[string]any {
	c := map[string]any{}
	if e != nil {
		_ = json.Unmarshal(e.Content(), &c)
	}
	return c
}

// upgradedPowerLevels is the old room's power levels as the new room's: levels
// given as strings (allowed before v10) become integers, and creators are taken
// out of users when the new version gives them unlimited power (v12), where
// m.room.tombstone must also need more than state_default.
func upgradedPowerLevels(old *roomserver.StoredEvent, oldV, newV *roomversion.Version, upgrader id.UserID, creators []id.UserID) map[string]any {
	c := powerContent(old)
	if old == nil {
		c = defaultPowerLevels(newV, upgrader, "private_chat", nil)
	}
	for k, val := range c {
		switch k {
		case "users", "events", "notifications":
			if m, ok := val.(map[string]any); ok {
				for mk, mv := range m {
					m[mk] = intLevel(mv)
				}
			}
		default:
			c[k] = intLevel(val)
		}
	}
	users, _ := c["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		c["users"] = users
	}
	if newV.PrivilegedCreators {
		delete(users, string(upgrader))
		for _, u := range creators {
			delete(users, string(u))
		}
		events, _ := c["events"].(map[string]any)
		if events == nil {
			events = map[string]any{}
			c["events"] = events
		}
		stateDefault := int64(50)
		if n, ok := c["state_default"].(int64); ok {
			stateDefault = n
		}
		if n, ok := events["m.room.tombstone"].(int64); !ok || n <= stateDefault {
			events["m.room.tombstone"] = max(150, stateDefault+1)
		}
	} else if oldV.PrivilegedCreators {
		users[string(upgrader)] = int64(100)
	}
	return c
}

// intLevel turns a power level into an int64 (numbers and numeric strings);
// anything else is left for the auth rules to judge.
func intLevel(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case float64:
		return int64(x)
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n
		}
	}
	return v
}

// raisedPowerLevels gives the upgrader the highest level in the content, so
// every state event can be copied; raised reports whether that changed anything.
// Creators of v12+ rooms need nothing.
func raisedPowerLevels(final map[string]any, v *roomversion.Version, upgrader id.UserID) (map[string]any, bool) {
	if v.PrivilegedCreators {
		return final, false
	}
	need := int64(100)
	consider := func(x any) {
		if n, ok := x.(int64); ok && n > need {
			need = n
		}
	}
	for k, val := range final {
		switch m := val.(type) {
		case map[string]any:
			if k != "users" {
				for _, mv := range m {
					consider(mv)
				}
			}
		default:
			consider(val)
		}
	}
	users, _ := final["users"].(map[string]any)
	if cur, ok := users[string(upgrader)].(int64); ok && cur >= need {
		return final, false
	}
	c := make(map[string]any, len(final))
	for k, val := range final {
		c[k] = val
	}
	raisedUsers := make(map[string]any, len(users)+1)
	for k, val := range users {
		raisedUsers[k] = val
	}
	raisedUsers[string(upgrader)] = need
	c["users"] = raisedUsers
	return c, true
}

// oldPowerLevelsLocked is the old room's power levels with events_default and
// invite raised to the greater of 50 and users_default+1 (the spec's example),
// or nil if there are none to change.
func oldPowerLevelsLocked(e *roomserver.StoredEvent) map[string]any {
	if e == nil {
		return nil
	}
	c := powerContent(e)
	usersDefault := int64(0)
	if n, ok := intLevel(c["users_default"]).(int64); ok {
		usersDefault = n
	}
	level := max(int64(50), usersDefault+1)
	c["events_default"] = level
	c["invite"] = level
	return c
}
