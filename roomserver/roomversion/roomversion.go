// Package roomversion describes room versions 1–12, and the unstable versions
// that add an MSC to one of them, as one table of rules and flags. Every part
// of Hearth that behaves differently per room version (event format,
// redaction, auth rules, state resolution, canonical JSON) consults this table
// instead of comparing version strings.
//
// The rules come from the Matrix spec's room version pages ("Room Versions",
// rooms/v1 … rooms/v12) and are cross-checked against mautrix's id.RoomVersion
// methods in the tests.
//
// mautrix knows only the spec's versions, and its id.RoomVersion methods read
// any other string as the newest rules (v12: no create event in auth events,
// room IDs made from hashes). Code that hands a room version to mautrix
// (eventauth, pdu, the id.RoomVersion methods) must hand it SpecVersion.
package roomversion

import (
	"maunium.net/go/mautrix/id"
)

// Default is the room version used for new rooms when a client does not ask for
// one. (The spec's room versions page now suggests 12; 10 is the version most
// deployed servers default to.)
const Default id.RoomVersion = id.RoomV10

// EventIDFormat says how the ID of an event is obtained.
type EventIDFormat uint8

const (
	// EventIDOriginBased is the room v1/v2 format: "$opaque:server", chosen by
	// the originating server and carried in the event's event_id field.
	EventIDOriginBased EventIDFormat = iota + 1
	// EventIDBase64 is the room v3 format: "$" + standard unpadded base64 of the
	// event's reference hash.
	EventIDBase64
	// EventIDURLSafeBase64 is the room v4+ format: "$" + URL-safe unpadded
	// base64 of the event's reference hash.
	EventIDURLSafeBase64
)

// String returns a short name for the format.
func (f EventIDFormat) String() string {
	switch f {
	case EventIDOriginBased:
		return "origin-based"
	case EventIDBase64:
		return "base64"
	case EventIDURLSafeBase64:
		return "url-safe-base64"
	default:
		return "unknown"
	}
}

// RedactionAlgorithm names a variant of the redaction algorithm. The names are
// those of the spec fragments that define them; later versions reuse the
// variant of the version that introduced it.
type RedactionAlgorithm uint8

const (
	// RedactionV1 is used by rooms v1–v5: m.room.aliases keeps "aliases".
	RedactionV1 RedactionAlgorithm = iota + 1
	// RedactionV6 is used by rooms v6–v7: m.room.aliases is no longer special.
	RedactionV6
	// RedactionV8 is used by room v8: m.room.join_rules also keeps "allow".
	RedactionV8
	// RedactionV9 is used by rooms v9–v10: m.room.member also keeps
	// "join_authorised_via_users_server".
	RedactionV9
	// RedactionV11 is used by rooms v11+: the top-level origin, membership and
	// prev_state keys are no longer kept; m.room.create keeps all of its content,
	// m.room.redaction keeps "redacts", m.room.power_levels keeps "invite" and
	// m.room.member keeps third_party_invite.signed.
	RedactionV11
)

// String returns the name of the spec fragment that defines the variant.
func (r RedactionAlgorithm) String() string {
	switch r {
	case RedactionV1:
		return "v1"
	case RedactionV6:
		return "v6"
	case RedactionV8:
		return "v8"
	case RedactionV9:
		return "v9"
	case RedactionV11:
		return "v11"
	default:
		return "unknown"
	}
}

// StateResAlgorithm names a state resolution algorithm.
type StateResAlgorithm uint8

const (
	// StateResV1 is the original algorithm, used only by room v1.
	StateResV1 StateResAlgorithm = iota + 1
	// StateResV2 is used by rooms v2–v11.
	StateResV2
	// StateResV2_1 is state resolution v2.1 (MSC4297), used by room v12.
	StateResV2_1
)

