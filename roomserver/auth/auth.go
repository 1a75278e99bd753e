// Package auth applies the authorization rules of Matrix room versions 1–12
// ("Authorization rules" in each room version of the spec), and of the
// unstable versions in the roomversion table, to PDUs. It is pure: events
// come in, a verdict goes out, no I/O.
//
// eventauth knows only the spec's versions, so it (and every other mautrix
// call here) is given the spec version an unstable version extends
// (roomversion.SpecVersion); the rules an MSC changes are applied here:
//   - MSC3757 owned state (roomversion.Version.OwnedState) replaces the rule
//     about state keys that start with "@" (see checkStateKey).
//
// It wraps mautrix's federation/eventauth and corrects it where it does not
// follow the spec for every room version. Each correction is marked with an
// "eventauth gap" comment that names the rule. In short:
//   - rule 1.3 is checked against content.room_version, not the caller's version;
//   - rule 2 (v12) also requires the event named by the room ID to be an m.room.create;
//   - auth_events (rule 3.x, 2.x before v12) are checked here, in the spec's
//     order, with missing events reported as such;
//   - rule 4 of v1–v5 (m.room.aliases) and rule 11 of v1–v2 (m.room.redaction)
//     are implemented here; eventauth has neither;
//   - rules 5.1, 5.2 and 5.3.1 are applied here: eventauth checks
//     join_authorised_via_users_server in every room version (the rule exists
//     from v8), and cannot evaluate 5.3.1 in v1/v2 (it hashes the create event
//     to get its ID, which *pdu.PDU cannot do for those versions);
//   - third-party invites (5.4.1.7): eventauth reads the public keys and
//     signatures from the wrong places and rejects every valid invite;
//   - power levels (rule 10, 9 in v6–v11) are checked here: eventauth checks
//     notifications in v1–v5, accepts floats where v10+ wants integers, panics
//     when a user whose level equals the sender's is removed, and is quadratic
//     in the size of the users map;
//   - with no power levels event, v1–v10 give power 100 to content.creator,
//     not to the create event's sender;
//   - v12 rooms whose create event has any field of an unexpected type
//     ("predecessor": "x") made eventauth fail every power level lookup.
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// GetEventsFunc loads events by ID. The result must have one entry per ID,
// in order, with nil for events that are not available.
type GetEventsFunc = eventauth.GetEventsFunc

// StateLookupFunc returns the state event with the given type and state key,
// or nil if the state has none.
type StateLookupFunc func(evtType, stateKey string) *pdu.PDU

const (
	typeCreate           = "m.room.create"
	typeMember           = "m.room.member"
	typePowerLevels      = "m.room.power_levels"
	typeThirdPartyInvite = "m.room.third_party_invite"
	typeAliases          = "m.room.aliases"
	typeRedaction        = "m.room.redaction"

	keyAuthoriser = "join_authorised_via_users_server"
)

// Allowed checks evt against the authorization rules of room version rv,
// with authEvents as the room state the rules consult: the state before the
// event (checks on receipt of a PDU, step 5), the current state (soft
// failure, step 6), or the partially resolved state (state resolution's
// iterative auth checks). authEvents should be what SelectAuthEvents picks
// from that state; further events do no harm but make lookups slower. nil
// entries are ignored. The rules about the event's own auth_events list are
// not applied here: see CheckAuthEvents.
//
// create is the room's m.room.create event. It may be nil when authEvents
// holds it, as auth events selection does before v12. In v12 the selection
// leaves it out (rule 2 finds it through the room ID), so it must be passed
// here; it must then be accepted and have the ID the room ID names.
//
// getKey fetches signing keys to verify the signature that rule 5.2.1 (v8+)
// requires from the server of join_authorised_via_users_server. With nil,
// only the presence of that server's signature is checked: pass nil only for
// events whose signatures were verified when they were received.
//
// Allowed returns nil if the event is allowed, an *AuthError naming the
// failed rule if it is not, and another error if it could not be checked.
func Allowed(rv id.RoomVersion, evt, create *pdu.PDU, authEvents []*pdu.PDU, getKey pdu.GetKeyFunc) error {
	v, err := checkVersion(rv, evt)
	if err != nil {
		return err
	}
	if evt.Type == typeCreate {
		return authorizeCreate(v, evt)
	}
	for _, ae := range authEvents {
		if ae == nil {
			continue
		}
		if ae.StateKey == nil {
			return fmt.Errorf("auth event %s of type %s is not a state event", ae.InternalMeta.EventID, ae.Type)
		}
		if ae.Type != typeCreate || *ae.StateKey != "" {
			continue
		}
		if create == nil {
			create = ae
		} else if ae != create && ae.InternalMeta.EventID != create.InternalMeta.EventID {
			return fmt.Errorf("auth events hold m.room.create %s, but %s was passed", ae.InternalMeta.EventID, create.InternalMeta.EventID)
		}
	}
	c := &check{rv: v.SpecVersion(), version: v, evt: evt, state: authEvents, getKey: getKey}
	if c.rv.RoomIDIsCreateEventID() {
		if err := c.checkRoomIDIsCreate(create); err != nil {
			return err
		}
	} else if create == nil {
		return c.fail(ruleAuthEventsNoCreate, nil)
	}
	c.create = create
	return c.authorize()
}

