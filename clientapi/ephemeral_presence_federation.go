package clientapi

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
)

// Presence across servers (Server-Server API, "Presence"): local users'
// presence changes are gathered for a moment and handed to a hook that sends
// them in m.presence EDUs; remote users' presence, fed in with
// PutRemotePresence, is kept in the same presence stream as local users' so
// /sync and GET /presence show it.

// PresenceFederationDelay is how long local presence changes gather before
// they are handed to the presence hook in one batch.
const PresenceFederationDelay = 200 * time.Millisecond

// PresenceUpdate is a user's presence as an m.presence EDU carries it.
type PresenceUpdate struct {
	UserID   id.UserID
	Presence string // online, unavailable or offline
	// StatusMsg is nil when the user has no status message.
	StatusMsg *string
	// LastActiveAgo is the milliseconds since the user was last active; -1
	// when unknown.
	LastActiveAgo   int64
	CurrentlyActive bool
}

// presenceOutbox holds the local users whose presence changed since the last
// batch went out.
type presenceOutbox struct {
	send func(ctx context.Context, updates []PresenceUpdate)
	kick chan struct{}

	mu      sync.Mutex
	pending map[id.UserID]struct{}
}

// add queues user's latest presence for the next batch.
func (o *presenceOutbox) add(user id.UserID) {
	o.mu.Lock()
	o.pending[user] = struct{}{}
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// take returns the queued users and empties the queue.
func (o *presenceOutbox) take() map[id.UserID]struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	users := o.pending
	o.pending = make(map[id.UserID]struct{}, len(users))
	return users
}

// SetPresenceHook installs send, called from a background goroutine with the
// latest presence of the local users whose presence visibly changed (state
// or status message; a /sync that changes nothing sends nothing), at most
// once per PresenceFederationDelay. Call it once, before the server takes
// requests.
func (s *Syncer) SetPresenceHook(send func(ctx context.Context, updates []PresenceUpdate)) {
	o := &presenceOutbox{send: send, kick: make(chan struct{}, 1), pending: map[id.UserID]struct{}{}}
	add := o.add
	s.presence.localChanged.Store(&add)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.runPresenceOutbox(o) }()
}

// runPresenceOutbox sends the outbox's batches until the Syncer closes.
func (s *Syncer) runPresenceOutbox(o *presenceOutbox) {
	ctx := context.Background()
	for {
		select {
		case <-s.stop:
			return
		case <-o.kick:
		}
		t := time.NewTimer(PresenceFederationDelay)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		users := o.take()
		updates := make([]PresenceUpdate, 0, len(users))
		now := nowMS()
		for u := range users {
			st, err := s.presence.get(ctx, u)
			if err != nil {
				logSyncErr("reading presence to send", err, "user", u)
				continue
			}
			updates = append(updates, presenceUpdateOf(u, st, now))
		}
		if len(updates) > 0 {
			o.send(ctx, updates)
		}
	}
}

// presenceUpdateOf is st as an m.presence EDU entry.
func presenceUpdateOf(user id.UserID, st presenceState, now int64) PresenceUpdate {
	u := PresenceUpdate{UserID: user, Presence: st.state, StatusMsg: st.statusMsg, LastActiveAgo: -1}
	if st.lastActive > 0 {
		u.LastActiveAgo = max(now-st.lastActive, 0)
		u.CurrentlyActive = st.state == presenceOnline && u.LastActiveAgo < 60_000
	}
	return u
}

// maxRemoteLastActiveAgo bounds the last_active_ago taken from other servers;
// larger values (servers send one for "never") are taken as unknown.
const maxRemoteLastActiveAgo = int64(30 * 24 * time.Hour / time.Millisecond)

// PutRemotePresence records a remote user's presence from an m.presence EDU
// and wakes the local users who share a room with them. It is ignored for
// local users, unknown states, and users who share no room with a local user.
func (s *Syncer) PutRemotePresence(ctx context.Context, u PresenceUpdate) error {
	if s.isLocal(u.UserID) {
		return nil
	}
	switch u.Presence {
	case presenceOnline, presenceUnavailable, presenceOffline:
	default:
		return nil
	}
	locals, err := s.localUsersSharingRoom(ctx, u.UserID)
	if err != nil || len(locals) == 0 {
		return err
	}
	cur, err := s.presence.get(ctx, u.UserID)
	if err != nil {
		return err
	}
	next := presenceState{state: u.Presence, statusMsg: u.StatusMsg}
	if u.LastActiveAgo >= 0 && u.LastActiveAgo < maxRemoteLastActiveAgo {
		next.lastActive = nowMS() - u.LastActiveAgo
	}
	if cur.pos != 0 && next.state == cur.state && equalStrPtr(next.statusMsg, cur.statusMsg) {
		// Nothing a client sees changed: keep the stream still.
		s.presence.mu.Lock()
		if st := s.presence.users[u.UserID]; st != nil {
			st.lastActive = max(st.lastActive, next.lastActive)
		}
		s.presence.mu.Unlock()
		return nil
	}
	return s.presence.commit(ctx, u.UserID, next, func() { s.notifier.WakeUsers(locals) })
}

// localUsersSharingRoom lists the local users joined to a room user is
// joined to.
func (s *Syncer) localUsersSharingRoom(ctx context.Context, user id.UserID) ([]id.UserID, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT y.state_key FROM current_state x JOIN current_state y ON y.room_nid = x.room_nid
		WHERE x.event_type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
		AND y.event_type = 'm.room.member' AND y.membership = 'join' AND y.state_key LIKE $2`,
		string(user), "%:"+s.serverName)
	if err != nil {
		return nil, fmt.Errorf("listing local users sharing a room with %s: %w", user, err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("listing local users sharing a room with %s: %w", user, err)
		}
		// LIKE is only a prefilter (SQLite's ignores case).
		if s.isLocal(id.UserID(u)) {
			out = append(out, id.UserID(u))
		}
	}
	return out, rows.Err()
}

// getRemotePresence answers GET /presence/{userId}/status for a remote user:
// what their server last sent, to users who share a room with them.
func (s *Syncer) getRemotePresence(ctx context.Context, w http.ResponseWriter, viewer, user id.UserID) error {
	share, err := s.shareRoom(ctx, viewer, user)
	if err != nil {
		return internalErr(err)
	}
	if !share {
		return httputil.Forbidden("You are not allowed to see their presence")
	}
	st, err := s.presence.get(ctx, user)
	if err != nil {
		return internalErr(err)
	}
	if st.pos == 0 {
		return httputil.NotFound("No presence known for %s", user)
	}
	httputil.WriteJSONBytes(w, http.StatusOK, appendPresenceContent(nil, st, nowMS()))
	return nil
}
