package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// AuthError reports that an event failed one of the authorization rules of
// its room version. Step is the number of the failed rule in that room
// version's list ("5.3.3" in v12 is "4.3.3" in v11 and "5.2.3" in v1), Rule
// says in words what the rule checks, and Err, when set, is the underlying
// cause (often a wrapped eventauth.AuthFailError).
type AuthError struct {
	RoomVersion id.RoomVersion
	EventID     id.EventID
	Step        string
	Rule        string
	Err         error

	rule rule
}

// Error implements error.
func (e *AuthError) Error() string {
	var b strings.Builder
	b.WriteString("event ")
	if e.EventID != "" {
		b.WriteString(string(e.EventID))
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "fails auth rule %s of room version %s (%s)", e.Step, displayVersion(e.RoomVersion), e.Rule)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *AuthError) Unwrap() error { return e.Err }

var (
	// ErrUnknownRoomVersion is returned for room versions this package has no
	// rules for (m.room.create events of such versions fail rule 1.3 instead).
	ErrUnknownRoomVersion = errors.New("unknown room version")
	// ErrMissingAuthEvent is returned by CheckAuthEvents when an entry of the
	// event's auth_events could not be loaded: the caller should fetch it and
	// retry, or reject the event if it cannot be found.
	ErrMissingAuthEvent = errors.New("missing auth event")
	// ErrInternal marks failures of the check itself (a panic inside
	// eventauth, unparseable power levels); the event has not been judged.
	ErrInternal = errors.New("internal error in event authorization")
	// ErrMalformedStateKey is wrapped by the *AuthError of an event, in a
	// room version with MSC3757 owned state, whose state_key starts with "@"
	// but neither is a valid user ID nor starts with one followed by "_".
	// The event is malformed rather than forbidden: the Client-Server API
	// answers 400 M_BAD_JSON, as Synapse does.
	ErrMalformedStateKey = errors.New("state key neither equals a valid user ID nor starts with one followed by an underscore")
)

func displayVersion(rv id.RoomVersion) string {
	if rv == "" {
		return "1"
	}
	return string(rv)
}

// rule is one rejecting authorization rule. Rules are numbered the way room
// version 12 numbers them (step); stepFor renumbers them for older versions.
// Rules that no longer exist in v12 carry their number in the versions that
// have them (legacy).
type rule int

const (
	ruleCreatePrevEvents rule = iota
	ruleCreateRoomIDDomain
	ruleCreateHasRoomID
	ruleCreateRoomVersion
	ruleCreateNoCreator
	ruleCreateAdditionalCreators
	ruleRoomIDNotCreate
	ruleAuthEventsDuplicate
	ruleAuthEventsUnexpected
	ruleAuthEventsRejected
	ruleAuthEventsNoCreate
	ruleAuthEventsRoomMismatch
	ruleFederationDisabled
	ruleAliasesNoStateKey
	ruleAliasesDomainMismatch
	ruleMemberMissingFields
	ruleMemberAuthoriserNotSigned
	ruleJoinSenderNotTarget
	ruleJoinBanned
	ruleJoinAuthoriser
	ruleJoinNotAllowed
	ruleTPIBanned
	ruleTPINoSigned
	ruleTPIMissingFields
	ruleTPIMXIDMismatch
	ruleTPINotFound
	ruleTPISenderMismatch
	ruleTPINotSigned
	ruleInviteSenderNotJoined
	ruleInviteTargetJoinedOrBanned
	ruleInviteInsufficientPower
	ruleLeaveNotMember
	ruleKickSenderNotJoined
	ruleUnbanInsufficientPower
	ruleKickInsufficientPower
	ruleBanSenderNotJoined
	ruleBanInsufficientPower
	ruleKnockJoinRule
	ruleKnockSenderNotTarget
	ruleKnockAlreadyMember
	ruleUnknownMembership
	ruleSenderNotJoined
	ruleThirdPartyInvitePower
	ruleInsufficientPower
	ruleStateKeyNotSender
	ruleStateKeyNoOwner
	ruleStateKeyOwnerPower
	rulePLTopLevelNotInt
	rulePLMapNotInt
	rulePLUsersInvalid
	rulePLCreatorListed
	rulePLTopLevelCurrentTooHigh
	rulePLTopLevelNewTooHigh
	rulePLMapCurrentTooHigh
	rulePLMapNewTooHigh
	rulePLUsersCurrentTooHigh
	rulePLUsersNewTooHigh
	ruleRedactionNotAllowed
	numRules
)