// String returns the algorithm's name as the spec writes it.
func (s StateResAlgorithm) String() string {
	switch s {
	case StateResV1:
		return "v1"
	case StateResV2:
		return "v2"
	case StateResV2_1:
		return "v2.1"
	default:
		return "unknown"
	}
}

// Version is one row of the room version table. Values returned by Lookup and
// All are shared: treat them as read-only.
type Version struct {
	// ID is the version string as it appears in m.room.create's room_version.
	ID id.RoomVersion
	// Stable is true for versions the spec lists as stable.
	Stable bool
	// Base is, for an unstable version, the spec version it extends: every
	// rule and flag is that version's except the MSC flags below. It is empty
	// for spec versions. See SpecVersion.
	Base id.RoomVersion

	// EventIDFormat says how event IDs are made (v1/v2 origin-based, v3 base64,
	// v4+ URL-safe base64).
	EventIDFormat EventIDFormat
	// Redaction is the redaction algorithm, which also shapes reference hashes
	// and therefore event IDs.
	Redaction RedactionAlgorithm
	// StateRes is the state resolution algorithm.
	StateRes StateResAlgorithm

	// EnforceKeyValidity (v5+): a signing key's valid_until_ts must be at least
	// the event's origin_server_ts for its signature to count.
	EnforceKeyValidity bool
	// SpecialCasedAliasesAuth (v1–v5): m.room.aliases events are authorised by a
	// special rule (state_key must be the sender's domain) and keep "aliases"
	// on redaction.
	SpecialCasedAliasesAuth bool
	// StrictCanonicalJSON (v6+): events must be canonical JSON — floats and
	// integers outside [-(2^53)+1, (2^53)-1] are rejected, and depth is capped
	// at 2^53-1 instead of 2^63-1.
	StrictCanonicalJSON bool
	// NotificationsPowerLevels (v6+): the "notifications" key of
	// m.room.power_levels is checked by the auth rules.
	NotificationsPowerLevels bool
	// Knocking (v7+): the "knock" join rule and membership exist.
	Knocking bool
	// RestrictedJoins (v8+): the "restricted" join rule and the join_rules
	// "allow" key exist; joins may carry join_authorised_via_users_server.
	RestrictedJoins bool
	// RestrictedJoinsFix (v9+): join_authorised_via_users_server survives
	// redaction of m.room.member events.
	RestrictedJoinsFix bool
	// KnockRestricted (v10+): the "knock_restricted" join rule exists.
	KnockRestricted bool
	// IntegerPowerLevels (v10+): power level values must be JSON integers (v1–v9
	// also accept strings holding integers).
	IntegerPowerLevels bool
	// CreatorInContent (v1–v10): m.room.create carries content.creator, which
	// names the room creator and survives redaction.
	CreatorInContent bool
	// RedactsInContent (v11+): m.room.redaction carries the redacted event ID in
	// content.redacts instead of the top-level redacts key.
	RedactsInContent bool
	// UpdatedRedactionRules (v11+): the MSC2176/MSC3821/MSC3989 redaction
	// changes apply (see RedactionV11).
	UpdatedRedactionRules bool
	// PrivilegedCreators (v12+): the creators (the create event's sender plus
	// content.additional_creators) have infinite power and cannot appear in
	// m.room.power_levels.
	PrivilegedCreators bool
	// RoomIDIsCreateEventID (v12+): the room ID is the create event's ID with
	// "!" for "$", and the create event itself has no room_id.
	RoomIDIsCreateEventID bool
	// StrictByteLimits (v11+): the 255-byte limits on sender, room_id,
	// state_key, type and event_id drop an event that breaks them. Earlier
	// versions contain events that only kept to a 255-codepoint limit, so there
	// an event over the byte limit but within the codepoint limit is kept as a
	// rejected event rather than dropped (Synapse's behaviour, which the rooms in
	// the wild were built by).
	StrictByteLimits bool

	// OwnedState (MSC3757, unstable versions org.matrix.msc3757.*): a state
	// key that starts with "@" must be a valid user ID, alone or followed by
	// "_" and a suffix, and names the user who owns the state. Someone else
	// may send it only with a power level greater than the owner's. Without
	// the flag only the user whose ID equals the state key may send it.
	OwnedState bool
}

