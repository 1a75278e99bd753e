package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/roomversion"
)

// Room creation (Client-Server API, "Creation", POST /createRoom) and the power
// level helpers the room endpoints share.

// registerRoomRoutes sets up the room, membership, message, directory and
// upgrade endpoints (issue 5), when the room engine is wired in.
func (a *API) registerRoomRoutes(r *mux.Router) {
	rs := a.opts.Roomserver
	if rs == nil {
		return
	}
	a.rooms = &roomState{
		rs:        rs,
		txns:      newTxnCache(a.db, rs.StreamPosition),
		relations: newRelationIndexer(a.db, rs),
	}
	handle(r, v3R0, "/createRoom", a.authed(a.createRoom, 0), http.MethodPost)
	a.registerMembershipRoutes(r)
	a.registerMessageRoutes(r)
	a.registerDirectoryRoutes(r)
	handle(r, v3R0, "/rooms/{roomId}/upgrade", a.authed(a.upgradeRoom, 0), http.MethodPost)
}

// createRoomRequest is the body of POST /createRoom.
type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             *string           `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []initialState    `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
}

type initialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// maxRoomNameBytes is the longest room name accepted (m.room.name: "should not
// exceed 255 bytes").
const maxRoomNameBytes = 255

func isJSONObject(b json.RawMessage) bool {
	t := strings.TrimSpace(string(b))
	return len(t) > 0 && t[0] == '{'
}

// POST /createRoom
func (a *API) createRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	var req createRoomRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	plan, err := a.planRoom(ctx, d, &req)
	if err != nil {
		return err
	}
	roomID, err := a.buildRoom(ctx, d, plan)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]id.RoomID{"room_id": roomID})
	return nil
}

// roomPlan is a validated createRoom request: every check that can fail on the
// request is made before the room exists.
type roomPlan struct {
	version      *roomversion.Version
	createExtra  map[string]json.RawMessage
	alias        id.RoomAlias
	power        map[string]any
	presetState  []stateToSend // join_rules, history_visibility, guest_access
	initial      []stateToSend
	named        []stateToSend // name and topic
	invitees     []id.UserID
	isDirect     bool
	publish      bool
	replaceRules bool
}

type stateToSend struct {
	typ, key string
	content  any
}