type ruleInfo struct {
	step   string // number in room version 12, "" if the rule is gone in v12
	legacy string // number in the versions that have the rule, if step is ""
	what   string
}

var rules = [numRules]ruleInfo{
	ruleCreatePrevEvents:           {"1.1", "", "m.room.create has prev_events"},
	ruleCreateRoomIDDomain:         {"1.2", "", "m.room.create room_id domain does not match sender"},
	ruleCreateHasRoomID:            {"1.2", "", "m.room.create has a room_id"},
	ruleCreateRoomVersion:          {"1.3", "", "m.room.create content.room_version is not a recognised version"},
	ruleCreateNoCreator:            {"", "1.4", "m.room.create content has no creator"},
	ruleCreateAdditionalCreators:   {"1.4", "", "m.room.create additional_creators is not an array of valid user IDs"},
	ruleRoomIDNotCreate:            {"2", "", "room_id is not the ID of an accepted m.room.create event"},
	ruleAuthEventsDuplicate:        {"3.1", "", "auth_events has duplicate type/state_key pairs"},
	ruleAuthEventsUnexpected:       {"3.2", "", "auth_events has entries not chosen by auth events selection"},
	ruleAuthEventsRejected:         {"3.3", "", "auth_events has rejected entries"},
	ruleAuthEventsNoCreate:         {"", "2.4", "auth_events has no m.room.create event"},
	ruleAuthEventsRoomMismatch:     {"3.4", "", "auth_events has entries from another room"},
	ruleFederationDisabled:         {"4", "", "m.federate is false and sender is on another server than the creator"},
	ruleAliasesNoStateKey:          {"", "4.1", "m.room.aliases has no state_key"},
	ruleAliasesDomainMismatch:      {"", "4.2", "m.room.aliases state_key is not the sender's domain"},
	ruleMemberMissingFields:        {"5.1", "", "m.room.member has no state_key or no membership"},
	ruleMemberAuthoriserNotSigned:  {"5.2.1", "", "not signed by the server of join_authorised_via_users_server"},
	ruleJoinSenderNotTarget:        {"5.3.2", "", "join: sender is not state_key"},
	ruleJoinBanned:                 {"5.3.3", "", "join: sender is banned"},
	ruleJoinAuthoriser:             {"5.3.5.2", "", "join: authorising user cannot invite or is not joined"},
	ruleJoinNotAllowed:             {"5.3.7", "", "join: not allowed by the join rule"},
	ruleTPIBanned:                  {"5.4.1.1", "", "third-party invite: target is banned"},
	ruleTPINoSigned:                {"5.4.1.2", "", "third-party invite: no signed property"},
	ruleTPIMissingFields:           {"5.4.1.3", "", "third-party invite: signed has no mxid or token"},
	ruleTPIMXIDMismatch:            {"5.4.1.4", "", "third-party invite: mxid is not state_key"},
	ruleTPINotFound:                {"5.4.1.5", "", "third-party invite: no m.room.third_party_invite for token"},
	ruleTPISenderMismatch:          {"5.4.1.6", "", "third-party invite: sender did not send the m.room.third_party_invite"},
	ruleTPINotSigned:               {"5.4.1.8", "", "third-party invite: no valid signature from the invite's public keys"},
	ruleInviteSenderNotJoined:      {"5.4.2", "", "invite: sender is not joined"},
	ruleInviteTargetJoinedOrBanned: {"5.4.3", "", "invite: target is joined or banned"},
	ruleInviteInsufficientPower:    {"5.4.5", "", "invite: sender is below the invite level"},
	ruleLeaveNotMember:             {"5.5.1", "", "leave: sender is not invited, joined or knocking"},
	ruleKickSenderNotJoined:        {"5.5.2", "", "kick: sender is not joined"},
	ruleUnbanInsufficientPower:     {"5.5.3", "", "unban: sender is below the ban level"},
	ruleKickInsufficientPower:      {"5.5.5", "", "kick: sender is below the kick level or the target's level"},
	ruleBanSenderNotJoined:         {"5.6.1", "", "ban: sender is not joined"},
	ruleBanInsufficientPower:       {"5.6.3", "", "ban: sender is below the ban level or the target's level"},
	ruleKnockJoinRule:              {"5.7.1", "", "knock: join rule does not allow knocking"},
	ruleKnockSenderNotTarget:       {"5.7.2", "", "knock: sender is not state_key"},
	ruleKnockAlreadyMember:         {"5.7.4", "", "knock: sender is invited, joined or banned"},
	ruleUnknownMembership:          {"5.8", "", "unknown membership"},
	ruleSenderNotJoined:            {"6", "", "sender is not joined"},
	ruleThirdPartyInvitePower:      {"7.1", "", "m.room.third_party_invite: sender is below the invite level"},
	ruleInsufficientPower:          {"8", "", "sender is below the event's required power level"},
	ruleStateKeyNotSender:          {"9", "", "state_key starts with @ and is not the sender"},
	// MSC3757 replaces rule 9 with 9.1.1–9.1.3 and 9.2 (v12 numbering).
	ruleStateKeyNoOwner:          {"9.1.1", "", "state_key starts with @ but not with a valid user ID alone or followed by _"},
	ruleStateKeyOwnerPower:       {"9.1.3", "", "state_key is owned by another user whose power level is not below the sender's"},
	rulePLTopLevelNotInt:         {"10.1", "", "power levels: top-level level is not an integer"},
	rulePLMapNotInt:              {"10.2", "", "power levels: events or notifications is not an object of integers"},
	rulePLUsersInvalid:           {"10.3", "", "power levels: users is not an object of user IDs to integers"},
	rulePLCreatorListed:          {"10.4", "", "power levels: users lists a room creator"},
	rulePLTopLevelCurrentTooHigh: {"10.6.1", "", "power levels: changed level's current value is above the sender's"},
	rulePLTopLevelNewTooHigh:     {"10.6.2", "", "power levels: changed level's new value is above the sender's"},
	rulePLMapCurrentTooHigh:      {"10.7.1", "", "power levels: changed events/notifications entry's current value is above the sender's"},
	rulePLMapNewTooHigh:          {"10.8.1", "", "power levels: new events/notifications entry is above the sender's level"},
	rulePLUsersCurrentTooHigh:    {"10.9.1", "", "power levels: changed user's current level is not below the sender's"},
	rulePLUsersNewTooHigh:        {"10.10.1", "", "power levels: new user level is above the sender's"},
	ruleRedactionNotAllowed:      {"", "11.3", "redaction: sender is below the redact level and the event is from another server"},
}