// CheckAuthEvents checks evt against the authorization rules of room version
// rv with its own auth_events, loaded through getEvents: checks on receipt of
// a PDU, step 4. Unlike Allowed it also applies the rules about the
// auth_events list itself (duplicates, entries auth events selection would
// not pick, rejected entries, entries from other rooms). In v12 getEvents is
// also asked for the m.room.create event the room ID names.
//
// An entry that getEvents does not have yields an error wrapping
// ErrMissingAuthEvent. getKey is used as in Allowed.
func CheckAuthEvents(rv id.RoomVersion, evt *pdu.PDU, getEvents GetEventsFunc, getKey pdu.GetKeyFunc) error {
	v, err := checkVersion(rv, evt)
	if err != nil {
		return err
	}
	if evt.Type == typeCreate {
		return authorizeCreate(v, evt)
	}
	if getEvents == nil {
		return errors.New("no way to load auth events")
	}
	c := &check{rv: v.SpecVersion(), version: v, evt: evt, getKey: getKey}
	ids := evt.AuthEvents
	v12 := c.rv.RoomIDIsCreateEventID()
	if v12 {
		createID, ok := createIDFromRoomID(evt.RoomID)
		if !ok {
			return c.fail(ruleRoomIDNotCreate, fmt.Errorf("malformed room ID %q", evt.RoomID))
		}
		ids = append(slices.Clip(ids), createID)
	}
	events, err := getEvents(ids)
	if err != nil {
		return fmt.Errorf("loading auth events of %s: %w", evt.InternalMeta.EventID, err)
	}
	if len(events) != len(ids) {
		return fmt.Errorf("loading auth events of %s: got %d events for %d IDs", evt.InternalMeta.EventID, len(events), len(ids))
	}
	if v12 {
		create := events[len(events)-1]
		events = events[:len(events)-1]
		if err := c.checkRoomIDIsCreate(create); err != nil {
			return err
		}
		c.create = create
	}
	for i, ae := range events {
		if ae == nil {
			return fmt.Errorf("%w %s of %s", ErrMissingAuthEvent, ids[i], evt.InternalMeta.EventID)
		}
	}
	if err := c.checkAuthEventsList(events); err != nil {
		return err
	}
	c.state = events
	if !v12 {
		c.create = c.find(typeCreate, "")
	}
	return c.authorize()
}

// SelectAuthEvents picks from a room's state the events that the auth events
// selection algorithm (Server-Server API, "Auth events selection") names for
// evt: the ones to list in its auth_events, and the ones Allowed needs. The
// m.room.create event is among them before v12 only.
func SelectAuthEvents(rv id.RoomVersion, evt *pdu.PDU, lookup StateLookupFunc) []*pdu.PDU {
	if evt == nil || lookup == nil || (evt.Type == typeCreate && evt.StateKey != nil) {
		return nil
	}
	keys := evt.AuthEventSelection(roomversion.SpecVersion(rv))
	out := make([]*pdu.PDU, 0, len(keys))
	for _, key := range keys {
		if e := lookup(key.Type, key.StateKey); e != nil {
			out = append(out, e)
		}
	}
	return out
}