func (a *API) planRoom(ctx context.Context, d *Device, req *createRoomRequest) (*roomPlan, error) {
	p := &roomPlan{isDirect: req.IsDirect}
	switch req.Visibility {
	case "", "private":
	case "public":
		p.publish = true
	default:
		return nil, httputil.BadJSON("visibility must be public or private")
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = "private_chat"
		if p.publish {
			preset = "public_chat"
		}
	case "private_chat", "public_chat", "trusted_private_chat":
	default:
		return nil, httputil.BadJSON("Unknown preset %q", req.Preset)
	}
	version := req.RoomVersion
	if version == "" {
		version = a.cfg.Rooms.DefaultVersion
	}
	v, ok := roomversion.Lookup(id.RoomVersion(version))
	if !ok {
		return nil, httputil.UnsupportedRoomV("Room version %q is not supported by this server", version)
	}
	p.version = v
	if len(req.Invite3PID) > 0 {
		return nil, httputil.Forbidden("Inviting by third-party identifier is not supported on this server")
	}
	seen := map[id.UserID]bool{d.UserID: true}
	for _, s := range req.Invite {
		u, _, server, err := parseUserIDParam(s)
		if err != nil {
			return nil, httputil.BadJSON("invite: %q is not a valid user ID", s)
		}
		if seen[u] {
			continue
		}
		seen[u] = true
		if server == a.cfg.ServerName {
			acct, err := a.accounts.Get(ctx, u.Localpart())
			if err != nil || acct.Deactivated {
				return nil, httputil.NotFound("Unknown user %s", u)
			}
		} else if a.opts.RemoteInviter == nil {
			return nil, errFederationUnavailable("Inviting a user of another server")
		}
		p.invitees = append(p.invitees, u)
	}
	// creation_content: the server sets creator and room_version itself.
	p.createExtra = map[string]json.RawMessage{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if !isJSONObject(req.CreationContent) {
			return nil, httputil.BadJSON("creation_content must be an object")
		}
		if err := json.Unmarshal(req.CreationContent, &p.createExtra); err != nil {
			return nil, httputil.BadJSON("creation_content must be an object")
		}
	}
	delete(p.createExtra, "creator")
	delete(p.createExtra, "room_version")
	var creators []id.UserID
	if v.PrivilegedCreators {
		if raw, ok := p.createExtra["additional_creators"]; ok {
			var list []string
			if err := json.Unmarshal(raw, &list); err != nil {
				return nil, httputil.BadJSON("creation_content.additional_creators must be a list of user IDs")
			}
			for _, s := range list {
				u, _, _, err := parseUserIDParam(s)
				if err != nil {
					return nil, httputil.BadJSON("creation_content.additional_creators: %q is not a valid user ID", s)
				}
				creators = appendUnique(creators, u)
			}
		}
		// Client-Server API, POST /createRoom: trusted_private_chat invitees
		// become additional creators in room versions with privileged creators.
		if preset == "trusted_private_chat" {
			for _, u := range p.invitees {
				creators = appendUnique(creators, u)
			}
		}
		if len(creators) > 0 {
			b, _ := json.Marshal(creators)
			p.createExtra["additional_creators"] = b
		}
	}
	if req.RoomAliasName != nil {
		alias, err := a.localAlias(*req.RoomAliasName)
		if err != nil {
			return nil, err
		}
		if _, err := a.checkAliasNamespace(d, alias); err != nil {
			return nil, err
		}
		if rid, err := a.aliasRoom(ctx, alias); err != nil {
			return nil, internalErr(err)
		} else if rid != "" {
			return nil, httputil.RoomInUse("The room alias %s is already taken", alias)
		}
		p.alias = alias
	}
	// Initial state, minus what the request sets otherwise.
	initialKeys := map[pdu.StateKey]bool{}
	for _, s := range req.InitialState {
		if s.Type == "" || len(s.Type) > 255 || len(s.StateKey) > 255 {
			return nil, httputil.BadJSON("initial_state: every event needs a type (and a state_key) of at most 255 bytes")
		}
		if !isJSONObject(s.Content) {
			return nil, httputil.BadJSON("initial_state: the content of %s must be an object", s.Type)
		}
		if s.Type == "m.room.create" {
			return nil, httputil.BadJSON("initial_state cannot hold m.room.create; use creation_content")
		}
		k := pdu.StateKey{Type: s.Type, StateKey: s.StateKey}
		if (k == keyName && req.Name != nil) || (k == keyTopic && req.Topic != nil) {
			continue
		}
		initialKeys[k] = true
		p.initial = append(p.initial, stateToSend{typ: s.Type, key: s.StateKey, content: json.RawMessage(s.Content)})
	}
	// Power levels: the defaults, the preset's, then the override.
	power := defaultPowerLevels(v, d.UserID, preset, p.invitees)
	if initialKeys[keyPower] {
		// A power_levels event in initial_state replaces the defaults.
		for i, s := range p.initial {
			if s.typ == keyPower.Type && s.key == "" {
				power = map[string]any{}
				if err := json.Unmarshal(s.content.(json.RawMessage), &power); err != nil {
					return nil, httputil.BadJSON("initial_state: invalid power levels")
				}
				p.initial = append(p.initial[:i], p.initial[i+1:]...)
				break
			}
		}
	}
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]any
		if !isJSONObject(req.PowerLevelContentOverride) || json.Unmarshal(req.PowerLevelContentOverride, &override) != nil {
			return nil, httputil.BadJSON("power_level_content_override must be an object")
		}
		for k, val := range override {
			power[k] = val
		}
	}
	p.power = power
	// Preset state (Client-Server API, POST /createRoom, the preset table).
	// public_chat's guest_access "forbidden" is what a room without an
	// m.room.guest_access event has, so, as Synapse and Dendrite do, no event is
	// sent for it (other servers and Complement expect public rooms without it).
	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", ""
	}
	for _, s := range []stateToSend{
		{keyJoinRules.Type, "", map[string]any{"join_rule": joinRule}},
		{keyHistory.Type, "", map[string]any{"history_visibility": "shared"}},
		{keyGuest.Type, "", map[string]any{"guest_access": guest}},
	} {
		if s.typ == keyGuest.Type && guest == "" {
			continue
		}
		if !initialKeys[pdu.StateKey{Type: s.typ}] {
			p.presetState = append(p.presetState, s)
		}
	}
	if req.Name != nil {
		if len(*req.Name) > maxRoomNameBytes {
			return nil, httputil.InvalidParam("The room name is longer than %d bytes", maxRoomNameBytes)
		}
		p.named = append(p.named, stateToSend{keyName.Type, "", map[string]any{"name": *req.Name}})
	}
	if req.Topic != nil {
		p.named = append(p.named, stateToSend{keyTopic.Type, "", topicContent(*req.Topic)})
	}
	return p, nil
}

