package syncstream

import (
	"sync"

	"maunium.net/go/mautrix/id"
)

// Membership is a user's membership of one room and when it last changed.
type Membership struct {
	RoomID     id.RoomID
	Membership string // join, invite, knock, leave, ban
	// Pos is the stream position of the member event that set it (0 for a
	// member event outside the timeline, such as a remote invite).
	Pos int64
	// JoinedPos is, for a join, the position where the user's current run of
	// joined membership began (a join followed by profile changes keeps the
	// first join's position).
	JoinedPos int64
	EventID   id.EventID
}

// Memberships indexes the rooms of the local users who use /sync (loaded on
// their first sync) and, for each room, which of them are joined, so a new
// event wakes exactly the members of its room. It is kept current from member
// events as they are committed.
type Memberships struct {
	mu    sync.RWMutex
	users map[id.UserID]*userRooms
	// joined: room → the indexed users joined to it.
	joined map[id.RoomID]map[id.UserID]struct{}
}

type userRooms struct {
	loading bool
	loaded  chan struct{} // closed when loading ends
	rooms   map[id.RoomID]Membership
	log     []Membership // changes seen while loading
}

// NewMemberships returns an empty index.
func NewMemberships() *Memberships {
	return &Memberships{users: make(map[id.UserID]*userRooms), joined: make(map[id.RoomID]map[id.UserID]struct{})}
}

// Apply records a member event of a local user. Users not indexed are ignored
// (their rooms are loaded from the store when they first sync).
func (m *Memberships) Apply(userID id.UserID, ms Membership) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[userID]
	if u == nil {
		return
	}
	if u.loading {
		u.log = append(u.log, ms)
		return
	}
	m.setLocked(userID, u, ms)
}

func (m *Memberships) setLocked(userID id.UserID, u *userRooms, ms Membership) {
	old, had := u.rooms[ms.RoomID]
	if had && old.Pos > ms.Pos && ms.Pos != 0 {
		return // older than what is known
	}
	if ms.Membership == "join" {
		if had && old.Membership == "join" && old.JoinedPos != 0 {
			ms.JoinedPos = old.JoinedPos
		} else if ms.JoinedPos == 0 {
			ms.JoinedPos = ms.Pos
		}
	}
	u.rooms[ms.RoomID] = ms
	set := m.joined[ms.RoomID]
	if ms.Membership == "join" {
		if set == nil {
			set = make(map[id.UserID]struct{})
			m.joined[ms.RoomID] = set
		}
		set[userID] = struct{}{}
	} else if set != nil {
		delete(set, userID)
		if len(set) == 0 {
			delete(m.joined, ms.RoomID)
		}
	}
}

// Loaded reports whether userID's rooms are indexed.
func (m *Memberships) Loaded(userID id.UserID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u := m.users[userID]
	return u != nil && !u.loading
}

// BeginLoad starts indexing userID. It returns true when the caller must load
// the user's rooms and call FinishLoad (or AbortLoad); false when they are
// indexed already, after waiting for another loader if there is one.
func (m *Memberships) BeginLoad(userID id.UserID) bool {
	m.mu.Lock()
	u := m.users[userID]
	if u == nil {
		m.users[userID] = &userRooms{loading: true, loaded: make(chan struct{}), rooms: make(map[id.RoomID]Membership)}
		m.mu.Unlock()
		return true
	}
	if !u.loading {
		m.mu.Unlock()
		return false
	}
	ch := u.loaded
	m.mu.Unlock()
	<-ch
	return m.BeginLoad(userID)
}

// FinishLoad installs the memberships loaded from the store, then the member
// events seen since loading began.
func (m *Memberships) FinishLoad(userID id.UserID, loaded []Membership) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[userID]
	if u == nil || !u.loading {
		return
	}
	u.loading = false
	for _, ms := range loaded {
		m.setLocked(userID, u, ms)
	}
	for _, ms := range u.log {
		m.setLocked(userID, u, ms)
	}
	u.log = nil
	close(u.loaded)
}

// AbortLoad forgets a user whose loading failed.
func (m *Memberships) AbortLoad(userID id.UserID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.users[userID]; u != nil && u.loading {
		delete(m.users, userID)
		close(u.loaded)
	}
}

// Rooms appends userID's memberships to dst.
func (m *Memberships) Rooms(userID id.UserID, dst []Membership) []Membership {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u := m.users[userID]
	if u == nil || u.loading {
		return dst
	}
	for _, ms := range u.rooms {
		dst = append(dst, ms)
	}
	return dst
}

// Membership returns userID's indexed membership of roomID.
func (m *Memberships) Membership(userID id.UserID, roomID id.RoomID) (Membership, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u := m.users[userID]
	if u == nil || u.loading {
		return Membership{}, false
	}
	ms, ok := u.rooms[roomID]
	return ms, ok
}

// JoinedUsers appends the indexed users joined to roomID to dst.
func (m *Memberships) JoinedUsers(roomID id.RoomID, dst []id.UserID) []id.UserID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for u := range m.joined[roomID] {
		dst = append(dst, u)
	}
	return dst
}

// ShareRoom reports whether a and b, both indexed, are joined to a common room.
func (m *Memberships) ShareRoom(a, b id.UserID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ua, ub := m.users[a], m.users[b]
	if ua == nil || ub == nil {
		return false
	}
	if len(ub.rooms) < len(ua.rooms) {
		ua, ub = ub, ua
	}
	for rid, ms := range ua.rooms {
		if ms.Membership != "join" {
			continue
		}
		if o, ok := ub.rooms[rid]; ok && o.Membership == "join" {
			return true
		}
	}
	return false
}
