package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
)

// Matrix errors of the join handshake.
var (
	errIncompatibleVersion = func(v id.RoomVersion) *httputil.Error {
		return (&httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: "Your server does not support this room's version"}).With("room_version", string(v))
	}
	errUnableToAuthorise = &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_UNABLE_TO_AUTHORISE_JOIN",
		Message: "This server cannot check the room's join conditions"}
	errUnableToGrant = &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_UNABLE_TO_GRANT_JOIN",
		Message: "No user of this server can authorise the join; try another server"}
)

// membershipOf returns content.membership of an event.
func membershipOf(content []byte) string { return gjson.GetBytes(content, "membership").Str }

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=
func (a *API) getMakeJoin(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID, userID, v, err := a.makeMembershipRequest(r, origin)
	if err != nil {
		return err
	}
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = []string{"1"} // servers that send no ver support only room version 1
	}
	if !slices.Contains(vers, string(v.ID)) {
		return errIncompatibleVersion(v.ID)
	}
	content := map[string]any{"membership": "join"}
	authoriser, err := a.joinAuthoriser(r.Context(), roomID, userID, v)
	if err != nil {
		return err
	}
	if authoriser != "" {
		content["join_authorised_via_users_server"] = authoriser
	}
	return a.respondTemplate(w, r.Context(), roomID, userID, v, content)
}

// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=
func (a *API) getMakeKnock(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID, userID, v, err := a.makeMembershipRequest(r, origin)
	if err != nil {
		return err
	}
	if !slices.Contains(r.URL.Query()["ver"], string(v.ID)) {
		return errIncompatibleVersion(v.ID)
	}
	if !v.Knocking {
		return errIncompatibleVersion(v.ID)
	}
	return a.respondTemplate(w, r.Context(), roomID, userID, v, map[string]any{"membership": "knock"})
}

// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
func (a *API) putSendKnock(w http.ResponseWriter, r *http.Request, origin string) error {
	ev, _, err := a.receiveMembership(r, origin, "knock")
	if err != nil {
		return err
	}
	if err := a.verifyMembershipEvent(r.Context(), ev); err != nil {
		return err
	}
	if err := a.inputMembership(r.Context(), ev); err != nil {
		return err
	}
	// The state that lets the knocker recognise the room, in the room's PDU format.
	b := []byte(`{"knock_room_state":[`)
	n := 0
	for _, t := range inviteStateTypes {
		se, err := a.rs.CurrentStateEvent(r.Context(), ev.RoomID(), t, "")
		if err != nil {
			return err
		}
		if se == nil {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, a.storedJSON(se)...)
		n++
	}
	httputil.WriteJSONBytes(w, http.StatusOK, append(b, "]}"...))
	return nil
}

// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
func (a *API) getMakeLeave(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID, userID, v, err := a.makeMembershipRequest(r, origin)
	if err != nil {
		return err
	}
	return a.respondTemplate(w, r.Context(), roomID, userID, v, map[string]any{"membership": "leave"})
}

// makeMembershipRequest checks the common parts of make_join and make_leave: the
// user belongs to origin, the room is known here and the ACL admits origin.
func (a *API) makeMembershipRequest(r *http.Request, origin string) (id.RoomID, id.UserID, *roomversion.Version, error) {
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	userID := id.UserID(mux.Vars(r)["userId"])
	if _, server, err := userID.Parse(); err != nil || server != origin {
		return "", "", nil, httputil.Forbidden("User %s does not belong to %s", userID, origin)
	}
	v, err := a.rs.RoomVersion(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return "", "", nil, httputil.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return "", "", nil, err
	}
	if err := a.requireResident(r.Context(), roomID); err != nil {
		return "", "", nil, err
	}
	if err := a.checkACL(r.Context(), roomID, origin); err != nil {
		return "", "", nil, err
	}
	return roomID, userID, v, nil
}