// checkVersion checks that there is an event and that rv is a room version
// with known rules, and returns its entry in the room version table; ""
// (rooms from before room versions) is read as "1". An m.room.create event
// of an unknown version fails rule 1.3.
func checkVersion(rv id.RoomVersion, evt *pdu.PDU) (*roomversion.Version, error) {
	if evt == nil {
		return nil, errors.New("no event to authorize")
	}
	if rv == id.RoomV0 {
		rv = id.RoomV1
	}
	if v, ok := roomversion.Lookup(rv); ok {
		return v, nil
	}
	err := fmt.Errorf("%w %q", ErrUnknownRoomVersion, rv)
	if evt.Type == typeCreate {
		return nil, newAuthError(rv, evt.InternalMeta.EventID, ruleCreateRoomVersion, err)
	}
	return nil, err
}

// authorizeCreate applies rule 1.
func authorizeCreate(v *roomversion.Version, evt *pdu.PDU) error {
	c := &check{rv: v.SpecVersion(), version: v, evt: evt}
	err := c.runEventauth(evt, nil)
	if r, ok := ruleOf(err); ok && (r == ruleCreatePrevEvents || r == ruleCreateRoomIDDomain || r == ruleCreateHasRoomID) {
		return err
	}
	// eventauth gap, rule 1.3: "If content.room_version is present and is not
	// a recognised version, reject." eventauth checks the version it is
	// given instead of the content.
	version := id.RoomV1
	if res := gjson.GetBytes(evt.Content, "room_version"); res.Exists() {
		if res.Type != gjson.String || !roomversion.Known(id.RoomVersion(res.Str)) {
			return c.fail(ruleCreateRoomVersion, fmt.Errorf("room_version %s", res.Raw))
		}
		version = id.RoomVersion(res.Str)
	}
	if version != v.ID {
		return fmt.Errorf("m.room.create says room version %s, but it was checked as %s", version, v.ID)
	}
	return err
}

// check is one evaluation of the rules for one event.
type check struct {
	// rv is the spec version whose rules apply (version.SpecVersion()): the
	// one to ask mautrix about. version is the room's own version, whose MSC
	// flags are applied here.
	rv      id.RoomVersion
	version *roomversion.Version
	evt     *pdu.PDU
	create  *pdu.PDU
	// state holds the auth events; it may include the create event and nils.
	state  []*pdu.PDU
	getKey pdu.GetKeyFunc

	pl       powerLevels
	plLoaded bool
}

func (c *check) fail(r rule, err error) *AuthError {
	return newAuthError(c.version.ID, c.evt.InternalMeta.EventID, r, err)
}

// find returns the auth event with the given type and state key, or nil.
func (c *check) find(evtType, stateKey string) *pdu.PDU {
	for _, e := range c.state {
		if e != nil && e.Type == evtType && e.StateKey != nil && *e.StateKey == stateKey {
			return e
		}
	}
	return nil
}

// membership returns user's membership in the auth events; "leave" if none.
func (c *check) membership(user string) event.Membership {
	if m := c.find(typeMember, user); m != nil {
		if res := gjson.GetBytes(m.Content, "membership"); res.Type == gjson.String {
			return event.Membership(res.Str)
		}
	}
	return event.MembershipLeave
}

// checkRoomIDIsCreate applies rule 2 of v12: "If the event's room_id is not
// an event ID for an accepted (not rejected) m.room.create event, with the
// sigil ! instead of $, reject."
func (c *check) checkRoomIDIsCreate(create *pdu.PDU) error {
	wantID, ok := createIDFromRoomID(c.evt.RoomID)
	switch {
	case !ok:
		return c.fail(ruleRoomIDNotCreate, fmt.Errorf("malformed room ID %q", c.evt.RoomID))
	case create == nil:
		return c.fail(ruleRoomIDNotCreate, fmt.Errorf("no event %s", wantID))
	case eventID(c.rv, create) != wantID:
		return c.fail(ruleRoomIDNotCreate, fmt.Errorf("m.room.create is %s, room ID names %s", eventID(c.rv, create), wantID))
	case create.Type != typeCreate || create.StateKey == nil || *create.StateKey != "":
		// eventauth gap: it takes whatever event has the ID as the create
		// event, so a room ID made from any other event's ID would pass.
		return c.fail(ruleRoomIDNotCreate, fmt.Errorf("%s is a %s event", wantID, create.Type))
	case create.InternalMeta.Rejected:
		return c.fail(ruleRoomIDNotCreate, fmt.Errorf("m.room.create %s was rejected", wantID))
	}
	return nil
}

