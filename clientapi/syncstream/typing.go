package syncstream

import (
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// MaxTypingTimeout bounds how long one typing notification lasts.
const MaxTypingTimeout = 2 * time.Minute

// Typing holds who is typing in which room, in memory (Client-Server API,
// "Typing Notifications"): entries expire after their timeout, and every
// change advances the typing stream and calls the change function.
type Typing struct {
	mu       sync.Mutex
	pos      int64
	rooms    map[id.RoomID]*roomTyping
	onChange func(roomID id.RoomID)
	now      func() time.Time
	closed   bool
}

type roomTyping struct {
	users map[id.UserID]time.Time // expiry
	pos   int64                   // position of the last change
	timer *time.Timer
	next  time.Time // when the timer fires
}

// NewTyping returns an empty typing store calling onChange (without locks held)
// after each change of a room's typing users.
func NewTyping(onChange func(roomID id.RoomID)) *Typing {
	return &Typing{rooms: make(map[id.RoomID]*roomTyping), onChange: onChange, now: time.Now}
}

// Set records that userID is typing in roomID for timeout, or stopped typing.
func (t *Typing) Set(roomID id.RoomID, userID id.UserID, typing bool, timeout time.Duration) {
	if timeout > MaxTypingTimeout {
		timeout = MaxTypingTimeout
	}
	if typing && timeout <= 0 {
		typing = false
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	rt := t.rooms[roomID]
	changed := false
	if typing {
		if rt == nil {
			rt = &roomTyping{users: make(map[id.UserID]time.Time)}
			t.rooms[roomID] = rt
		}
		_, was := rt.users[userID]
		exp := t.now().Add(timeout)
		rt.users[userID] = exp
		changed = !was
		t.scheduleLocked(roomID, rt, exp)
	} else if rt != nil {
		if _, was := rt.users[userID]; was {
			delete(rt.users, userID)
			changed = true
		}
	}
	if changed {
		t.pos++
		rt.pos = t.pos
	}
	t.mu.Unlock()
	if changed && t.onChange != nil {
		t.onChange(roomID)
	}
}

// scheduleLocked makes the room's timer fire no later than at.
func (t *Typing) scheduleLocked(roomID id.RoomID, rt *roomTyping, at time.Time) {
	if rt.timer != nil && !rt.next.After(at) {
		return
	}
	d := at.Sub(t.now())
	if rt.timer == nil {
		rt.timer = time.AfterFunc(d, func() { t.expire(roomID) })
	} else {
		rt.timer.Reset(d)
	}
	rt.next = at
}

// expire drops the room's expired entries and re-arms its timer.
func (t *Typing) expire(roomID id.RoomID) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil || t.closed {
		t.mu.Unlock()
		return
	}
	now := t.now()
	changed := false
	var next time.Time
	for u, exp := range rt.users {
		if !exp.After(now) {
			delete(rt.users, u)
			changed = true
		} else if next.IsZero() || exp.Before(next) {
			next = exp
		}
	}
	rt.timer, rt.next = nil, time.Time{}
	if !next.IsZero() {
		t.scheduleLocked(roomID, rt, next)
	}
	if changed {
		t.pos++
		rt.pos = t.pos
	}
	t.mu.Unlock()
	if changed && t.onChange != nil {
		t.onChange(roomID)
	}
}

// Current is the typing stream's position.
func (t *Typing) Current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// Changed returns the users typing in roomID, sorted, when the room's typing
// users changed after since (a since ahead of the stream, from before a
// restart, counts as 0).
func (t *Typing) Changed(roomID id.RoomID, since int64) ([]id.UserID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since > t.pos {
		since = 0
	}
	rt := t.rooms[roomID]
	if rt == nil || rt.pos <= since {
		return nil, false
	}
	out := make([]id.UserID, 0, len(rt.users))
	for u := range rt.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, true
}

// Close stops the timers.
func (t *Typing) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, rt := range t.rooms {
		if rt.timer != nil {
			rt.timer.Stop()
		}
	}
}
