// Package syncstream holds the in-memory machinery behind /sync: the composite
// stream token, position trackers, the notifier that wakes long-polling
// requests, the per-user room membership index, per-room recent timelines and
// typing notifications. It knows nothing about HTTP or storage.
package syncstream

import (
	"errors"
	"strconv"
)

// Token is a /sync stream token: one position per stream. Positions only grow,
// except Typing and Invites, which live in memory and restart at 0 with the
// server (a token ahead of them is treated as a fresh start).
type Token struct {
	Events      int64 // the room event stream (the roomserver's stream positions)
	AccountData int64 // the user's account-data stream
	Receipts    int64
	Typing      int64
	E2EE        int64 // to-device messages and device-list changes
	Presence    int64
	// Invites counts changes of the invites other servers sent to rooms this
	// server is not in; like Typing it lives in memory.
	Invites int64
}

// tokenFields is the number of positions a token carries.
const tokenFields = 7

// ErrBadToken is returned for a token that is not one this server made.
var ErrBadToken = errors.New("malformed sync token")

// String formats the token as
// "s<events>_<accountdata>_<receipts>_<typing>_<e2ee>_<presence>_<invites>".
func (t Token) String() string {
	b := make([]byte, 0, 48)
	return string(t.Append(b))
}

// Append appends the token's text form to dst.
func (t Token) Append(dst []byte) []byte {
	dst = append(dst, 's')
	for i, v := range [tokenFields]int64{t.Events, t.AccountData, t.Receipts, t.Typing, t.E2EE, t.Presence, t.Invites} {
		if i > 0 {
			dst = append(dst, '_')
		}
		dst = strconv.AppendInt(dst, v, 10)
	}
	return dst
}

// ParseToken parses a token made by String. Fewer positions than a full token
// are accepted (the missing ones are 0), so tokens from older servers with
// fewer streams stay valid; anything else is ErrBadToken.
func ParseToken(s string) (Token, error) {
	var vals [tokenFields]int64
	if len(s) < 2 || s[0] != 's' || len(s) > 200 {
		return Token{}, ErrBadToken
	}
	n := 0
	start := 1
	for i := 1; i <= len(s); i++ {
		if i < len(s) && s[i] != '_' {
			continue
		}
		if n == tokenFields {
			return Token{}, ErrBadToken
		}
		v, ok := parsePos(s[start:i])
		if !ok {
			return Token{}, ErrBadToken
		}
		vals[n] = v
		n++
		start = i + 1
	}
	return Token{vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6]}, nil
}

// parsePos parses a non-negative decimal integer without sign or leading zeros.
func parsePos(s string) (int64, bool) {
	if s == "" || len(s) > 18 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// TopoToken is a position in a room's topological order, as /messages pages
// through it: "t<depth>_<stream>". /sync hands it out as a timeline's
// prev_batch: paginating backwards from it returns the events before the first
// event of the timeline.
type TopoToken struct {
	Depth  int64
	Stream int64
}

// String formats the token as "t<depth>_<stream>".
func (t TopoToken) String() string {
	b := make([]byte, 0, 24)
	b = append(b, 't')
	b = strconv.AppendInt(b, t.Depth, 10)
	b = append(b, '_')
	b = strconv.AppendInt(b, t.Stream, 10)
	return string(b)
}

// ParseTopoToken parses a token made by TopoToken.String.
func ParseTopoToken(s string) (TopoToken, error) {
	if len(s) < 4 || s[0] != 't' || len(s) > 60 {
		return TopoToken{}, ErrBadToken
	}
	for i := 1; i < len(s); i++ {
		if s[i] == '_' {
			d, ok1 := parsePos(s[1:i])
			st, ok2 := parsePos(s[i+1:])
			if !ok1 || !ok2 {
				return TopoToken{}, ErrBadToken
			}
			return TopoToken{Depth: d, Stream: st}, nil
		}
	}
	return TopoToken{}, ErrBadToken
}