// topicContent is an m.room.topic content with the plain-text topic both in
// topic and as an m.topic text block.
func topicContent(topic string) map[string]any {
	return map[string]any{
		"topic":   topic,
		"m.topic": map[string]any{"m.text": []map[string]any{{"mimetype": "text/plain", "body": topic}}},
	}
}

func appendUnique(list []id.UserID, u id.UserID) []id.UserID {
	for _, x := range list {
		if x == u {
			return list
		}
	}
	return append(list, u)
}

// defaultPowerLevels is the m.room.power_levels content of a new room (as
// Synapse makes it). Creators of room v12+ rooms have unlimited power and are
// not listed; before v12 the creator gets 100, and for trusted_private_chat the
// invitees too. The private presets let anyone invite.
func defaultPowerLevels(v *roomversion.Version, creator id.UserID, preset string, invitees []id.UserID) map[string]any {
	users := map[string]any{}
	tombstone := 100
	if v.PrivilegedCreators {
		// Client-Server API, POST /createRoom: in v12+ sending m.room.tombstone
		// must need more than state_default.
		tombstone = 150
	} else {
		users[string(creator)] = 100
		if preset == "trusted_private_chat" {
			for _, u := range invitees {
				users[string(u)] = 100
			}
		}
	}
	invite := 50
	if preset == "private_chat" || preset == "trusted_private_chat" {
		invite = 0
	}
	return map[string]any{
		"users":         users,
		"users_default": 0,
		"events": map[string]any{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          tombstone,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         invite,
		"historical":     100,
	}
}

// errInvalidRoomState answers a createRoom whose initial state the auth rules
// refuse (e.g. a power level override that takes away the creator's power).
func errInvalidRoomState(err error) error {
	me := roomErr(err)
	var he *httputil.Error
	if errors.As(me, &he) && he.Status == http.StatusForbidden {
		return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_INVALID_ROOM_STATE", Message: "The initial state of the room is invalid: " + he.Message}
	}
	return me
}

// buildRoom creates the room and sends its initial events in the order the spec
// gives (POST /createRoom): create, the creator's join, power levels, canonical
// alias, preset state, initial_state, name and topic, then the invites.
func (a *API) buildRoom(ctx context.Context, d *Device, p *roomPlan) (id.RoomID, error) {
	rs := a.opts.Roomserver
	createContent, err := json.Marshal(p.createExtra)
	if err != nil {
		return "", internalErr(err)
	}
	roomID, _, err := rs.CreateRoom(ctx, p.version.ID, d.UserID, createContent)
	if err != nil {
		return "", roomErr(err)
	}
	join, err := a.memberContent(ctx, d.Localpart, "join", nil)
	if err != nil {
		return "", err
	}
	if err := a.sendMembership(ctx, roomID, d.UserID, d.UserID, join); err != nil {
		return "", errInvalidRoomState(err)
	}
	send := func(s stateToSend) error {
		b, err := json.Marshal(s.content)
		if err != nil {
			return internalErr(err)
		}
		key := s.key
		if _, err := rs.SendEvent(ctx, roomID, roomserver.SendRequest{Type: s.typ, StateKey: &key, Sender: d.UserID, Content: b}); err != nil {
			return errInvalidRoomState(err)
		}
		return nil
	}
	if err := send(stateToSend{keyPower.Type, "", p.power}); err != nil {
		return "", err
	}
	if p.alias != "" {
		if err := a.createAlias(ctx, p.alias, roomID, d.UserID); err != nil {
			return "", err
		}
		if err := send(stateToSend{keyCanonical.Type, "", map[string]any{"alias": p.alias}}); err != nil {
			return "", err
		}
	}
	for _, list := range [][]stateToSend{p.presetState, p.initial, p.named} {
		for _, s := range list {
			if err := send(s); err != nil {
				return "", err
			}
		}
	}
	for _, u := range p.invitees {
		if err := a.inviteUser(ctx, roomID, d.UserID, u, nil, p.isDirect); err != nil {
			if inviteBlocked(err) {
				continue // MSC4155: the room is made without the invitee who refuses
			}
			return "", err
		}
	}
	if p.publish {
		if err := a.setPublished(ctx, roomID, true); err != nil {
			return "", err
		}
	}
	return roomID, nil
}

// roomPowerLevels reads a room's m.room.power_levels with its creators.
type roomPowerLevels struct {
	content  gjson.Result
	hasEvent bool
	// creators have unlimited power (room v12+).
	creators map[id.UserID]bool
	// creator is the create event's sender, who has 100 in rooms without power
	// levels before v12.
	creator id.UserID
}

// roomPower loads the room's current power levels.
func (a *API) roomPower(ctx context.Context, roomID id.RoomID) (*roomPowerLevels, error) {
	rs := a.opts.Roomserver
	v, err := rs.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	cur, err := rs.CurrentStateEvents(ctx, roomID, []pdu.StateKey{keyCreate, keyPower})
	if err != nil {
		return nil, err
	}
	return newRoomPowerLevels(v, cur[0], cur[1]), nil
}

func newRoomPowerLevels(v *roomversion.Version, create, pl *roomserver.StoredEvent) *roomPowerLevels {
	p := &roomPowerLevels{}
	if create != nil {
		p.creator = create.Sender()
		if v.PrivilegedCreators {
			p.creators = map[id.UserID]bool{create.Sender(): true}
			for _, c := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
				p.creators[id.UserID(c.Str)] = true
			}
		}
	}
	if pl != nil {
		p.content = gjson.ParseBytes(pl.Content())
		p.hasEvent = true
	}
	return p
}