func createIDFromRoomID(roomID id.RoomID) (id.EventID, bool) {
	if len(roomID) < 2 || roomID[0] != '!' {
		return "", false
	}
	return id.EventID("$" + roomID[1:]), true
}

// eventID returns the ID of e: InternalMeta.EventID, or for events that lack
// it the reference hash ID (computed on a copy, as computing it fills in a
// missing content hash). It is "" if neither is available.
func eventID(rv id.RoomVersion, e *pdu.PDU) id.EventID {
	if e.InternalMeta.EventID != "" {
		return e.InternalMeta.EventID
	}
	evtID, err := e.Clone().GetEventID(rv)
	if err != nil {
		return ""
	}
	return evtID
}

// checkAuthEventsList applies the rules about the auth_events list (3.1–3.4
// in v12, 2.1–2.5 before), each over the whole list in the spec's order.
func (c *check) checkAuthEventsList(events []*pdu.PDU) error {
	expected := c.evt.AuthEventSelection(c.rv)
	seen := make([]bool, len(expected))
	var extra map[pdu.StateKey]struct{}
	unexpected := -1
	for i, ae := range events {
		if ae.StateKey == nil {
			if unexpected < 0 {
				unexpected = i
			}
			continue
		}
		key := pdu.StateKey{Type: ae.Type, StateKey: *ae.StateKey}
		j := slices.Index(expected, key)
		if j < 0 {
			if unexpected < 0 {
				unexpected = i
			}
			if extra == nil {
				extra = make(map[pdu.StateKey]struct{})
			}
			if _, dup := extra[key]; dup {
				return c.fail(ruleAuthEventsDuplicate, fmt.Errorf("(%s, %q)", key.Type, key.StateKey))
			}
			extra[key] = struct{}{}
			continue
		}
		if seen[j] {
			return c.fail(ruleAuthEventsDuplicate, fmt.Errorf("(%s, %q)", key.Type, key.StateKey))
		}
		seen[j] = true
	}
	if unexpected >= 0 {
		ae := events[unexpected]
		return c.fail(ruleAuthEventsUnexpected, fmt.Errorf("%s of type %s", c.evt.AuthEvents[unexpected], ae.Type))
	}
	for i, ae := range events {
		if ae.InternalMeta.Rejected {
			return c.fail(ruleAuthEventsRejected, fmt.Errorf("%s", c.evt.AuthEvents[i]))
		}
	}
	if !c.rv.RoomIDIsCreateEventID() && !slices.ContainsFunc(events, func(e *pdu.PDU) bool { return e.Type == typeCreate }) {
		return c.fail(ruleAuthEventsNoCreate, nil)
	}
	for i, ae := range events {
		if ae.RoomID != c.evt.RoomID {
			return c.fail(ruleAuthEventsRoomMismatch, fmt.Errorf("%s is in %s", c.evt.AuthEvents[i], ae.RoomID))
		}
	}
	return nil
}

// authorize applies the rules from "m.federate" (4 in v12, 3 before) on;
// c.create is set.
func (c *check) authorize() error {
	evt := c.evt
	if gjson.GetBytes(c.create.Content, `m\.federate`).Type == gjson.False && c.create.Sender.Homeserver() != evt.Sender.Homeserver() {
		return c.fail(ruleFederationDisabled, nil)
	}
	switch {
	case evt.Type == typeAliases && c.rv.SpecialCasedAliasesAuth():
		return c.authorizeAliases()
	case evt.Type == typeMember:
		return c.authorizeMember()
	case evt.Type == typePowerLevels:
		return c.authorizePowerLevels()
	}
	err := c.runEventauth(evt, c.state)
	if r, ok := ruleOf(err); ok && r == ruleStateKeyNotSender && c.version.OwnedState {
		// eventauth applied the rules before this one and stopped at it; for
		// the types that get here, only "otherwise, allow" follows it (the
		// v1–v2 redaction rule is not in versions with owned state).
		return c.checkStateKey(c.powerLevels().userLevel(evt.Sender))
	}
	if err == nil && evt.Type == typeRedaction && c.rv.EventIDFormat() == id.EventIDFormatCustom {
		return c.authorizeRedaction()
	}
	return err
}

