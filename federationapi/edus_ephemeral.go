package federationapi

import (
	"context"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Typing notifications and read receipts across servers (Server-Server API,
// "Typing Notifications" and "Receipts").

// EphemeralSink takes remote users' typing notifications and read receipts
// into /sync's ephemeral streams; *clientapi.Syncer implements it.
type EphemeralSink interface {
	SetRemoteTyping(ctx context.Context, roomID id.RoomID, userID id.UserID, typing bool) error
	PutRemoteReceipt(ctx context.Context, roomID id.RoomID, userID id.UserID, eventID id.EventID, thread string, ts int64) error
}

// EDU types of typing and receipts.
const (
	eduTyping  = "m.typing"
	eduReceipt = "m.receipt"
)

// EnableEphemeral consumes m.typing and m.receipt EDUs into sink. It is called
// once, before the server takes requests. Local users' typing and receipts are
// sent with SendTyping and SendReceipt.
func (a *API) EnableEphemeral(sink EphemeralSink) {
	a.ephemeral = sink
	a.RegisterEDUHandler(eduTyping, EDUHandlerFunc(a.handleTyping))
	a.RegisterEDUHandler(eduReceipt, EDUHandlerFunc(a.handleReceipt))
}

// handleTyping takes an m.typing EDU; the user must belong to the origin.
func (a *API) handleTyping(ctx context.Context, origin, _ string, content json.RawMessage) error {
	var edu struct {
		RoomID id.RoomID `json:"room_id"`
		UserID id.UserID `json:"user_id"`
		Typing bool      `json:"typing"`
	}
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("decoding m.typing: %w", err)
	}
	if edu.UserID.Homeserver() != origin || edu.RoomID == "" {
		return fmt.Errorf("m.typing for %s in %q is not from its server", edu.UserID, edu.RoomID)
	}
	return a.ephemeral.SetRemoteTyping(ctx, edu.RoomID, edu.UserID, edu.Typing)
}

// receiptEDU is the content of an m.receipt EDU: room → receipt type → user →
// receipt. Only m.read is federated (m.read.private never leaves the server).
type receiptEDU map[id.RoomID]map[string]map[id.UserID]struct {
	EventIDs []id.EventID `json:"event_ids"`
	Data     struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id,omitempty"`
	} `json:"data"`
}

// handleReceipt takes an m.receipt EDU; receipts of users of other servers
// than the origin are dropped.
func (a *API) handleReceipt(ctx context.Context, origin, _ string, content json.RawMessage) error {
	var edu receiptEDU
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("decoding m.receipt: %w", err)
	}
	var firstErr error
	for roomID, byType := range edu {
		for userID, rec := range byType["m.read"] {
			if userID.Homeserver() != origin {
				continue
			}
			for _, eventID := range rec.EventIDs {
				err := a.ephemeral.PutRemoteReceipt(ctx, roomID, userID, eventID, rec.Data.ThreadID, rec.Data.TS)
				if err != nil && firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	return firstErr
}

// SendTyping sends a local user's typing state in roomID to the other servers
// in the room (the m.typing EDU).
func (a *API) SendTyping(ctx context.Context, roomID id.RoomID, userID id.UserID, typing bool) error {
	dests, err := a.serversInRoom(ctx, roomID)
	if err != nil || len(dests) < 2 {
		return err
	}
	return a.SendEDU(ctx, dests, eduTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
}

// SendReceipt sends a local user's m.read receipt to the other servers in the
// room (the m.receipt EDU).
func (a *API) SendReceipt(ctx context.Context, roomID id.RoomID, userID id.UserID, eventID id.EventID, thread string, ts int64) error {
	dests, err := a.serversInRoom(ctx, roomID)
	if err != nil || len(dests) < 2 {
		return err
	}
	data := map[string]any{"ts": ts}
	if thread != "" {
		data["thread_id"] = thread
	}
	content := map[id.RoomID]any{roomID: map[string]any{"m.read": map[id.UserID]any{
		userID: map[string]any{"event_ids": []id.EventID{eventID}, "data": data},
	}}}
	return a.SendEDU(ctx, dests, eduReceipt, content)
}