// requireResident returns 404 unless a local user is joined to roomID: only then
// is this server's view of the room current enough to let others in.
func (a *API) requireResident(ctx context.Context, roomID id.RoomID) error {
	ok, err := a.rs.ServerJoined(ctx, roomID, "", a.serverName)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.NotFound("This server is not in room %s", roomID)
	}
	return nil
}

// respondTemplate answers make_join/make_leave with an unsigned member event for
// userID, after checking it would pass the auth rules against the current state.
func (a *API) respondTemplate(w http.ResponseWriter, ctx context.Context, roomID id.RoomID, userID id.UserID, v *roomversion.Version, content map[string]any) error {
	c, err := json.Marshal(content)
	if err != nil {
		return err
	}
	sk := string(userID)
	proto, _, err := a.rs.EventTemplate(ctx, roomID, roomserver.SendRequest{Type: "m.room.member", StateKey: &sk, Sender: userID, Content: c})
	if err != nil {
		return httputil.NotFound("This server cannot make events in %s: %v", roomID, err)
	}
	// Build the event as the user's server would (signed with our key, which the
	// auth rules do not look at) to check it against the current state.
	ev, err := events.Build(v.ID, *proto, userID.Homeserver(), id.KeyID(a.key.ID), a.key.PrivateKey)
	if err != nil {
		return httputil.BadJSON("Cannot build the event: %v", err)
	}
	if _, ok := content["join_authorised_via_users_server"]; ok {
		// The auth rules want this server's signature on a restricted join, which
		// it adds at send_join.
		if ev, err = ev.Sign(a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey); err != nil {
			return err
		}
	}
	if err := a.rs.CheckAgainstCurrentState(ctx, ev); err != nil {
		var na *roomserver.NotAllowedError
		if errors.As(err, &na) {
			return httputil.Forbidden("%v", na.Err)
		}
		return err
	}
	tmpl := ev.JSON()
	for _, k := range []string{"hashes", "signatures", "event_id", "unsigned"} {
		if tmpl, err = sjson.DeleteBytes(tmpl, k); err != nil {
			return err
		}
	}
	b := make([]byte, 0, len(tmpl)+48)
	b = append(b, `{"event":`...)
	b = append(b, tmpl...)
	b = append(b, `,"room_version":`...)
	b = strconv.AppendQuote(b, string(v.ID))
	b = append(b, '}')
	httputil.WriteJSONBytes(w, http.StatusOK, b)
	return nil
}

// joinAuthoriser returns the local user to name in join_authorised_via_users_server
// when userID joins a restricted room through one of its allow conditions
// (Server-Server API, "Restricted rooms"), or "" when no authorisation is needed.
func (a *API) joinAuthoriser(ctx context.Context, roomID id.RoomID, userID id.UserID, v *roomversion.Version) (id.UserID, error) {
	if !v.RestrictedJoins {
		return "", nil
	}
	jr, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.join_rules", "")
	if err != nil || jr == nil {
		return "", err
	}
	rule := gjson.GetBytes(jr.Content(), "join_rule").Str
	if rule != "restricted" && !(rule == "knock_restricted" && v.KnockRestricted) {
		return "", nil
	}
	if m, _, err := a.rs.Membership(ctx, roomID, userID); err != nil {
		return "", err
	} else if m == "join" || m == "invite" {
		return "", nil
	}
	// unchecked counts conditions naming rooms this server is not in: only those
	// make the answer "cannot tell" (M_UNABLE_TO_AUTHORISE_JOIN) rather than "no".
	satisfied, unchecked := false, 0
	for _, cond := range gjson.GetBytes(jr.Content(), "allow").Array() {
		if cond.Get("type").Str != "m.room_membership" {
			continue
		}
		other := id.RoomID(cond.Get("room_id").Str)
		if other == "" {
			continue
		}
		if in, err := a.rs.ServerJoined(ctx, other, "", a.serverName); err != nil || !in {
			// Not known here, or known only as it was when this server
			// left it: its membership cannot be checked.
			unchecked++
			continue
		}
		if m, _, err := a.rs.Membership(ctx, other, userID); err == nil && m == "join" {
			satisfied = true
			break
		}
	}
	if !satisfied {
		if unchecked > 0 {
			return "", errUnableToAuthorise
		}
		return "", httputil.Forbidden("You do not meet the room's join conditions")
	}
	user, err := a.localInviter(ctx, roomID)
	if err != nil {
		return "", err
	}
	if user == "" {
		return "", errUnableToGrant
	}
	return user, nil
}

