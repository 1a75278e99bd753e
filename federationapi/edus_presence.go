package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// Presence across servers (Server-Server API, "Presence"): the m.presence EDU
// pushes presence updates of the sending server's users to the servers that
// share a room with them.

// eduPresence is the EDU type of presence updates.
const eduPresence = "m.presence"

// maxStatusMsg bounds a status message taken from another server, as the
// client API bounds local ones.
const maxStatusMsg = 1024

// PresenceUpdate is one entry of an m.presence EDU's push list.
type PresenceUpdate struct {
	UserID   id.UserID
	Presence string // online, unavailable or offline
	// StatusMsg is nil when the user has no status message.
	StatusMsg *string
	// LastActiveAgo is the milliseconds since the user last did something;
	// -1 when unknown.
	LastActiveAgo   int64
	CurrentlyActive bool
}

// PresenceSink takes remote users' presence into the presence stream;
// *clientapi.Syncer implements it (through a small adapter in server/).
type PresenceSink interface {
	// PutRemotePresence records u, which is of a user of the sending server.
	// The sink checks the user shares a room with a local user.
	PutRemotePresence(ctx context.Context, u PresenceUpdate) error
}

// EnablePresence consumes m.presence EDUs into sink. It is called once, before
// the server takes requests. Local users' presence is sent with SendPresence.
func (a *API) EnablePresence(sink PresenceSink) {
	a.RegisterEDUHandler(eduPresence, EDUHandlerFunc(func(ctx context.Context, origin, _ string, content json.RawMessage) error {
		return a.handlePresence(ctx, sink, origin, content)
	}))
}

// presenceEDU is the content of an m.presence EDU.
type presenceEDU struct {
	Push []presencePush `json:"push"`
}

type presencePush struct {
	UserID          id.UserID `json:"user_id"`
	Presence        string    `json:"presence"`
	StatusMsg       *string   `json:"status_msg,omitempty"`
	LastActiveAgo   *int64    `json:"last_active_ago"`
	CurrentlyActive bool      `json:"currently_active,omitempty"`
}

// handlePresence takes an m.presence EDU. Entries for users of other servers
// than the origin, with an unknown state or an oversized status message are
// dropped; the sink drops users who share no room with a local user.
func (a *API) handlePresence(ctx context.Context, sink PresenceSink, origin string, content json.RawMessage) error {
	var edu presenceEDU
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("decoding m.presence: %w", err)
	}
	var firstErr error
	for _, p := range edu.Push {
		if p.UserID.Homeserver() != origin {
			continue
		}
		switch p.Presence {
		case "online", "unavailable", "offline":
		default:
			continue
		}
		if p.StatusMsg != nil && len(*p.StatusMsg) > maxStatusMsg {
			continue
		}
		u := PresenceUpdate{UserID: p.UserID, Presence: p.Presence, StatusMsg: p.StatusMsg, LastActiveAgo: -1, CurrentlyActive: p.CurrentlyActive}
		if p.LastActiveAgo != nil && *p.LastActiveAgo >= 0 {
			u.LastActiveAgo = *p.LastActiveAgo
		}
		if err := sink.PutRemotePresence(ctx, u); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("storing presence of %s: %w", p.UserID, err)
		}
	}
	return firstErr
}

// neverActiveAgo is the last_active_ago sent for a user never seen active
// (the field is required): the time since the Unix epoch.
func neverActiveAgo() int64 { return time.Now().UnixMilli() }

// SendPresence sends local users' presence updates to the servers that share
// a room with each of them: one m.presence EDU per server, holding the
// updates of the users that server shares a room with.
func (a *API) SendPresence(ctx context.Context, updates []PresenceUpdate) error {
	byDest := map[string][]presencePush{}
	var firstErr error
	for _, u := range updates {
		if u.UserID.Homeserver() != a.serverName {
			continue
		}
		dests, err := a.serversSharingRooms(ctx, u.UserID)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if len(dests) == 0 {
			continue
		}
		ago := u.LastActiveAgo
		if ago < 0 {
			ago = neverActiveAgo()
		}
		p := presencePush{UserID: u.UserID, Presence: u.Presence, StatusMsg: u.StatusMsg, LastActiveAgo: &ago, CurrentlyActive: u.CurrentlyActive}
		for _, d := range dests {
			byDest[d] = append(byDest[d], p)
		}
	}
	for dest, push := range byDest {
		if err := a.SendEDU(ctx, []string{dest}, eduPresence, presenceEDU{Push: push}); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}