// stepFor returns the number of rule r in room version rv.
//
// The lists differ between versions only by insertions and removals:
// v1–v5 have the m.room.aliases rule as step 4; v1–v11 check auth_events at
// step 2 (with a create-event check as 2.4), v12 inserts the room ID check
// as step 2; membership gained knock (v7) and join_authorised_via_users_server
// and restricted joins (v8); power levels gained type checks (v10) and the
// creators rule (v12).
func stepFor(rv id.RoomVersion, r rule) string {
	rv = roomversion.SpecVersion(rv)
	info := rules[r]
	if info.step == "" {
		return info.legacy
	}
	if rv.RoomIDIsCreateEventID() {
		return info.step
	}
	parts := strings.Split(info.step, ".")
	top, _ := strconv.Atoi(parts[0])
	switch {
	case top == 1:
		return info.step
	case top == 3 && len(parts) > 1 && parts[1] == "4":
		// v1–v11 number the room_id check 2.5, after "no m.room.create" (2.4).
		parts[1] = "5"
	}
	// Steps 3 and 4 of v12 are 2 and 3 before it; later steps keep their
	// v12 number in v1–v5 (m.room.aliases fills the gap) and lose one in v6–v11.
	if top <= 4 || !rv.SpecialCasedAliasesAuth() {
		parts[0] = strconv.Itoa(top - 1)
	}
	switch top {
	case 5:
		renumberMember(rv, parts)
	case 10:
		renumberPowerLevels(rv, parts)
	}
	return strings.Join(parts, ".")
}