// SpecVersion returns the spec room version whose rules v follows apart from
// its MSC flags: Base for an unstable version, ID for a spec version. This is
// the version to pass to mautrix.
func (v *Version) SpecVersion() id.RoomVersion {
	if v.Base != "" {
		return v.Base
	}
	return v.ID
}

// IsOriginBasedEventIDs reports whether events carry their own event_id (v1/v2).
func (v *Version) IsOriginBasedEventIDs() bool {
	return v.EventIDFormat == EventIDOriginBased
}

// MaxDepth returns the largest depth an event may have: 2^63-1 before v6, and
// 2^53-1 from v6 on, where canonical JSON limits integers.
func (v *Version) MaxDepth() int64 {
	if v.StrictCanonicalJSON {
		return 1<<53 - 1
	}
	return 1<<63 - 1
}

// String returns the version ID.
func (v *Version) String() string {
	return string(v.ID)
}

// table holds one entry per room version in ascending order. Each entry is
// written out in full so that the differences between versions can be read
// down a column.
var table = [...]Version{
	{
		ID: id.RoomV1, Stable: true,
		EventIDFormat: EventIDOriginBased, Redaction: RedactionV1, StateRes: StateResV1,
		SpecialCasedAliasesAuth: true,
		CreatorInContent:        true,
	},
	{
		ID: id.RoomV2, Stable: true,
		EventIDFormat: EventIDOriginBased, Redaction: RedactionV1, StateRes: StateResV2,
		SpecialCasedAliasesAuth: true,
		CreatorInContent:        true,
	},
	{
		ID: id.RoomV3, Stable: true,
		EventIDFormat: EventIDBase64, Redaction: RedactionV1, StateRes: StateResV2,
		SpecialCasedAliasesAuth: true,
		CreatorInContent:        true,
	},
	{
		ID: id.RoomV4, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV1, StateRes: StateResV2,
		SpecialCasedAliasesAuth: true,
		CreatorInContent:        true,
	},
	{
		ID: id.RoomV5, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV1, StateRes: StateResV2,
		EnforceKeyValidity:      true,
		SpecialCasedAliasesAuth: true,
		CreatorInContent:        true,
	},
	{
		ID: id.RoomV6, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV6, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		CreatorInContent:         true,
	},
	{
		ID: id.RoomV7, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV6, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		CreatorInContent:         true,
	},
	{
		ID: id.RoomV8, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV8, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		RestrictedJoins:          true,
		CreatorInContent:         true,
	},
	{
		ID: id.RoomV9, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV9, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		RestrictedJoins:          true,
		RestrictedJoinsFix:       true,
		CreatorInContent:         true,
	},
	{
		ID: id.RoomV10, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV9, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		RestrictedJoins:          true,
		RestrictedJoinsFix:       true,
		KnockRestricted:          true,
		IntegerPowerLevels:       true,
		CreatorInContent:         true,
	},
	{
		ID: id.RoomV11, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV11, StateRes: StateResV2,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		RestrictedJoins:          true,
		RestrictedJoinsFix:       true,
		KnockRestricted:          true,
		IntegerPowerLevels:       true,
		RedactsInContent:         true,
		UpdatedRedactionRules:    true,
		StrictByteLimits:         true,
	},
	{
		ID: id.RoomV12, Stable: true,
		EventIDFormat: EventIDURLSafeBase64, Redaction: RedactionV11, StateRes: StateResV2_1,
		EnforceKeyValidity:       true,
		StrictCanonicalJSON:      true,
		NotificationsPowerLevels: true,
		Knocking:                 true,
		RestrictedJoins:          true,
		RestrictedJoinsFix:       true,
		KnockRestricted:          true,
		IntegerPowerLevels:       true,
		RedactsInContent:         true,
		UpdatedRedactionRules:    true,
		PrivilegedCreators:       true,
		RoomIDIsCreateEventID:    true,
		StrictByteLimits:         true,
	},
}

