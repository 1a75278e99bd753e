package clientapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// Invite filtering (MSC4155, under its unstable names): a user's
// org.matrix.msc4155.invite_permission_config account data lists globs of users
// and servers whose invites are allowed, ignored or blocked. Blocked invites are
// refused with 403 ORG.MATRIX.MSC4155.M_INVITE_BLOCKED, on the client API (POST
// /invite, createRoom's invite list) and over federation (PUT /invite);
// ignored ones are accepted but never shown in the invitee's /sync. The config
// is read when the invite arrives (and by /sync when it shows invites), so a
// change applies to pending invites too.

const (
	// typeInvitePermission is the account data type of the config
	// (m.invite_permission_config once MSC4155 is merged).
	typeInvitePermission = "org.matrix.msc4155.invite_permission_config"
	// errcodeInviteBlocked is M_INVITE_BLOCKED under its unstable name.
	errcodeInviteBlocked = "ORG.MATRIX.MSC4155.M_INVITE_BLOCKED"
)

// InviteAction is what an invite permission config says about one inviter.
type InviteAction int

// The outcomes of MSC4155's evaluation.
const (
	InviteAllow InviteAction = iota
	InviteIgnore
	InviteBlock
)

// inviteFilter is a parsed, enabled invite permission config. Patterns are
// lower-cased: user IDs and server names are compared case-insensitively, as
// server ACL globs are. A nil *inviteFilter allows everything.
type inviteFilter struct {
	allowedUsers, ignoredUsers, blockedUsers       []string
	allowedServers, ignoredServers, blockedServers []string
}

// parseInviteFilter reads the content of an invite permission config. It
// returns nil (allow everything) when the config is disabled ("enabled":
// false), empty, or invalid: MSC4155 makes any list that is not an array of
// strings void the whole event. A null list counts as a missing one.
func parseInviteFilter(content []byte) *inviteFilter {
	if !gjson.ValidBytes(content) {
		return nil
	}
	root := gjson.ParseBytes(content)
	if !root.IsObject() {
		return nil
	}
	if e := root.Get("enabled"); e.Type == gjson.False {
		return nil
	}
	f := &inviteFilter{}
	lists := [...]struct {
		key string
		dst *[]string
	}{
		{"allowed_users", &f.allowedUsers}, {"ignored_users", &f.ignoredUsers}, {"blocked_users", &f.blockedUsers},
		{"allowed_servers", &f.allowedServers}, {"ignored_servers", &f.ignoredServers}, {"blocked_servers", &f.blockedServers},
	}
	empty := true
	for _, l := range lists {
		v := root.Get(l.key)
		if !v.Exists() || v.Type == gjson.Null {
			continue
		}
		if !v.IsArray() {
			return nil
		}
		valid := true
		v.ForEach(func(_, x gjson.Result) bool {
			if x.Type != gjson.String {
				valid = false
				return false
			}
			*l.dst = append(*l.dst, strings.ToLower(x.Str))
			return true
		})
		if !valid {
			return nil
		}
		empty = empty && len(*l.dst) == 0
	}
	if empty {
		return nil
	}
	return f
}

// action evaluates an invite from sender in MSC4155's order: allowed, ignored,
// then blocked users; then allowed, ignored, then blocked servers (the
// sender's server name without its port); otherwise allow.
func (f *inviteFilter) action(sender id.UserID) InviteAction {
	if f == nil {
		return InviteAllow
	}
	user := strings.ToLower(string(sender))
	switch {
	case anyGlob(f.allowedUsers, user):
		return InviteAllow
	case anyGlob(f.ignoredUsers, user):
		return InviteIgnore
	case anyGlob(f.blockedUsers, user):
		return InviteBlock
	}
	server := stripPort(strings.ToLower(sender.Homeserver()))
	switch {
	case anyGlob(f.allowedServers, server):
		return InviteAllow
	case anyGlob(f.ignoredServers, server):
		return InviteIgnore
	case anyGlob(f.blockedServers, server):
		return InviteBlock
	}
	return InviteAllow
}