func renumberMember(rv id.RoomVersion, parts []string) {
	if len(parts) < 2 || rv.RestrictedJoins() {
		return
	}
	sub, _ := strconv.Atoi(parts[1])
	switch {
	case sub == 8 && !rv.Knocks(): // unknown membership: 5.6 (v1–v6)
		sub = 6
	case sub > 2: // no 5.2 (join_authorised_via_users_server) before v8
		sub--
	}
	parts[1] = strconv.Itoa(sub)
	// Join "otherwise, reject" is 5.2.6 before restricted joins existed.
	if sub == 2 && len(parts) > 2 && parts[2] == "7" {
		parts[2] = "6"
	}
}

func renumberPowerLevels(rv id.RoomVersion, parts []string) {
	if len(parts) < 2 {
		return
	}
	sub, _ := strconv.Atoi(parts[1])
	switch {
	case rv.PrivilegedRoomCreators():
	case !rv.ValidatePowerLevelInts(): // v1–v9: only the users check, then changes from 10.3
		if sub == 3 {
			sub = 1
		} else if sub >= 5 {
			sub -= 3
		}
	case sub >= 5: // v10–v11: no creators rule
		sub--
	}
	parts[1] = strconv.Itoa(sub)
}

func newAuthError(rv id.RoomVersion, evtID id.EventID, r rule, err error) *AuthError {
	return &AuthError{RoomVersion: rv, EventID: evtID, Step: stepFor(rv, r), Rule: rules[r].what, Err: err, rule: r}
}

