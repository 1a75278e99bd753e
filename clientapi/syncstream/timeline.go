package syncstream

import (
	"sync"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
)

// TimelineEntry is one event of a room's recent timeline.
type TimelineEntry struct {
	Pos   int64
	Event *events.Event
	// Link says whether the event continues the timeline before it (see
	// LinkUnknown, Linked, Gap).
	Link Link
}

// Link says whether every prev event of a timeline event is an earlier event
// of the room's timeline. An event that is not (its prev events are unknown,
// or known only as outliers, because a gap in the room's history could not be
// filled) starts a new stretch of timeline: /sync marks the timeline limited
// there, so the client paginates the gap (as Synapse's timeline_gaps).
type Link int8

const (
	// LinkUnknown: some prev event is not in the cache; ask the store.
	LinkUnknown Link = iota
	// Linked: every prev event is an earlier event of the timeline.
	Linked
	// Gap: some prev event is missing from the timeline.
	Gap
)

// Timelines keeps the recent timeline of every room that had events since the
// process started, so an incremental sync finds what is new in a room without
// asking the store, and skips rooms without news at the cost of a map lookup.
type Timelines struct {
	mu    sync.RWMutex
	start int64
	size  int
	rooms map[id.RoomID]*roomTimeline
}

type roomTimeline struct {
	// from: every timeline event of the room with a position above from is
	// in entries (older ones were dropped from the ring).
	from   int64
	latest int64
	// entries is a ring of the newest events, oldest first from head.
	entries []TimelineEntry
	head    int
	// maxDepth is the greatest depth among the events appended; disordered
	// is set once an event arrived with a smaller depth than an earlier one
	// (a late event from another server), so that stream order and
	// topological order differ.
	maxDepth   int64
	disordered bool
}

// NewTimelines starts caching after stream position start, keeping the newest
// size events of each room.
func NewTimelines(start int64, size int) *Timelines {
	if size < 1 {
		size = 1
	}
	return &Timelines{start: start, size: size, rooms: make(map[id.RoomID]*roomTimeline)}
}

// Start is the position caching began after: a room with no entry has had no
// events above it.
func (t *Timelines) Start() int64 { return t.start }

// Append adds a room's event. Events of a room arrive in stream order; one that
// does not (a late announcement) resets the room's cache to start after it.
func (t *Timelines) Append(roomID id.RoomID, pos int64, ev *events.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		rt = &roomTimeline{from: t.start}
		t.rooms[roomID] = rt
	}
	if pos <= rt.latest {
		rt.entries, rt.head, rt.from = nil, 0, rt.latest
		return
	}
	rt.latest = pos
	if ev == nil {
		// A position to remember without an event (soft-failed events).
		return
	}
	if d := ev.Depth(); d < rt.maxDepth {
		rt.disordered = true
	} else {
		rt.maxDepth = d
	}
	e := TimelineEntry{Pos: pos, Event: ev, Link: rt.link(ev)}
	if len(rt.entries) < t.size {
		rt.entries = append(rt.entries, e)
		return
	}
	old := rt.entries[rt.head]
	rt.entries[rt.head] = e
	rt.head = (rt.head + 1) % len(rt.entries)
	rt.from = old.Pos
}

// link tells from the cached entries whether all prev events of ev are
// earlier timeline events: Linked when each is cached, else LinkUnknown. The
// newest entries are looked at first, where a prev event normally is.
func (rt *roomTimeline) link(ev *events.Event) Link {
	prevs := ev.PrevEventIDs()
	if len(prevs) == 0 {
		return Linked // the create event
	}
	n := len(rt.entries)
next:
	for _, p := range prevs {
		for i := n - 1; i >= 0; i-- {
			if rt.entries[(rt.head+i)%n].Event.ID() == p {
				continue next
			}
		}
		return LinkUnknown
	}
	return Linked
}

// SetLink records what the store said about the Link of the room's cached
// event at pos, so the question is asked once.
func (t *Timelines) SetLink(roomID id.RoomID, pos int64, l Link) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		return
	}
	for i := range rt.entries {
		if rt.entries[i].Pos == pos {
			rt.entries[i].Link = l
			return
		}
	}
}

// Disordered reports whether events of the room arrived out of topological
// order since caching began: a late event from another server has a smaller
// depth than one before it in the stream.
func (t *Timelines) Disordered(roomID id.RoomID) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rt := t.rooms[roomID]
	return rt != nil && rt.disordered
}

// Latest returns the position of the room's newest event since caching began,
// or the start position when it had none.
func (t *Timelines) Latest(roomID id.RoomID) int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if rt := t.rooms[roomID]; rt != nil {
		return rt.latest
	}
	return t.start
}

// Scan calls fn with the room's cached events whose positions are in
// (since, upTo], newest first, until fn returns false. It reports whether the
// cache held every event of that range (if not, and fn never returned false,
// older events must come from the store).
func (t *Timelines) Scan(roomID id.RoomID, since, upTo int64, fn func(TimelineEntry) bool) (complete bool) {
	t.mu.RLock()
	rt := t.rooms[roomID]
	if rt == nil {
		t.mu.RUnlock()
		return since >= t.start
	}
	// Copy the matching entries so fn runs without the lock.
	var buf [32]TimelineEntry
	matched := buf[:0]
	n := len(rt.entries)
	for i := n - 1; i >= 0; i-- {
		e := rt.entries[(rt.head+i)%n]
		if e.Pos > upTo {
			continue
		}
		if e.Pos <= since {
			break
		}
		matched = append(matched, e)
	}
	complete = since >= rt.from
	t.mu.RUnlock()
	for _, e := range matched {
		if !fn(e) {
			return true
		}
	}
	return complete
}