// hides reports whether /sync must leave out an invite from sender: ignored
// invites, and blocked ones that got through before the config said so.
func (f *inviteFilter) hides(sender id.UserID) bool {
	return f != nil && f.action(sender) != InviteAllow
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if matchGlob(p, s) {
			return true
		}
	}
	return false
}

// matchGlob matches s against a glob where '*' stands for any run of
// characters and '?' for exactly one (Appendices, "Glob-style matching"). It
// runs in O(len(p)·len(s)) at worst, without allocating.
func matchGlob(p, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch p[pi] {
			case '*':
				starP, starS = pi, si
				pi++
				continue
			case '?':
				_, n := utf8.DecodeRuneInString(s[si:])
				pi++
				si += n
				continue
			default:
				_, n := utf8.DecodeRuneInString(p[pi:])
				if si+n <= len(s) && p[pi:pi+n] == s[si:si+n] {
					pi += n
					si += n
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last star swallow one more character and retry.
		_, n := utf8.DecodeRuneInString(s[starS:])
		starS += n
		si, pi = starS, starP+1
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// stripPort removes a ":port" suffix from a server name (host names, IPv4 and
// bracketed IPv6 literals).
func stripPort(server string) string {
	i := strings.LastIndexByte(server, ':')
	if i <= 0 || i == len(server)-1 {
		return server
	}
	if server[0] == '[' && server[i-1] != ']' {
		return server // a colon inside an IPv6 literal without a port
	}
	for j := i + 1; j < len(server); j++ {
		if server[j] < '0' || server[j] > '9' {
			return server
		}
	}
	return server[:i]
}

// InvitePermissions applies local users' invite permission configs (MSC4155).
// The client API checks invites made here with it; the federation API checks
// invites from other servers (PUT /invite) through CheckInvite.
type InvitePermissions struct {
	accounts *accounts.Store
}

// NewInvitePermissions reads invite permission configs from the account store.
func NewInvitePermissions(store *accounts.Store) *InvitePermissions {
	return &InvitePermissions{accounts: store}
}

// filter loads a local user's config (nil: no filtering).
func (p *InvitePermissions) filter(ctx context.Context, localpart string) (*inviteFilter, error) {
	content, err := p.accounts.AccountData(ctx, localpart, "", typeInvitePermission)
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading invite permission config of %s: %w", localpart, err)
	}
	return parseInviteFilter(content), nil
}

// Action says what the local user invitee's config makes of an invite from
// sender.
func (p *InvitePermissions) Action(ctx context.Context, invitee, sender id.UserID) (InviteAction, error) {
	f, err := p.filter(ctx, invitee.Localpart())
	if err != nil {
		return InviteAllow, err
	}
	return f.action(sender), nil
}

// CheckInvite returns 403 ORG.MATRIX.MSC4155.M_INVITE_BLOCKED when the local
// user invitee blocks invites from sender, and nil otherwise (ignored invites
// are accepted; /sync hides them).
func (p *InvitePermissions) CheckInvite(ctx context.Context, invitee, sender id.UserID) error {
	act, err := p.Action(ctx, invitee, sender)
	if err != nil {
		return internalErr(err)
	}
	if act == InviteBlock {
		return &httputil.Error{Status: http.StatusForbidden, ErrCode: errcodeInviteBlocked,
			Message: "The user does not accept invites from you"}
	}
	return nil
}

// inviteFilterOf loads a local user's invite permission config for /sync.
func (a *API) inviteFilterOf(ctx context.Context, localpart string) (*inviteFilter, error) {
	return NewInvitePermissions(a.accounts).filter(ctx, localpart)
}

// checkInvitePermission refuses an invite from inviter to the local user
// invitee that the invitee's config blocks.
func (a *API) checkInvitePermission(ctx context.Context, invitee, inviter id.UserID) error {
	return NewInvitePermissions(a.accounts).CheckInvite(ctx, invitee, inviter)
}

// inviteBlocked reports whether err is an invitee's refusal (MSC4155), from
// this server or another one.
func inviteBlocked(err error) bool {
	var me *httputil.Error
	return errors.As(err, &me) && me.ErrCode == errcodeInviteBlocked
}