// localInviter returns a local user joined to roomID whose power level reaches the
// invite level, or "".
func (a *API) localInviter(ctx context.Context, roomID id.RoomID) (id.UserID, error) {
	members, err := a.rs.Members(ctx, roomID, "join")
	if err != nil {
		return "", err
	}
	slices.Sort(members)
	pl, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.power_levels", "")
	if err != nil {
		return "", err
	}
	create, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil {
		return "", err
	}
	v, err := a.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return "", err
	}
	for _, m := range members {
		if m.Homeserver() != a.serverName {
			continue
		}
		if hasPowerFor(v, create, pl, m, "invite", 0) {
			return m, nil
		}
	}
	return "", nil
}

// hasPowerFor reports whether user's power level reaches the level named by field
// in the power levels event (def when unset); room v12 creators always do.
func hasPowerFor(v *roomversion.Version, create, pl *roomserver.StoredEvent, user id.UserID, field string, def int64) bool {
	if create != nil && v.PrivilegedCreators {
		if create.Sender() == user {
			return true
		}
		for _, c := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
			if c.Str == string(user) {
				return true
			}
		}
	}
	if pl == nil {
		level := int64(0)
		if create != nil && create.Sender() == user {
			level = 100
		}
		return level >= def
	}
	c := pl.Content()
	need := def
	if x := gjson.GetBytes(c, field); x.Exists() {
		need = x.Int()
	}
	have := gjson.GetBytes(c, "users_default").Int()
	for k, val := range gjson.GetBytes(c, "users").Map() {
		if k == string(user) {
			have = val.Int()
		}
	}
	return have >= need
}

// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}?omit_members=
func (a *API) putSendJoin(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.sendJoin(w, r, origin, false)
}

// PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}: deprecated, the v2
// response (without omit_members) wrapped as [200, response].
func (a *API) putSendJoinV1(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.sendJoin(w, r, origin, true)
}

func (a *API) sendJoin(w http.ResponseWriter, r *http.Request, origin string, v1 bool) error {
	ctx := r.Context()
	ev, v, err := a.receiveMembership(r, origin, "join")
	if err != nil {
		return err
	}
	// A restricted join names a local user to authorise it; this server signs it
	// before anything else looks at the signatures.
	if via := gjson.GetBytes(ev.Content(), "join_authorised_via_users_server"); via.Exists() && v.RestrictedJoins {
		user := id.UserID(via.Str)
		if user.Homeserver() != a.serverName {
			return httputil.InvalidParam("join_authorised_via_users_server is not a user of this server")
		}
		if m, _, err := a.rs.Membership(ctx, ev.RoomID(), user); err != nil {
			return err
		} else if m != "join" {
			return errUnableToGrant
		}
		if ev, err = ev.Sign(a.serverName, id.KeyID(a.key.ID), a.key.PrivateKey); err != nil {
			return err
		}
	}
	if err := a.verifyMembershipEvent(ctx, ev); err != nil {
		return err
	}
	if err := a.inputMembership(ctx, ev); err != nil {
		return err
	}
	omit := !v1 && r.URL.Query().Get("omit_members") == "true"
	return a.respondSendJoin(w, ctx, ev, omit, v1)
}

// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}
func (a *API) putSendLeave(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.sendLeave(w, r, origin, false)
}

// PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}: deprecated, answers
// [200, {}].
func (a *API) putSendLeaveV1(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.sendLeave(w, r, origin, true)
}

func (a *API) sendLeave(w http.ResponseWriter, r *http.Request, origin string, v1 bool) error {
	ev, _, err := a.receiveMembership(r, origin, "leave")
	if err != nil {
		return err
	}
	if err := a.verifyMembershipEvent(r.Context(), ev); err != nil {
		return err
	}
	if err := a.inputMembership(r.Context(), ev); err != nil {
		return err
	}
	if v1 {
		httputil.WriteJSONBytes(w, http.StatusOK, []byte(`[200,{}]`))
	} else {
		httputil.WriteJSONBytes(w, http.StatusOK, []byte(`{}`))
	}
	return nil
}

// receiveMembership parses the event of send_join/send_leave and checks what the
// spec lists: member event, the expected membership, sender of origin, state_key
// equal to sender, and the room and event IDs of the path.
func (a *API) receiveMembership(r *http.Request, origin, membership string) (*events.Event, *roomversion.Version, error) {
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	eventID := id.EventID(mux.Vars(r)["eventId"])
	v, err := a.rs.RoomVersion(r.Context(), roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, nil, httputil.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := a.requireResident(r.Context(), roomID); err != nil {
		return nil, nil, err
	}
	if err := a.checkACL(r.Context(), roomID, origin); err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, httputil.BadJSON("Could not read request body")
	}
	ev, err := events.Parse(v.ID, body)
	if err != nil {
		return nil, nil, &httputil.Error{Status: http.StatusBadRequest, ErrCode: orDefault(events.Errcode(err), "M_BAD_JSON"), Message: err.Error()}
	}
	switch {
	case ev.ID() != eventID:
		return nil, nil, httputil.InvalidParam("Event ID %s does not match the path", ev.ID())
	case ev.RoomID() != roomID:
		return nil, nil, httputil.InvalidParam("Event is for another room")
	case ev.Type() != "m.room.member":
		return nil, nil, httputil.InvalidParam("Event is not an m.room.member event")
	case ev.StateKey() == nil || *ev.StateKey() != string(ev.Sender()):
		return nil, nil, httputil.InvalidParam("state_key must be the sender")
	case ev.Sender().Homeserver() != origin:
		return nil, nil, httputil.InvalidParam("Sender does not belong to %s", origin)
	case membershipOf(ev.Content()) != membership:
		return nil, nil, httputil.InvalidParam("Membership must be %s", membership)
	}
	return ev, v, nil
}

// verifyMembershipEvent checks the signatures and hash of a send_join/send_leave
// event (400 M_INVALID_PARAM on failure).
func (a *API) verifyMembershipEvent(ctx context.Context, ev *events.Event) error {
	if err := events.VerifySignatures(ev, a.getKeyFunc(ctx)); err != nil {
		return httputil.InvalidParam("Bad signature: %v", err)
	}
	if !ev.CheckContentHash() {
		return httputil.InvalidParam("Content hash does not match")
	}
	return nil
}

// inputMembership stores a member event received through send_join/send_leave and
// has the sender relay it to the other servers in the room.
func (a *API) inputMembership(ctx context.Context, ev *events.Event) error {
	a.sender.markRelay(ev.ID())
	res, err := a.rs.InputRemoteEvent(ctx, ev)
	var missing *roomserver.MissingEventsError
	switch {
	case errors.As(err, &missing):
		a.sender.unmarkRelay(ev.ID())
		return httputil.InvalidParam("The event cites events this server does not have: %v", err)
	case err != nil:
		a.sender.unmarkRelay(ev.ID())
		return err
	case res.Duplicate:
		a.sender.unmarkRelay(ev.ID())
		if stored, err := a.rs.Event(ctx, ev.ID()); err == nil && (stored.Rejected || stored.SoftFailed) {
			return httputil.Forbidden("The event is not allowed in the room")
		}
		return nil
	case res.Rejected != nil:
		a.sender.unmarkRelay(ev.ID()) // rejected events reach no listener
		return httputil.Forbidden("%v", res.Rejected)
	case res.SoftFailed != nil:
		return httputil.Forbidden("%v", res.SoftFailed)
	}
	return nil
}

