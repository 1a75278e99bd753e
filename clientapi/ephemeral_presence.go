package clientapi

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/storage"
)

// Presence states (Client-Server API, "Presence").
const (
	presenceOnline      = "online"
	presenceUnavailable = "unavailable"
	presenceOffline     = "offline"
)

// presenceState is a local user's presence.
type presenceState struct {
	state      string
	statusMsg  *string
	lastActive int64 // unix ms
	pos        int64
	// explicit: the user set this state through the presence API, and
	// syncing does not override an explicit unavailable or offline.
	explicit bool
	lastSync int64
}

// presenceStore keeps local users' presence: in the presence table, and in
// memory for users seen since start, with a log of recent changes for
// incremental syncs.
type presenceStore struct {
	db      *storage.DB
	tracker *syncstream.Tracker
	idle    time.Duration
	offline time.Duration

	mu    sync.Mutex
	users map[id.UserID]*presenceState
	// log holds the users whose presence changed, by position, for positions
	// above logFrom.
	log     []presenceChange
	logFrom int64
	// localChanged, when set, is told about each visible change of a local
	// user's presence (to send it to other servers).
	localChanged atomic.Pointer[func(id.UserID)]
}

type presenceChange struct {
	pos  int64
	user id.UserID
}

// maxPresenceLog bounds the change log; syncs from before it read the table.
const maxPresenceLog = 8192

func newPresenceStore(ctx context.Context, db *storage.DB, idle, offline time.Duration) (*presenceStore, error) {
	var max *int64
	if err := db.QueryRow(ctx, `SELECT MAX(stream_pos) FROM presence`).Scan(&max); err != nil {
		return nil, fmt.Errorf("reading presence stream position: %w", err)
	}
	start := int64(0)
	if max != nil {
		start = *max
	}
	return &presenceStore{db: db, tracker: syncstream.NewTracker(start), idle: idle, offline: offline,
		users: map[id.UserID]*presenceState{}, logFrom: start}, nil
}

func (p *presenceStore) current() int64 { return p.tracker.Current() }