// checkStateKey applies the rule about state keys that start with "@" (9 in
// v12, 8 in v6–v11, 9 in v1–v5): "If the event has a state_key that starts
// with an @ and does not match the sender, reject." senderLevel is the
// sender's power level.
//
// In versions with MSC3757 owned state the rule becomes (MSC3757, "Proposal"):
// a state_key that starts with "@" must, up to the first "_" after its first
// ":" (or to its end), be a valid user ID: the owner of the state. If the
// owner is not the sender, the sender's power level must be greater than the
// owner's. The MSC also raises the state_key limit to 511 bytes with at most
// 256 after the owner; Hearth keeps the 255-byte limit of the event format,
// as Synapse does, so that part cannot fail here. A state_key that does not
// name an owner fails with an error wrapping ErrMalformedStateKey: Synapse
// answers a client that sends one with 400 M_BAD_JSON, not 403.
func (c *check) checkStateKey(senderLevel int64) error {
	sk := c.evt.StateKey
	if sk == nil || !strings.HasPrefix(*sk, "@") || *sk == c.evt.Sender.String() {
		return nil
	}
	if !c.version.OwnedState {
		return c.fail(ruleStateKeyNotSender, nil)
	}
	owner, ok := stateKeyOwner(*sk)
	if !ok {
		return c.fail(ruleStateKeyNoOwner, fmt.Errorf("%w: %q", ErrMalformedStateKey, *sk))
	}
	if owner == c.evt.Sender {
		return nil
	}
	if ownerLevel := c.powerLevels().userLevel(owner); senderLevel <= ownerLevel {
		return c.fail(ruleStateKeyOwnerPower, fmt.Errorf("%s owns the state key with level %d, sender has %d", owner, ownerLevel, senderLevel))
	}
	return nil
}

// stateKeyOwner returns the user who owns a state key that starts with "@"
// under MSC3757: the prefix before the first "_" that follows the first ":",
// or the whole key if no "_" follows it. ok is false if that is not a valid
// user ID. As in Synapse, the localpart is not checked against the user ID
// grammar (historical user IDs are valid owners); the server name is.
// Splitting after the ":" keeps "@matthew:matrix.org.evil.com_x" from
// being owned by @matthew:matrix.org, and "_" cannot occur in a server name.
func stateKeyOwner(stateKey string) (owner id.UserID, ok bool) {
	colon := strings.IndexByte(stateKey, ':')
	if colon < 0 {
		return "", false
	}
	owner = id.UserID(stateKey)
	if i := strings.IndexByte(stateKey[colon+1:], '_'); i >= 0 {
		owner = id.UserID(stateKey[:colon+1+i])
	}
	if _, _, err := owner.ParseAndValidateRelaxed(); err != nil {
		return "", false
	}
	return owner, true
}

// authorizeAliases applies rule 4 of v1–v5. eventauth gap: it has no
// special case for m.room.aliases and applies the generic rules instead
// (membership, power level), which these versions do not.
func (c *check) authorizeAliases() error {
	if c.evt.StateKey == nil {
		return c.fail(ruleAliasesNoStateKey, nil)
	}
	if c.evt.Sender.Homeserver() != *c.evt.StateKey {
		return c.fail(ruleAliasesDomainMismatch, fmt.Errorf("state_key %q, sender %s", *c.evt.StateKey, c.evt.Sender))
	}
	return nil
}

// authorizeRedaction applies rule 11 of v1–v2, reached once rules 1–10 have
// allowed the event. eventauth gap: it treats redactions like other events
// in every version, as rooms v3+ do.
func (c *check) authorizeRedaction() error {
	pl := c.powerLevels()
	if pl.userLevel(c.evt.Sender) >= pl.level(plRedact) {
		return nil
	}
	var redacts id.EventID
	if c.evt.Redacts != nil {
		redacts = *c.evt.Redacts
	}
	_, _, redactsServer := id.ParseCommonIdentifier(redacts)
	_, _, ownServer := id.ParseCommonIdentifier(c.evt.InternalMeta.EventID)
	if redactsServer != "" && redactsServer == ownServer {
		return nil
	}
	return c.fail(ruleRedactionNotAllowed, fmt.Errorf("redacts %q", redacts))
}

