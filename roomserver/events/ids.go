package events

import (
	"strings"
	"unicode/utf8"

	"hearth/roomserver/roomversion"
)

// maxIDBytes is the limit on sender, room_id, state_key, type and event_id
// (Client-Server API, "Size limits"; Appendices, identifier grammar).
const maxIDBytes = 255

// validServerName checks the server name grammar (Appendices, "Server Name"):
// hostname [":" port], where hostname is an IPv4 literal, a bracketed IPv6
// literal or a DNS name. IPv4 literals are a subset of the DNS name
// characters, so one character check covers both.
func validServerName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	host, port := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[1:end], s[end+1:]
		if len(host) < 2 || len(host) > 45 {
			return false
		}
		for i := 0; i < len(host); i++ {
			b := host[i]
			if !isDigit(b) && (b < 'a' || b > 'f') && (b < 'A' || b > 'F') && b != ':' && b != '.' {
				return false
			}
		}
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i:]
		}
		if len(host) == 0 {
			return false
		}
		for i := 0; i < len(host); i++ {
			b := host[i]
			if !isDigit(b) && (b < 'a' || b > 'z') && (b < 'A' || b > 'Z') && b != '-' && b != '.' {
				return false
			}
		}
	}
	if port == "" {
		return true
	}
	if port[0] != ':' || len(port) < 2 || len(port) > 6 {
		return false
	}
	for i := 1; i < len(port); i++ {
		if !isDigit(port[i]) {
			return false
		}
	}
	return true
}

// splitID splits "&localpart:domain" at the first colon.
func splitID(s string) (localpart, domain string, ok bool) {
	i := strings.IndexByte(s, ':')
	if len(s) < 2 || i < 1 {
		return "", "", false
	}
	return s[1:i], s[i+1:], true
}

// domainOf returns the part of an identifier after its first colon.
func domainOf(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[i+1:]
	}
	return ""
}

// validUserID accepts any user ID that servers must accept over federation
// (Appendices, "Historical User IDs"): "@", a localpart of any code points
// except ":" and NUL (possibly empty), ":", and a valid server name. The
// server name is checked strictly because it is where signing keys are
// fetched from.
func validUserID(s string) bool {
	if len(s) < 2 || s[0] != '@' {
		return false
	}
	local, domain, ok := splitID(s)
	if !ok || strings.IndexByte(local, 0) >= 0 {
		return false
	}
	return validServerName(domain)
}

// validRoomID checks a room ID for the room version: "!opaque:domain" up to
// v11 (the domain is not checked further: it is only a namespace), and the
// create event's ID with a "!" sigil from v12.
func validRoomID(v *roomversion.Version, s string) bool {
	if len(s) < 2 || s[0] != '!' {
		return false
	}
	if v.RoomIDIsCreateEventID {
		return isHashID(s, roomversion.EventIDURLSafeBase64)
	}
	_, domain, ok := splitID(s)
	return ok && domain != "" && strings.IndexByte(s, 0) < 0
}

// validEventID checks an event ID's shape for the room version: "$opaque:domain"
// for v1/v2, "$" + 43 characters of base64 (v3) or URL-safe base64 (v4+).
func validEventID(v *roomversion.Version, s string) bool {
	if len(s) < 2 || s[0] != '$' {
		return false
	}
	if v.EventIDFormat == roomversion.EventIDOriginBased {
		_, domain, ok := splitID(s)
		return ok && domain != "" && len(s) <= maxIDBytes && strings.IndexByte(s, 0) < 0
	}
	return isHashID(s, v.EventIDFormat)
}

// validRedactsTarget checks the target a new redaction names: any
// "$"-sigilled identifier up to 255 bytes. It is not held to the room
// version's event ID format, as the event need not exist here (or anywhere):
// clients may redact by an ID this server has never seen, and the redaction
// is sent on regardless (Client-Server API, "Redactions"; Synapse does the
// same). Incoming events are not checked at all, as their redacts is not an
// event reference the auth rules depend on.
func validRedactsTarget(s string) bool {
	return len(s) >= 2 && s[0] == '$' && len(s) <= maxIDBytes && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// isHashID reports whether s is a sigil followed by an unpadded base64 SHA-256
// (43 characters) in the given alphabet.
func isHashID(s string, format roomversion.EventIDFormat) bool {
	if len(s) != 44 {
		return false
	}
	for i := 1; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'A' && b <= 'Z', b >= 'a' && b <= 'z', isDigit(b):
		case format == roomversion.EventIDBase64 && (b == '+' || b == '/'):
		case format == roomversion.EventIDURLSafeBase64 && (b == '-' || b == '_'):
		default:
			return false
		}
	}
	return true
}

// fieldSizeCheck is the result of checking one size-limited field.
type fieldSizeCheck uint8

const (
	sizeOK fieldSizeCheck = iota
	// sizeOverBytes: more than 255 bytes but at most 255 code points.
	sizeOverBytes
	// sizeOverCodepoints: more than 255 code points.
	sizeOverCodepoints
)

func checkFieldSize(s string) fieldSizeCheck {
	if len(s) <= maxIDBytes {
		return sizeOK
	}
	if utf8.RuneCountInString(s) <= maxIDBytes {
		return sizeOverBytes
	}
	return sizeOverCodepoints
}