// respondSendJoin writes the send_join v2 response: the state before the join, its
// auth chain and the join event as stored (with this server's signature when it
// authorised it). With omit_members, member events are left out of the state
// (except the heroes', for rooms with no name or canonical alias), events in the
// state are left out of the auth chain, and the servers in the room are listed.
func (a *API) respondSendJoin(w http.ResponseWriter, ctx context.Context, ev *events.Event, omit, v1 bool) error {
	state, err := a.rs.StateAtEvent(ctx, ev.ID(), false)
	if err != nil {
		return err
	}
	stored, err := a.rs.Event(ctx, ev.ID())
	if err != nil {
		return err
	}
	kept := make([]*roomserver.StoredEvent, 0, len(state))
	servers := []string{}
	if omit {
		heroes := map[string]bool{}
		hasName := false
		seenServer := map[string]bool{}
		var members []roomserver.StateEntry
		for _, e := range state {
			switch e.Key.Type {
			case "m.room.name", "m.room.canonical_alias":
				hasName = true
			case "m.room.member":
				members = append(members, e)
				if membershipOf(e.Event.Content()) == "join" {
					if s := id.UserID(e.Key.StateKey).Homeserver(); !seenServer[s] {
						seenServer[s] = true
						servers = append(servers, s)
					}
				}
			}
		}
		if !hasName {
			// m.heroes: the first five joined or invited members other than the
			// joiner (Client-Server API, "Room summary"), oldest first.
			slices.SortFunc(members, func(x, y roomserver.StateEntry) int {
				return cmpInt64(x.Event.StreamPos, y.Event.StreamPos)
			})
			for _, m := range members {
				if len(heroes) == 5 {
					break
				}
				ms := membershipOf(m.Event.Content())
				if (ms == "join" || ms == "invite") && m.Key.StateKey != string(ev.Sender()) {
					heroes[m.Key.StateKey] = true
				}
			}
		}
		for _, e := range state {
			if e.Key.Type != "m.room.member" || heroes[e.Key.StateKey] {
				kept = append(kept, e.Event)
			}
		}
		slices.Sort(servers)
	} else {
		for _, e := range state {
			kept = append(kept, e.Event)
		}
	}
	chain, err := a.rs.AuthChain(ctx, append(idsOf(kept), ev.ID()))
	if err != nil {
		return err
	}
	if omit {
		inState := make(map[id.EventID]struct{}, len(kept))
		for _, e := range kept {
			inState[e.ID()] = struct{}{}
		}
		c := chain[:0:0]
		for _, e := range chain {
			if _, dup := inState[e.ID()]; !dup {
				c = append(c, e)
			}
		}
		chain = c
	}
	b := make([]byte, 0, 256+64*(len(kept)+len(chain)))
	if v1 {
		b = append(b, `[200,`...)
	}
	b = append(b, `{"auth_chain":`...)
	b = appendPDUArray(b, a.jsonsOf(chain))
	b = append(b, `,"event":`...)
	b = append(b, stored.JSON()...)
	b = append(b, `,"members_omitted":`...)
	b = strconv.AppendBool(b, omit)
	if omit {
		b = append(b, `,"servers_in_room":`...)
		if b, err = appendJSONValue(b, servers); err != nil {
			return err
		}
	}
	b = append(b, `,"state":`...)
	b = appendPDUArray(b, a.jsonsOf(kept))
	b = append(b, '}')
	if v1 {
		b = append(b, ']')
	}
	httputil.WriteJSONBytes(w, http.StatusOK, b)
	return nil
}

func cmpInt64(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