// authorizeMember applies rule 5 (4 in v6–v11) to m.room.member events.
func (c *check) authorizeMember() error {
	evt := c.evt
	membershipRes := gjson.GetBytes(evt.Content, "membership")
	if evt.StateKey == nil || !membershipRes.Exists() {
		return c.fail(ruleMemberMissingFields, nil)
	}
	membership := event.Membership(membershipRes.Str)

	forEventauth := evt
	authoriser := gjson.GetBytes(evt.Content, keyAuthoriser)
	if authoriser.Exists() {
		if c.rv.RestrictedJoins() {
			if err := c.checkAuthoriserSignature(authoriser); errors.Is(err, ErrInternal) {
				return err
			} else if err != nil {
				return c.fail(ruleMemberAuthoriserNotSigned, err)
			}
		}
		// eventauth gap, rule 5.2: eventauth verifies this signature in every
		// room version, though the rule only exists from v8 on, and needs a
		// key fetcher to do it. It was checked above, so eventauth sees the
		// event without the key; 5.3.5.2, the only other rule that reads it,
		// is redone below.
		content, err := sjson.DeleteBytes(slices.Clone(evt.Content), keyAuthoriser)
		if err != nil {
			return fmt.Errorf("%w: removing %s: %w", ErrInternal, keyAuthoriser, err)
		}
		stripped := *evt
		stripped.Content = content
		forEventauth = &stripped
	}

	switch membership {
	case event.MembershipJoin:
		if c.isCreatorsFirstJoin() {
			return nil
		}
	case event.MembershipInvite, event.MembershipLeave, event.MembershipBan:
	case event.MembershipKnock:
		if !c.rv.Knocks() {
			// eventauth reports this as the knock join rule (5.7.1); before
			// v7 it is an unknown membership.
			return c.fail(ruleUnknownMembership, fmt.Errorf("membership %q", membership))
		}
	default:
		return c.fail(ruleUnknownMembership, fmt.Errorf("membership %s", membershipRes.Raw))
	}

	err := c.runEventauth(forEventauth, c.state)
	r, failed := ruleOf(err)
	switch {
	case !failed:
		return err
	case r == ruleTPINotSigned:
		if c.thirdPartyInviteSigned() {
			return nil
		}
	case r == ruleTPIMissingFields:
		if !gjson.GetBytes(evt.Content, "third_party_invite.signed").IsObject() {
			return c.fail(ruleTPINoSigned, errors.Unwrap(err))
		}
	case r == ruleJoinAuthoriser && authoriser.Type == gjson.String:
		return c.checkAuthoriser(id.UserID(authoriser.Str))
	}
	return err
}

// isCreatorsFirstJoin applies rule 5.3.1 (5.2.1 before v8): "If the only
// previous event is an m.room.create and the state_key is the creator,
// allow." eventauth gap: it gets the create event's ID by hashing it, which
// fails for v1/v2 (*pdu.PDU has no v1 event IDs), and it also requires at
// most one auth event, which the rule does not. The creator is
// content.creator before v11 and the create event's sender from v11 on.
func (c *check) isCreatorsFirstJoin() bool {
	evt := c.evt
	if len(evt.PrevEvents) != 1 {
		return false
	}
	createID := eventID(c.rv, c.create)
	if createID == "" || evt.PrevEvents[0] != createID {
		return false
	}
	creator := c.create.Sender.String()
	if c.rv.CreatorInContent() {
		res := gjson.GetBytes(c.create.Content, "creator")
		if res.Type != gjson.String {
			return false
		}
		creator = res.Str
	}
	return *evt.StateKey == creator
}

// checkAuthoriserSignature applies rule 5.2.1: "If the event is not validly
// signed by the homeserver of the user ID denoted by the key, reject."
func (c *check) checkAuthoriserSignature(authoriser gjson.Result) (err error) {
	if authoriser.Type != gjson.String {
		return fmt.Errorf("%s is %s, not a user ID", keyAuthoriser, authoriser.Raw)
	}
	_, server, err := id.UserID(authoriser.Str).Parse()
	if err != nil {
		return fmt.Errorf("%s: %w", keyAuthoriser, err)
	}
	if c.getKey == nil {
		if len(c.evt.Signatures[server]) == 0 {
			return fmt.Errorf("no signature from %s", server)
		}
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: verifying signature of %s panicked: %v", ErrInternal, server, p)
		}
	}()
	return c.evt.VerifySignature(c.rv, server, c.getKey)
}