// unstable holds the unstable room versions Hearth supports, each a spec
// version with an MSC's flag added (Synapse's experimental versions of the
// same names; they are not advertised as stable). Like Synapse, Hearth has
// them for the MSC's Complement tests and for clients that try them out.
var unstable = [...]Version{
	// MSC3757 "Restricting who can overwrite a state event" asks for its
	// rules on top of v10 or later as org.matrix.msc3757.<version>.
	withMSC(table[9], "org.matrix.msc3757.10", func(v *Version) { v.OwnedState = true }),
	withMSC(table[10], "org.matrix.msc3757.11", func(v *Version) { v.OwnedState = true }),
}

// withMSC returns base as the unstable version versionID, with the changes
// an MSC makes applied by set.
func withMSC(base Version, versionID id.RoomVersion, set func(*Version)) Version {
	v := base
	v.ID = versionID
	v.Stable = false
	v.Base = base.ID
	set(&v)
	return v
}

// all is the ordered list handed out by All (the spec versions in ascending
// order, then the unstable ones); built once from the tables.
var all = func() []*Version {
	out := make([]*Version, 0, len(table)+len(unstable))
	for i := range table {
		out = append(out, &table[i])
	}
	for i := range unstable {
		out = append(out, &unstable[i])
	}
	return out
}()

// Lookup returns the table entry for a room version. The empty version is not
// known: an m.room.create event without room_version means version "1", and
// the caller reading the create event applies that default.
func Lookup(v id.RoomVersion) (*Version, bool) {
	// Versions "1".."12" are one or two ASCII digits; index the table directly
	// instead of searching, since this is called for every event.
	n := 0
	switch len(v) {
	case 1:
		if v[0] < '1' || v[0] > '9' {
			return nil, false
		}
		n = int(v[0] - '0')
	case 2:
		if v[0] != '1' || v[1] < '0' || v[1] > '9' {
			return nil, false
		}
		n = 10 + int(v[1]-'0')
	default:
		for i := range unstable {
			if unstable[i].ID == v {
				return &unstable[i], true
			}
		}
		return nil, false
	}
	if n > len(table) {
		return nil, false
	}
	return &table[n-1], true
}

// MustLookup is Lookup for versions known at compile time (tests, defaults);
// it panics on an unknown version and must not be used with input.
func MustLookup(v id.RoomVersion) *Version {
	rv, ok := Lookup(v)
	if !ok {
		panic("roomversion: unknown room version " + string(v))
	}
	return rv
}

// Known reports whether v is a room version Hearth supports.
func Known(v id.RoomVersion) bool {
	_, ok := Lookup(v)
	return ok
}

// SpecVersion returns the spec room version whose rules rv follows (see
// Version.SpecVersion), or rv itself if it is not a known version.
func SpecVersion(rv id.RoomVersion) id.RoomVersion {
	if v, ok := Lookup(rv); ok {
		return v.SpecVersion()
	}
	return rv
}

// All returns every supported room version: the spec versions in ascending
// order, then the unstable ones. The slice is a fresh copy; the entries are
// shared and read-only.
func All() []*Version {
	out := make([]*Version, len(all))
	copy(out, all)
	return out
}

// Available returns the supported versions as the Client-Server API's
// GET /capabilities reports them in m.room_versions.available: version ID to
// "stable" or "unstable". The map is fresh and may be modified.
func Available() map[id.RoomVersion]string {
	out := make(map[id.RoomVersion]string, len(all))
	for _, v := range all {
		if v.Stable {
			out[v.ID] = "stable"
		} else {
			out[v.ID] = "unstable"
		}
	}
	return out
}