// userLevel is a user's power level.
func (p *roomPowerLevels) userLevel(u id.UserID) int64 {
	if p.creators[u] {
		return math.MaxInt64
	}
	if !p.hasEvent {
		if u == p.creator {
			return 100
		}
		return 0
	}
	var level int64
	found := false
	p.content.Get("users").ForEach(func(k, val gjson.Result) bool {
		if k.Str == string(u) {
			level, found = val.Int(), true
			return false
		}
		return true
	})
	if found {
		return level
	}
	return p.content.Get("users_default").Int()
}

// level is a top-level power level (invite, kick, state_default …), def when unset.
func (p *roomPowerLevels) level(key string, def int64) int64 {
	if v := p.content.Get(key); v.Exists() {
		return v.Int()
	}
	return def
}

// eventLevel is the level needed to send a state event of the given type.
func (p *roomPowerLevels) stateEventLevel(typ string) int64 {
	var level int64
	found := false
	p.content.Get("events").ForEach(func(k, val gjson.Result) bool {
		if k.Str == typ {
			level, found = val.Int(), true
			return false
		}
		return true
	})
	if found {
		return level
	}
	if !p.hasEvent {
		return 0
	}
	return p.level("state_default", 50)
}

// keyedMutex serialises work per key (one room upgrade at a time per room).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