// checkAuthoriser finishes rule 5.3.5.2 for eventauth, which saw the event
// without join_authorised_via_users_server: "If the
// join_authorised_via_users_server key in content is not a user with
// sufficient permission to invite other users or is not a joined member of
// the room, reject."
func (c *check) checkAuthoriser(user id.UserID) error {
	pl := c.powerLevels()
	if level, invite := pl.userLevel(user), pl.level(plInvite); level < invite {
		return c.fail(ruleJoinAuthoriser, fmt.Errorf("%s has level %d, invite needs %d", user, level, invite))
	}
	if m := c.membership(user.String()); m != event.MembershipJoin {
		return c.fail(ruleJoinAuthoriser, fmt.Errorf("%s is %s, not joined", user, m))
	}
	return nil
}

// runEventauth runs eventauth.Authorize on evt with authEvents as its auth
// state, turning its panics into errors and its failures into *AuthError.
func (c *check) runEventauth(evt *pdu.PDU, authEvents []*pdu.PDU) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: eventauth panicked: %v", ErrInternal, p)
		}
	}()
	getEvents := func([]id.EventID) ([]*pdu.PDU, error) {
		return nil, errors.New("no events to load")
	}
	var list []*pdu.PDU
	if c.create != nil {
		shadow := c.shadowCreate()
		list = make([]*pdu.PDU, 0, len(authEvents)+1)
		omitPL := powerLevelsUnused(evt)
		for _, ae := range authEvents {
			switch {
			case ae == nil || ae.Type == typeCreate:
			case ae.Type == typePowerLevels && *ae.StateKey == "":
				if !omitPL {
					list = append(list, c.shadowPowerLevels(evt, ae))
				}
			default:
				list = append(list, ae)
			}
		}
		if c.rv.RoomIDIsCreateEventID() {
			getEvents = func(ids []id.EventID) ([]*pdu.PDU, error) {
				return []*pdu.PDU{shadow}, nil
			}
		} else {
			list = append(list, shadow)
		}
	}
	// v1 and v2 are evaluated as v3: eventauth treats them alike except that
	// it cannot compute v1/v2 event IDs, which it does for the create event
	// on every join (only for rule 5.3.1, which isCreatorsFirstJoin applies).
	rv := c.rv
	if rv.EventIDFormat() == id.EventIDFormatCustom && evt.Type != typeCreate {
		rv = id.RoomV3
	}
	if err := eventauth.Authorize(rv, evt, list, getEvents, nil); err != nil {
		if r, ok := eventauthRule(err); ok {
			return c.fail(r, err)
		}
		return fmt.Errorf("%w: %w", ErrInternal, err)
	}
	return nil
}

// powerLevelsUnused reports whether eventauth's verdict on a member event
// cannot depend on power levels: joins (only a restricted join reads them,
// for the authoriser eventauth is not shown, and checkAuthoriser redoes that
// rule), knocks and leaving by oneself. eventauth is then not shown the
// power levels at all.
func powerLevelsUnused(evt *pdu.PDU) bool {
	if evt.Type != typeMember || evt.StateKey == nil {
		return false
	}
	switch event.Membership(gjson.GetBytes(evt.Content, "membership").Str) {
	case event.MembershipJoin, event.MembershipKnock:
		return true
	case event.MembershipLeave:
		return *evt.StateKey == evt.Sender.String()
	}
	return false
}

