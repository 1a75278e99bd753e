package federationapi

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// InvitePolicy decides whether a local user accepts an invite from a user of
// another server (MSC4155 invite filtering). CheckInvite returns the error to
// answer PUT /invite with when the invitee refuses it (403
// ORG.MATRIX.MSC4155.M_INVITE_BLOCKED as an *httputil.Error), or nil. Invites
// the invitee merely ignores are accepted: /sync hides them.
type InvitePolicy interface {
	CheckInvite(ctx context.Context, invitee, sender id.UserID) error
}
