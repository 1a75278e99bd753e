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
}

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
	e := TimelineEntry{Pos: pos, Event: ev}
	if len(rt.entries) < t.size {
		rt.entries = append(rt.entries, e)
		return
	}
	old := rt.entries[rt.head]
	rt.entries[rt.head] = e
	rt.head = (rt.head + 1) % len(rt.entries)
	rt.from = old.Pos
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
