package clientapi

import (
	"context"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// defaultTimelineLimit is the number of timeline events per room when the
// filter sets none.
const defaultTimelineLimit = 10

// maxTimelineLimit caps the timeline limit a filter may ask for.
const maxTimelineLimit = 1000

// syncFilter is a Filter prepared for /sync (Client-Server API, "Filtering").
type syncFilter struct {
	presence, accountData eventMatcher
	// rooms: room.rooms / room.not_rooms.
	rooms                                       roomMatcher
	timeline, state, ephemeral, roomAccountData roomEventMatcher

	timelineLimit int
	// lazyMembers: room.state.lazy_load_members; redundantMembers:
	// include_redundant_members.
	lazyMembers, redundantMembers bool
	includeLeave                  bool
	// threadCounts: unread_thread_notifications on the timeline filter.
	threadCounts bool
	federation   bool
	eventFields  []string
}

// eventMatcher applies an EventFilter's types, not_types, senders,
// not_senders and limit. The zero value passes everything.
type eventMatcher struct {
	types, notTypes     []string
	senders, notSenders map[id.UserID]struct{}
	hasSenders          bool
	limit               int // 0: none
}

// roomMatcher applies rooms / not_rooms.
type roomMatcher struct {
	rooms, notRooms map[id.RoomID]struct{}
	hasRooms        bool
}

// roomEventMatcher is a RoomEventFilter prepared.
type roomEventMatcher struct {
	eventMatcher
	rooms       roomMatcher
	containsURL *bool
}

func newEventMatcher(f *EventFilter) eventMatcher {
	var m eventMatcher
	if f == nil {
		return m
	}
	m.types, m.notTypes = f.Types, f.NotTypes
	if f.Senders != nil {
		m.hasSenders = true
		m.senders = userSet(f.Senders)
	}
	if len(f.NotSenders) > 0 {
		m.notSenders = userSet(f.NotSenders)
	}
	if f.Limit != nil {
		m.limit = *f.Limit
	}
	return m
}

func userSet(us []string) map[id.UserID]struct{} {
	m := make(map[id.UserID]struct{}, len(us))
	for _, u := range us {
		m[id.UserID(u)] = struct{}{}
	}
	return m
}

func newRoomMatcher(rooms, notRooms []string) roomMatcher {
	var m roomMatcher
	if rooms != nil {
		m.hasRooms = true
		m.rooms = make(map[id.RoomID]struct{}, len(rooms))
		for _, r := range rooms {
			m.rooms[id.RoomID(r)] = struct{}{}
		}
	}
	if len(notRooms) > 0 {
		m.notRooms = make(map[id.RoomID]struct{}, len(notRooms))
		for _, r := range notRooms {
			m.notRooms[id.RoomID(r)] = struct{}{}
		}
	}
	return m
}

func newRoomEventMatcher(f *RoomEventFilter) roomEventMatcher {
	if f == nil {
		return roomEventMatcher{}
	}
	return roomEventMatcher{eventMatcher: newEventMatcher(&f.EventFilter), rooms: newRoomMatcher(f.Rooms, f.NotRooms), containsURL: f.ContainsURL}
}

// compileSyncFilter prepares a filter; nil means the default filter.
func compileSyncFilter(f *Filter) *syncFilter {
	sf := &syncFilter{timelineLimit: defaultTimelineLimit}
	if f == nil {
		return sf
	}
	sf.presence = newEventMatcher(f.Presence)
	sf.accountData = newEventMatcher(f.AccountData)
	sf.federation = f.EventFormat == "federation"
	sf.eventFields = f.EventFields
	if r := f.Room; r != nil {
		sf.rooms = newRoomMatcher(r.Rooms, r.NotRooms)
		sf.timeline = newRoomEventMatcher(r.Timeline)
		sf.state = newRoomEventMatcher(r.State)
		sf.ephemeral = newRoomEventMatcher(r.Ephemeral)
		sf.roomAccountData = newRoomEventMatcher(r.AccountData)
		sf.includeLeave = r.IncludeLeave
		if r.Timeline != nil {
			if r.Timeline.Limit != nil {
				sf.timelineLimit = min(*r.Timeline.Limit, maxTimelineLimit)
			}
			sf.threadCounts = r.Timeline.UnreadThreadNotifications
		}
		if r.State != nil {
			sf.lazyMembers = r.State.LazyLoadMembers
			sf.redundantMembers = r.State.IncludeRedundantMembers
		}
	}
	return sf
}

// match reports whether an event of type typ from sender passes.
func (m *eventMatcher) match(typ string, sender id.UserID) bool {
	if m.hasSenders {
		if _, ok := m.senders[sender]; !ok {
			return false
		}
	}
	if _, ok := m.notSenders[sender]; ok {
		return false
	}
	for _, t := range m.notTypes {
		if globMatch(t, typ) {
			return false
		}
	}
	if m.types == nil {
		return true
	}
	for _, t := range m.types {
		if globMatch(t, typ) {
			return true
		}
	}
	return false
}

// matchType reports whether events of type typ pass (senders aside).
func (m *eventMatcher) matchType(typ string) bool {
	for _, t := range m.notTypes {
		if globMatch(t, typ) {
			return false
		}
	}
	if m.types == nil {
		return true
	}
	for _, t := range m.types {
		if globMatch(t, typ) {
			return true
		}
	}
	return false
}

func (m *roomMatcher) match(roomID id.RoomID) bool {
	if m.hasRooms {
		if _, ok := m.rooms[roomID]; !ok {
			return false
		}
	}
	_, no := m.notRooms[roomID]
	return !no
}

// matchEvent applies a room event filter to a stored event.
func (m *roomEventMatcher) matchEvent(e *roomserver.StoredEvent) bool {
	if !m.match(e.Type(), e.Sender()) {
		return false
	}
	if m.containsURL != nil {
		has := gjson.GetBytes(e.Content(), "url").Type == gjson.String
		if has != *m.containsURL {
			return false
		}
	}
	return true
}

// globMatch matches s against a pattern where '*' stands for any run of
// characters (the filter's types and not_types).
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	// Iterative wildcard matching with backtracking to the last star.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// filterCache keeps parsed stored filters: a stored filter never changes, so
// a long-polling client's filter ID is parsed once.
type filterCache struct {
	mu  sync.Mutex
	max int
	m   map[filterKey]*syncFilter
}

type filterKey struct{ localpart, id string }

func newFilterCache(max int) *filterCache {
	return &filterCache{max: max, m: make(map[filterKey]*syncFilter)}
}

// syncFilterFor resolves /sync's filter parameter: empty for the default,
// inline JSON, or a stored filter ID of the user.
func (s *Syncer) syncFilterFor(ctx context.Context, localpart, param string) (*syncFilter, error) {
	if param == "" {
		return compileSyncFilter(nil), nil
	}
	inline := strings.HasPrefix(strings.TrimSpace(param), "{")
	k := filterKey{localpart, param}
	if !inline {
		s.filters.mu.Lock()
		f := s.filters.m[k]
		s.filters.mu.Unlock()
		if f != nil {
			return f, nil
		}
	}
	f, err := s.api.LoadFilter(ctx, localpart, param)
	if err != nil {
		return nil, err
	}
	sf := compileSyncFilter(f)
	if !inline {
		s.filters.mu.Lock()
		if len(s.filters.m) >= s.filters.max {
			for k := range s.filters.m {
				delete(s.filters.m, k)
				if len(s.filters.m) < s.filters.max*9/10 {
					break
				}
			}
		}
		s.filters.m[k] = sf
		s.filters.mu.Unlock()
	}
	return sf, nil
}

// lazyMembers remembers, per device, which member events lazy-loading syncs
// have sent for each room, so later syncs leave out the redundant ones
// (Client-Server API, "Lazy-loading room members"). It is a bounded cache:
// forgetting only makes the server send a member event again.
type lazyMembers struct {
	mu      sync.Mutex
	max     int
	devices map[lazyKey]map[id.RoomID]map[id.UserID]id.EventID
}

type lazyKey struct {
	user   id.UserID
	device id.DeviceID
}

// maxLazyMembersPerRoom bounds what is remembered for one room of one device.
const maxLazyMembersPerRoom = 5000

func newLazyMembers(max int) *lazyMembers {
	return &lazyMembers{max: max, devices: make(map[lazyKey]map[id.RoomID]map[id.UserID]id.EventID)}
}

// reset forgets what a device was sent (on an initial sync).
func (l *lazyMembers) reset(k lazyKey) {
	l.mu.Lock()
	delete(l.devices, k)
	l.mu.Unlock()
}

// sent reports whether the device was already sent this member event.
func (l *lazyMembers) sent(k lazyKey, roomID id.RoomID, user id.UserID, eventID id.EventID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devices[k][roomID][user] == eventID
}

// record notes member events sent to a device.
func (l *lazyMembers) record(k lazyKey, roomID id.RoomID, sent map[id.UserID]id.EventID) {
	if len(sent) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rooms := l.devices[k]
	if rooms == nil {
		if len(l.devices) >= l.max {
			for dk := range l.devices {
				delete(l.devices, dk)
				if len(l.devices) < l.max*9/10 {
					break
				}
			}
		}
		rooms = make(map[id.RoomID]map[id.UserID]id.EventID)
		l.devices[k] = rooms
	}
	m := rooms[roomID]
	if m == nil || len(m) > maxLazyMembersPerRoom {
		m = make(map[id.UserID]id.EventID, len(sent))
		rooms[roomID] = m
	}
	for u, e := range sent {
		m[u] = e
	}
}