// get returns a user's presence (offline when never set), loading it once.
func (p *presenceStore) get(ctx context.Context, user id.UserID) (presenceState, error) {
	p.mu.Lock()
	if st, ok := p.users[user]; ok {
		// Copied under the lock: set updates entries in place.
		cur := *st
		p.mu.Unlock()
		return cur, nil
	}
	p.mu.Unlock()
	loaded := &presenceState{state: presenceOffline}
	err := p.db.QueryRow(ctx, `SELECT state, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1`, string(user)).
		Scan(&loaded.state, &loaded.statusMsg, &loaded.lastActive, &loaded.pos)
	if err != nil && !syncNoRows(err) {
		return presenceState{}, fmt.Errorf("reading presence of %s: %w", user, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.users[user]; ok {
		return *st, nil
	}
	p.users[user] = loaded
	return *loaded, nil
}

// set changes a user's presence. statusMsg nil keeps the current message when
// keepStatus is set, else clears it; explicit says the user asked for it
// through the presence API, bySync that the change comes from a /sync. It
// returns whether anything visible changed (the stream then advanced and wake
// was called).
func (p *presenceStore) set(ctx context.Context, user id.UserID, state string, statusMsg *string, keepStatus, explicit, bySync bool, wake func()) (bool, error) {
	cur, err := p.get(ctx, user)
	if err != nil {
		return false, err
	}
	now := time.Now().UnixMilli()
	next := cur
	next.state = state
	if !keepStatus {
		next.statusMsg = statusMsg
	}
	if state == presenceOnline {
		next.lastActive = now
	}
	next.explicit = explicit
	if bySync {
		next.lastSync = now
	}
	if next.state == cur.state && equalStrPtr(next.statusMsg, cur.statusMsg) {
		p.mu.Lock()
		if st := p.users[user]; st != nil {
			st.lastActive, st.lastSync = max(st.lastActive, next.lastActive), max(st.lastSync, next.lastSync)
			st.explicit = explicit
		}
		p.mu.Unlock()
		return false, nil
	}
	if err := p.commit(ctx, user, next, wake); err != nil {
		return false, err
	}
	if f := p.localChanged.Load(); f != nil {
		(*f)(user)
	}
	return true, nil
}

// commit stores next as user's presence at a new stream position, logs the
// change for incremental syncs and calls wake.
func (p *presenceStore) commit(ctx context.Context, user id.UserID, next presenceState, wake func()) error {
	next.pos = p.tracker.Allocate()
	defer p.tracker.Finish(next.pos)
	_, err := p.db.Exec(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts, stream_pos = excluded.stream_pos`,
		string(user), next.state, next.statusMsg, next.lastActive, next.pos)
	if err != nil {
		return fmt.Errorf("storing presence of %s: %w", user, err)
	}
	p.mu.Lock()
	if st := p.users[user]; st == nil || st.pos < next.pos {
		n := next
		p.users[user] = &n
	}
	p.log = append(p.log, presenceChange{pos: next.pos, user: user})
	if len(p.log) > maxPresenceLog {
		drop := len(p.log) - maxPresenceLog/2
		p.logFrom = p.log[drop-1].pos
		p.log = append(p.log[:0], p.log[drop:]...)
	}
	p.mu.Unlock()
	if wake != nil {
		wake()
	}
	return nil
}

func equalStrPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// touch records a sync by user with the given set_presence.
func (p *presenceStore) touch(ctx context.Context, user id.UserID, setPresence string, wake func()) error {
	switch setPresence {
	case presenceOffline:
		return nil
	case presenceUnavailable:
		_, err := p.set(ctx, user, presenceUnavailable, nil, true, false, true, wake)
		return err
	default:
		cur, err := p.get(ctx, user)
		if err != nil {
			return err
		}
		// A user who set unavailable or offline themselves stays so until
		// they say otherwise; syncing marks everyone else online.
		if cur.explicit && cur.state != presenceOnline {
			p.mu.Lock()
			if st := p.users[user]; st != nil {
				st.lastSync = time.Now().UnixMilli()
			}
			p.mu.Unlock()
			return nil
		}
		_, err = p.set(ctx, user, presenceOnline, nil, true, cur.explicit, true, wake)
		return err
	}
}

// changedSince returns the users whose presence changed in (since, upTo].
func (p *presenceStore) changedSince(ctx context.Context, since, upTo int64) ([]id.UserID, error) {
	if since >= upTo {
		return nil, nil
	}
	p.mu.Lock()
	if since >= p.logFrom {
		seen := map[id.UserID]struct{}{}
		var out []id.UserID
		for i := len(p.log) - 1; i >= 0 && p.log[i].pos > since; i-- {
			c := p.log[i]
			if c.pos > upTo {
				continue
			}
			if _, dup := seen[c.user]; !dup {
				seen[c.user] = struct{}{}
				out = append(out, c.user)
			}
		}
		p.mu.Unlock()
		return out, nil
	}
	p.mu.Unlock()
	rows, err := p.db.Query(ctx, `SELECT user_id FROM presence WHERE stream_pos > $1 AND stream_pos <= $2`, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("reading presence changes: %w", err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("reading presence changes: %w", err)
		}
		out = append(out, id.UserID(u))
	}
	return out, rows.Err()
}

// appendEvent appends the m.presence event of a user.
func appendPresenceEvent(dst []byte, user id.UserID, st presenceState, now int64) []byte {
	dst = append(dst, `{"type":"m.presence","sender":`...)
	dst = appendJSONString(dst, string(user))
	dst = append(dst, `,"content":`...)
	dst = appendPresenceContent(dst, st, now)
	return append(dst, '}')
}

// appendPresenceContent appends presence content (also GET /presence's body).
func appendPresenceContent(dst []byte, st presenceState, now int64) []byte {
	dst = append(dst, `{"presence":`...)
	dst = appendJSONString(dst, st.state)
	if st.lastActive > 0 {
		ago := max(now-st.lastActive, 0)
		dst = append(dst, `,"last_active_ago":`...)
		dst = strconv.AppendInt(dst, ago, 10)
		if st.state == presenceOnline {
			dst = append(dst, `,"currently_active":`...)
			dst = strconv.AppendBool(dst, ago < 60_000)
		}
	}
	if st.statusMsg != nil {
		dst = append(dst, `,"status_msg":`...)
		dst = appendJSONString(dst, *st.statusMsg)
	}
	return append(dst, '}')
}

// sweep runs until the Syncer closes: online users idle for long become
// unavailable, and users who went online by syncing and stopped go offline
// (Client-Server API, "Idle timeout").
func (p *presenceStore) sweep(s *Syncer) {
	period := min(p.idle, p.offline) / 4
	period = max(period, 50*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixMilli()
		type change struct {
			user  id.UserID
			state string
		}
		var changes []change
		p.mu.Lock()
		for u, st := range p.users {
			if !s.isLocal(u) {
				continue // their server says when they go idle or offline
			}
			switch {
			case !st.explicit && st.state != presenceOffline && now-max(st.lastSync, st.lastActive) > p.offline.Milliseconds() && !s.notifier.Waiting(u):
				changes = append(changes, change{u, presenceOffline})
			case st.state == presenceOnline && now-st.lastActive > p.idle.Milliseconds():
				changes = append(changes, change{u, presenceUnavailable})
			}
		}
		p.mu.Unlock()
		for _, c := range changes {
			u := c.user
			_, err := p.set(context.Background(), u, c.state, nil, true, false, false, func() { s.wakePresence(u) })
			logSyncErr("updating idle presence", err, "user", u)
		}
	}
}

// wakePresence wakes the syncing users who share a room with user.
func (s *Syncer) wakePresence(user id.UserID) {
	var buf [32]syncstream.Membership
	users := []id.UserID{user}
	for _, m := range s.members.Rooms(user, buf[:0]) {
		if m.Membership == "join" {
			users = s.members.JoinedUsers(m.RoomID, users)
		}
	}
	s.notifier.WakeUsers(users)
}
