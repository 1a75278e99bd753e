package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// serverACL is a parsed m.room.server_acl event (Client-Server API, "Server Access
// Control Lists (ACLs) for rooms").
type serverACL struct {
	allowIPLiterals bool
	allow, deny     []string // lower-cased globs
}

func parseACL(content []byte) *serverACL {
	var c struct {
		AllowIPLiterals *bool `json:"allow_ip_literals"`
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
	}
	acl := &serverACL{allowIPLiterals: true}
	if json.Unmarshal(content, &c) != nil {
		// Content that is not the expected shape allows nobody, as an empty allow
		// list does.
		acl.allowIPLiterals = false
		return acl
	}
	if c.AllowIPLiterals != nil {
		acl.allowIPLiterals = *c.AllowIPLiterals
	}
	strs := func(in []any) []string {
		out := make([]string, 0, len(in))
		for _, v := range in {
			if s, ok := v.(string); ok {
				out = append(out, strings.ToLower(s))
			}
		}
		return out
	}
	acl.allow, acl.deny = strs(c.Allow), strs(c.Deny)
	return acl
}

// allows reports whether server (with any port dropped) may take part: IP literals
// per allow_ip_literals, then deny globs, then allow globs (none allows nobody).
func (acl *serverACL) allows(server string) bool {
	host, _, ok := federation.ParseServerName(server)
	if !ok {
		return false
	}
	host = strings.ToLower(host)
	if !acl.allowIPLiterals && net.ParseIP(host) != nil {
		return false
	}
	for _, g := range acl.deny {
		if globMatch(g, host) {
			return false
		}
	}
	for _, g := range acl.allow {
		if globMatch(g, host) {
			return true
		}
	}
	return false
}

// globMatch matches s against a glob of * (any run) and ? (one character).
func globMatch(glob, s string) bool {
	gi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case gi < len(glob) && (glob[gi] == '?' || glob[gi] == s[si]):
			gi++
			si++
		case gi < len(glob) && glob[gi] == '*':
			star, mark = gi, si
			gi++
		case star >= 0:
			gi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}

// aclCache keeps parsed ACLs by the ID of their event.
type aclCache struct {
	mu sync.Mutex
	m  map[id.EventID]*serverACL
}

// checkACL returns 403 M_FORBIDDEN when the room's current server ACL denies
// server (Server-Server API, "Server Access Control Lists (ACLs)"). Rooms without
// an ACL, and rooms unknown here, allow everyone.
func (a *API) checkACL(ctx context.Context, roomID id.RoomID, server string) error {
	ok, err := a.aclAllows(ctx, roomID, server)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.Forbidden("Server %s is denied by the room's server ACL", server)
	}
	return nil
}

func (a *API) aclAllows(ctx context.Context, roomID id.RoomID, server string) (bool, error) {
	ev, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if ev == nil {
		return true, nil
	}
	a.acls.mu.Lock()
	acl := a.acls.m[ev.ID()]
	if acl == nil {
		if a.acls.m == nil || len(a.acls.m) > 1024 {
			a.acls.m = make(map[id.EventID]*serverACL)
		}
		acl = parseACL(ev.Content())
		a.acls.m[ev.ID()] = acl
	}
	a.acls.mu.Unlock()
	return acl.allows(server), nil
}
