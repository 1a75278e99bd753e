package events

import (
	"encoding/json/jsontext"

	"hearth/roomserver/roomversion"
)

// The redaction algorithm (Client-Server API, "Redactions", with the variant
// for each room version in rooms/fragments/v1-, v6-, v8 (inline), v9- and
// v11-redactions), applied to canonical JSON. Keeping a subset of the members
// of a canonical object, in their original order, gives canonical JSON again,
// so the output needs no re-sorting.

// keepTopLevel reports whether a top-level key survives redaction.
func keepTopLevel(alg roomversion.RedactionAlgorithm, rawKey []byte) bool {
	switch string(rawKey) {
	case `"event_id"`, `"type"`, `"room_id"`, `"sender"`, `"state_key"`, `"content"`,
		`"hashes"`, `"signatures"`, `"depth"`, `"prev_events"`, `"auth_events"`,
		`"origin_server_ts"`:
		return true
	case `"prev_state"`, `"origin"`, `"membership"`:
		// No longer kept from v11 (MSC2176).
		return alg < roomversion.RedactionV11
	}
	return false
}

// contentRule says which content keys an event type keeps.
type contentRule struct {
	keys []string
	// all keeps the whole content (m.room.create from v11).
	all bool
	// thirdPartyInviteSigned keeps content.third_party_invite.signed
	// (m.room.member from v11, MSC3821).
	thirdPartyInviteSigned bool
}

// Content keys kept by each rule, in sorted order.
var (
	keysMembership     = []string{"membership"}
	keysMembershipV9   = []string{"join_authorised_via_users_server", "membership"}
	keysCreator        = []string{"creator"}
	keysJoinRule       = []string{"join_rule"}
	keysJoinRuleV8     = []string{"allow", "join_rule"}
	keysPowerLevels    = []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
	keysPowerLevelsV11 = []string{"ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"}
	keysHistoryVis     = []string{"history_visibility"}
	keysAliases        = []string{"aliases"}
	keysRedacts        = []string{"redacts"}
)

// contentRuleFor returns the content redaction rule for an event type given as
// its raw canonical JSON string.
func contentRuleFor(alg roomversion.RedactionAlgorithm, rawType []byte) contentRule {
	switch string(rawType) {
	case `"m.room.member"`:
		r := contentRule{keys: keysMembership}
		if alg >= roomversion.RedactionV9 {
			r.keys = keysMembershipV9
		}
		r.thirdPartyInviteSigned = alg >= roomversion.RedactionV11
		return r
	case `"m.room.create"`:
		if alg >= roomversion.RedactionV11 {
			return contentRule{all: true}
		}
		return contentRule{keys: keysCreator}
	case `"m.room.join_rules"`:
		if alg >= roomversion.RedactionV8 {
			return contentRule{keys: keysJoinRuleV8}
		}
		return contentRule{keys: keysJoinRule}
	case `"m.room.power_levels"`:
		if alg >= roomversion.RedactionV11 {
			return contentRule{keys: keysPowerLevelsV11}
		}
		return contentRule{keys: keysPowerLevels}
	case `"m.room.history_visibility"`:
		return contentRule{keys: keysHistoryVis}
	case `"m.room.aliases"`:
		if alg == roomversion.RedactionV1 {
			return contentRule{keys: keysAliases}
		}
	case `"m.room.redaction"`:
		if alg >= roomversion.RedactionV11 {
			return contentRule{keys: keysRedacts}
		}
	}
	return contentRule{}
}

// appendRedactedContent appends the redacted form of a canonical content
// object.
func appendRedactedContent(dst []byte, rule contentRule, content []byte) []byte {
	if rule.all && isObject(content) {
		return append(dst, content...)
	}
	dst = append(dst, '{')
	first := true
	it := newMemberIter(content)
	for {
		k, v, start, end, ok := it.next()
		if !ok {
			break
		}
		keep := false
		for _, name := range rule.keys {
			if keyIs(k, name) {
				keep = true
				break
			}
		}
		if keep {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, content[start:end]...)
			continue
		}
		// MSC3821: keep an object-valued third_party_invite, reduced to its
		// "signed" member (an empty object if it has none, as Synapse does).
		if rule.thirdPartyInviteSigned && keyIs(k, "third_party_invite") && isObject(v) {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `"third_party_invite":{`...)
			if signed := lookupMember(v, "signed"); signed != nil {
				dst = append(dst, `"signed":`...)
				dst = append(dst, signed...)
			}
			dst = append(dst, '}')
		}
	}
	return append(dst, '}')
}

// appendRedacted appends the redacted form of a canonical event object. With
// forSigning, "signatures" is left out as well, giving the bytes that are
// signed and whose SHA-256 is the reference hash (Server-Server API,
// "Calculating the reference hash for an event"). "unsigned" never survives
// redaction.
func appendRedacted(dst []byte, alg roomversion.RedactionAlgorithm, event []byte, forSigning bool) []byte {
	return appendRedactedWithType(dst, alg, event, lookupMember(event, "type"), forSigning)
}

// appendRedactedWithType is appendRedacted for a caller that already has the
// event's raw type, sparing a scan of the event.
func appendRedactedWithType(dst []byte, alg roomversion.RedactionAlgorithm, event, rawType []byte, forSigning bool) []byte {
	dst = append(dst, '{')
	first := true
	it := newMemberIter(event)
	for {
		k, v, start, end, ok := it.next()
		if !ok {
			break
		}
		if !keepTopLevel(alg, k) || (forSigning && keyIs(k, "signatures")) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if keyIs(k, "content") {
			dst = append(dst, `"content":`...)
			dst = appendRedactedContent(dst, contentRuleFor(alg, rawType), v)
			continue
		}
		dst = append(dst, event[start:end]...)
	}
	return append(dst, '}')
}

// Redacted returns the event as the redaction algorithm of its room version
// leaves it: the same event ID, signatures and hashes, with content cut down
// to the protected keys and unsigned and all unprotected top-level keys
// removed. It is what is stored and served once a redaction applies, and what
// replaces an event whose content hash does not match.
func (e *Event) Redacted() *Event {
	red := appendRedactedWithType(make([]byte, 0, len(e.json)), e.version.Redaction, e.json, e.raw.typ, false)
	f := scanFields(red)
	p := *e.pdu
	p.Content = jsontext.Value(f.content)
	p.Unsigned = nil
	p.Unknown = nil
	p.Sticky = nil
	p.Redacts = nil
	p.DeprecatedPrevState = jsontext.Value(f.prevState)
	p.DeprecatedOrigin = jsontext.Value(f.origin)
	p.DeprecatedMembership = jsontext.Value(f.membership)
	r := &Event{
		version:   e.version,
		id:        e.id,
		roomID:    e.roomID,
		json:      red,
		pdu:       &p,
		refHash:   e.refHash,
		raw:       f.kept(),
		formatErr: e.formatErr,
	}
	if p.Type == typeRedaction {
		r.redacts = redactsOf(e.version, &p, f.content)
	}
	return r
}
