package clientapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// Typing notifications and read receipts across servers (Server-Server API,
// "Typing Notifications" and "Receipts"): the federation API feeds those of
// remote users in with SetRemoteTyping and PutRemoteReceipt, and learns about
// local users' ones through EphemeralHooks to send them on.

// RemoteTypingTimeout is how long a remote user stays typing without a new
// m.typing EDU: the EDU carries no timeout, and servers resend it while the
// user keeps typing (Synapse waits 60 seconds too).
const RemoteTypingTimeout = 60 * time.Second

// EphemeralHooks are told about local users' typing and public read receipts,
// after they are stored. They are called synchronously and must be quick.
type EphemeralHooks struct {
	// Typing is called when a local user starts or stops typing in a room.
	Typing func(ctx context.Context, roomID id.RoomID, userID id.UserID, typing bool)
	// Receipt is called for a local user's m.read receipt (thread "" when
	// unthreaded; ts in milliseconds). Private receipts are not reported.
	Receipt func(ctx context.Context, roomID id.RoomID, userID id.UserID, eventID id.EventID, thread string, ts int64)
}

// SetEphemeralHooks installs the hooks for local typing and receipts.
func (s *Syncer) SetEphemeralHooks(h EphemeralHooks) { s.ephemeralHooks.Store(&h) }

func (s *Syncer) hooks() *EphemeralHooks {
	if h := s.ephemeralHooks.Load(); h != nil {
		return h
	}
	return &EphemeralHooks{}
}

// remoteJoined reports whether userID is joined to roomID, from the room
// engine (the membership index only knows local users).
func (s *Syncer) remoteJoined(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	m, _, err := s.rs.Membership(ctx, roomID, userID)
	if err != nil {
		return false, fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	return m == "join", nil
}

// SetRemoteTyping records a remote user's typing state (the m.typing EDU). It
// is ignored unless the user is joined to the room.
func (s *Syncer) SetRemoteTyping(ctx context.Context, roomID id.RoomID, userID id.UserID, typing bool) error {
	if typing {
		joined, err := s.remoteJoined(ctx, roomID, userID)
		if err != nil || !joined {
			return err
		}
	}
	s.typing.Set(roomID, userID, typing, RemoteTypingTimeout)
	return nil
}

// PutRemoteReceipt stores a remote user's m.read receipt (the m.receipt EDU)
// and wakes the room's syncing members. Receipts of users not joined to the
// room, and for events this server does not have, are ignored.
func (s *Syncer) PutRemoteReceipt(ctx context.Context, roomID id.RoomID, userID id.UserID, eventID id.EventID, thread string, ts int64) error {
	joined, err := s.remoteJoined(ctx, roomID, userID)
	if err != nil || !joined {
		return err
	}
	ev, err := s.rs.Event(ctx, eventID)
	if err != nil {
		if errors.Is(err, roomserver.ErrEventNotFound) {
			return nil
		}
		return fmt.Errorf("loading %s: %w", eventID, err)
	}
	if ev.RoomID() != roomID || ev.StreamPos == 0 || ev.Rejected {
		return nil
	}
	if ts <= 0 {
		ts = nowMS()
	}
	rec := &storedReceipt{user: userID, typ: receiptRead, thread: thread, eventID: eventID, eventPos: ev.StreamPos, ts: ts}
	stored, err := s.receipts.put(ctx, roomID, rec, nil)
	if err != nil {
		return err
	}
	if stored {
		s.wakeRoom(roomID)
	}
	return nil
}