// eventauthRules maps eventauth's sentinel errors to our rules; eventauth's
// own Index strings are not reliable (several are off by one or "10.x") and
// follow v12 numbering only.
var eventauthRules = map[eventauth.AuthFailError]rule{
	eventauth.ErrCreateHasPrevEvents:                  ruleCreatePrevEvents,
	eventauth.ErrCreateHasRoomID:                      ruleCreateHasRoomID,
	eventauth.ErrRoomIDDoesntMatchSender:              ruleCreateRoomIDDomain,
	eventauth.ErrUnknownRoomVersion:                   ruleCreateRoomVersion,
	eventauth.ErrInvalidAdditionalCreators:            ruleCreateAdditionalCreators,
	eventauth.ErrMissingCreator:                       ruleCreateNoCreator,
	eventauth.ErrInvalidRoomIDLength:                  ruleRoomIDNotCreate,
	eventauth.ErrCreateEventNotFound:                  ruleRoomIDNotCreate,
	eventauth.ErrRejectedCreateEvent:                  ruleRoomIDNotCreate,
	eventauth.ErrDuplicateAuthEvent:                   ruleAuthEventsDuplicate,
	eventauth.ErrNonStateAuthEvent:                    ruleAuthEventsUnexpected,
	eventauth.ErrUnexpectedAuthEvent:                  ruleAuthEventsUnexpected,
	eventauth.ErrNoCreateEvent:                        ruleAuthEventsNoCreate,
	eventauth.ErrRejectedAuthEvent:                    ruleAuthEventsRejected,
	eventauth.ErrMismatchingRoomIDInAuthEvent:         ruleAuthEventsRoomMismatch,
	eventauth.ErrFederationDisabled:                   ruleFederationDisabled,
	eventauth.ErrMemberNotState:                       ruleMemberMissingFields,
	eventauth.ErrNotSignedByAuthoriser:                ruleMemberAuthoriserNotSigned,
	eventauth.ErrCantJoinOtherUser:                    ruleJoinSenderNotTarget,
	eventauth.ErrCantJoinBanned:                       ruleJoinBanned,
	eventauth.ErrAuthoriserCantInvite:                 ruleJoinAuthoriser,
	eventauth.ErrAuthoriserNotInRoom:                  ruleJoinAuthoriser,
	eventauth.ErrCantJoinWithoutInvite:                ruleJoinNotAllowed,
	eventauth.ErrInvalidJoinRule:                      ruleJoinNotAllowed,
	eventauth.ErrThirdPartyInviteBanned:               ruleTPIBanned,
	eventauth.ErrThirdPartyInviteMissingFields:        ruleTPIMissingFields,
	eventauth.ErrThirdPartyInviteMXIDMismatch:         ruleTPIMXIDMismatch,
	eventauth.ErrThirdPartyInviteNotFound:             ruleTPINotFound,
	eventauth.ErrThirdPartyInviteSenderMismatch:       ruleTPISenderMismatch,
	eventauth.ErrThirdPartyInviteNotSigned:            ruleTPINotSigned,
	eventauth.ErrInviterNotInRoom:                     ruleInviteSenderNotJoined,
	eventauth.ErrInviteTargetAlreadyInRoom:            ruleInviteTargetJoinedOrBanned,
	eventauth.ErrInviteTargetBanned:                   ruleInviteTargetJoinedOrBanned,
	eventauth.ErrInsufficientPermissionForInvite:      ruleInviteInsufficientPower,
	eventauth.ErrCantLeaveWithoutBeingInRoom:          ruleLeaveNotMember,
	eventauth.ErrCantKickWithoutBeingInRoom:           ruleKickSenderNotJoined,
	eventauth.ErrInsufficientPermissionForUnban:       ruleUnbanInsufficientPower,
	eventauth.ErrInsufficientPermissionForKick:        ruleKickInsufficientPower,
	eventauth.ErrCantBanWithoutBeingInRoom:            ruleBanSenderNotJoined,
	eventauth.ErrInsufficientPermissionForBan:         ruleBanInsufficientPower,
	eventauth.ErrNotKnockableRoom:                     ruleKnockJoinRule,
	eventauth.ErrCantKnockOtherUser:                   ruleKnockSenderNotTarget,
	eventauth.ErrCantKnockWhileInRoom:                 ruleKnockAlreadyMember,
	eventauth.ErrUnknownMembership:                    ruleUnknownMembership,
	eventauth.ErrNotInRoom:                            ruleSenderNotJoined,
	eventauth.ErrInsufficientPowerForThirdPartyInvite: ruleThirdPartyInvitePower,
	eventauth.ErrInsufficientPowerLevel:               ruleInsufficientPower,
	eventauth.ErrMismatchingPrivateStateKey:           ruleStateKeyNotSender,
	eventauth.ErrTopLevelPLNotInteger:                 rulePLTopLevelNotInt,
	eventauth.ErrPLNotInteger:                         rulePLMapNotInt,
	eventauth.ErrInvalidUserIDInPL:                    rulePLUsersInvalid,
	eventauth.ErrUserPLNotInteger:                     rulePLUsersInvalid,
	eventauth.ErrCreatorInPowerLevels:                 rulePLCreatorListed,
	eventauth.ErrInvalidPowerChange:                   rulePLTopLevelNewTooHigh,
	eventauth.ErrInvalidUserPowerChange:               rulePLUsersCurrentTooHigh,
}

// eventauthRule returns the rule behind an error from eventauth.Authorize.
func eventauthRule(err error) (rule, bool) {
	var afe eventauth.AuthFailError
	if !errors.As(err, &afe) {
		return 0, false
	}
	r, ok := eventauthRules[afe]
	return r, ok
}