// shadowPowerLevels returns the m.room.power_levels event eventauth is
// shown: the levels of evt's sender and state_key, of evt's type and the
// top-level levels, as raw JSON copied from the real event, so eventauth
// reads them exactly as it would there. Nothing else in the content can
// matter to the rules eventauth applies (the authoriser of a restricted join,
// hidden from it, is looked up by checkAuthoriser). eventauth decodes the
// whole content on each check, which with a hundred users listed was three
// quarters of the cost of authorizing a message, and fails on any field it
// cannot decode.
func (c *check) shadowPowerLevels(evt, real *pdu.PDU) *pdu.PDU {
	f := &c.powerLevels().f
	content := make([]byte, 0, 256)
	content = append(content, '{')
	field := func(key string) {
		if len(content) > 1 {
			content = append(content, ',')
		}
		content = appendJSONString(content, key)
		content = append(content, ':')
	}
	for i, v := range f.top {
		if v.Exists() {
			field(plKeyNames[i])
			content = append(content, v.Raw...)
		}
	}
	users := []string{evt.Sender.String()}
	if evt.StateKey != nil && *evt.StateKey != users[0] && evt.Type == typeMember {
		users = append(users, *evt.StateKey)
	}
	if f.users.Exists() {
		field("users")
		content = append(content, '{')
		n := 0
		for _, u := range users {
			if v := objectGet(f.users, u); v.Exists() {
				if n++; n > 1 {
					content = append(content, ',')
				}
				content = appendJSONString(content, u)
				content = append(content, ':')
				content = append(content, v.Raw...)
			}
		}
		content = append(content, '}')
	}
	if v := objectGet(f.events, evt.Type); v.Exists() {
		field("events")
		content = append(content, '{')
		content = appendJSONString(content, evt.Type)
		content = append(content, ':')
		content = append(content, v.Raw...)
		content = append(content, '}')
	}
	content = append(content, '}')
	shadow := *real
	shadow.Content = content
	return &shadow
}

// shadowCreate returns the m.room.create event eventauth is shown: only what
// the rules left to eventauth read from it.
//   - Its sender is the creator: content.creator before v11. eventauth gap:
//     with no power levels event it gives power 100 to the create event's
//     sender, but the rules mean the room creator (and Synapse agrees).
//   - It has no m.federate: rule 4 was applied to the real event, and the
//     shadow's sender may be on another server.
//   - In v12 its content holds just room_version and additional_creators.
//     eventauth gap: it decodes the whole content into
//     event.CreateEventContent on every power level lookup and fails if any
//     field has a type it does not expect ("predecessor": "x"), which the
//     rules do not forbid.
//
// eventauth also hashes this event (for 5.3.1, and in v12 for every power
// level lookup): the shadow is small, and hashing it cannot touch the
// caller's event.
func (c *check) shadowCreate() *pdu.PDU {
	stateKey := ""
	shadow := &pdu.PDU{
		Type:       typeCreate,
		StateKey:   &stateKey,
		RoomID:     c.create.RoomID,
		Sender:     c.create.Sender,
		Content:    []byte("{}"),
		AuthEvents: []id.EventID{},
		PrevEvents: []id.EventID{},
		// A content hash spares eventauth computing one when it hashes the
		// shadow; the shadow's ID is never compared with anything.
		Hashes:       &pdu.Hashes{SHA256: make([]byte, 32)},
		InternalMeta: pdu.InternalMeta{EventID: c.create.InternalMeta.EventID},
	}
	if c.rv.CreatorInContent() {
		shadow.Sender = id.UserID(gjson.GetBytes(c.create.Content, "creator").Str)
	}
	if c.rv.PrivilegedRoomCreators() {
		content := make([]byte, 0, 64)
		content = append(content, `{"room_version":`...)
		content = appendJSONString(content, string(c.rv))
		if creators := additionalCreators(c.create); len(creators) > 0 {
			content = append(content, `,"additional_creators":[`...)
			for i, u := range creators {
				if i > 0 {
					content = append(content, ',')
				}
				content = appendJSONString(content, u.String())
			}
			content = append(content, ']')
		}
		shadow.Content = append(content, '}')
	}
	return shadow
}

// appendJSONString appends s as a JSON string. Room versions and user IDs
// rarely need escaping; when they do, encoding/json does it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b == '"' || b == '\\' || b >= 0x80 {
			quoted, err := json.Marshal(s)
			if err != nil { // invalid UTF-8: cannot be a valid user ID anyway
				return append(dst, `""`...)
			}
			return append(dst, quoted...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// additionalCreators returns the valid user IDs in the additional_creators
// of a v12 create event (rule 1.4 rejects create events with invalid ones).
func additionalCreators(create *pdu.PDU) []id.UserID {
	res := gjson.GetBytes(create.Content, "additional_creators")
	if !res.IsArray() {
		return nil
	}
	var out []id.UserID
	res.ForEach(func(_, v gjson.Result) bool {
		if v.Type == gjson.String {
			if _, _, err := id.UserID(v.Str).Parse(); err == nil {
				out = append(out, id.UserID(v.Str))
			}
		}
		return true
	})
	return out
}

func ruleOf(err error) (rule, bool) {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.rule, true
	}
	return 0, false
}
