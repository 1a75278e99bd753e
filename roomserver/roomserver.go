// Package roomserver is Hearth's room engine and its one event store. Both API faces
// (client and federation) read and write rooms only through it: it builds and signs
// local events, checks every event against the auth rules of its room version,
// resolves state, persists events atomically with their state, and tells listeners
// (sync, the federation sender) about new events in stream order.
package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
	"hearth/storage"
)

// Errors callers map to Matrix errors.
var (
	ErrRoomNotFound  = errors.New("room not found")
	ErrEventNotFound = errors.New("event not found")
)

// NotAllowedError is returned when an event fails the auth rules.
type NotAllowedError struct{ Err error }

func (e *NotAllowedError) Error() string { return "event not allowed: " + e.Err.Error() }
func (e *NotAllowedError) Unwrap() error { return e.Err }

// OutputEvent is what listeners are told about each new event added to a room's
// timeline, in stream order.
type OutputEvent struct {
	Event     *events.Event
	RoomNID   int64
	StreamPos int64
	// SoftFailed events are stored but must not reach clients.
	SoftFailed bool
	// StateChanged is set when the event changed the room's current state.
	StateChanged bool
}

// Listener is called after an event is committed, with the room's lock held: it
// must be quick (wake a waiter, enqueue work) and must not call back into the room.
type Listener func(OutputEvent)

// Roomserver is the room engine.
type Roomserver struct {
	db         *storage.DB
	serverName string
	key        *config.SigningKey

	snapshots *snapshotCache
	events    *eventCache
	keys      *stateKeyInterner
	stream    *streamTracker

	roomsMu sync.Mutex
	rooms   map[id.RoomID]*room

	listenersMu sync.RWMutex
	listeners   []Listener

	keyFetcher atomic.Pointer[pdu.GetKeyFunc]
}

// New creates the room engine over db, signing local events as serverName with key.
func New(ctx context.Context, db *storage.DB, serverName string, key *config.SigningKey) (*Roomserver, error) {
	r := &Roomserver{
		db:         db,
		serverName: serverName,
		key:        key,
		snapshots:  newSnapshotCache(512),
		events:     newEventCache(50000),
		keys:       newStateKeyInterner(),
		rooms:      make(map[id.RoomID]*room),
	}
	var maxPos sql.NullInt64
	if err := db.QueryRow(ctx, `SELECT MAX(stream_pos) FROM events`).Scan(&maxPos); err != nil {
		return nil, fmt.Errorf("reading stream position: %w", err)
	}
	r.stream = newStreamTracker(maxPos.Int64)
	return r, nil
}

// ServerName is the name of the local server.
func (r *Roomserver) ServerName() string { return r.serverName }

// AddListener registers l to be told about every new timeline event.
func (r *Roomserver) AddListener(l Listener) {
	r.listenersMu.Lock()
	r.listeners = append(r.listeners, l)
	r.listenersMu.Unlock()
}

func (r *Roomserver) notify(o OutputEvent) {
	r.listenersMu.RLock()
	ls := r.listeners
	r.listenersMu.RUnlock()
	for _, l := range ls {
		l(o)
	}
}

// StreamPosition is the highest stream position below which every event is committed:
// what /sync may safely read up to.
func (r *Roomserver) StreamPosition() int64 { return r.stream.current() }

// room is the in-memory view of one room. Its mutex is the room's input queue: no
// two writers in one room, rooms in parallel.
type room struct {
	mu      sync.Mutex
	loaded  bool
	dropped bool // removed from the rooms map; never use again
	nid     int64
	id      id.RoomID
	version *roomversion.Version

	currentNID  int64
	current     stateMap // shared, never modified in place
	currentMeta snapshotMeta
	extremities []extremity
}

type extremity struct {
	nid   int64
	id    id.EventID
	depth int64
}

// lockRoom returns the room's in-memory entry, locked and loaded. ErrRoomNotFound if
// the room is unknown (the entry stays for a later create).
func (r *Roomserver) lockRoom(ctx context.Context, roomID id.RoomID) (*room, error) {
	for {
		r.roomsMu.Lock()
		rm, ok := r.rooms[roomID]
		if !ok {
			rm = &room{id: roomID}
			r.rooms[roomID] = rm
		}
		r.roomsMu.Unlock()
		rm.mu.Lock()
		if rm.dropped {
			// Dropped from the map while we waited: take the current entry.
			rm.mu.Unlock()
			continue
		}
		if !rm.loaded {
			if err := r.loadRoom(ctx, rm); err != nil {
				if errors.Is(err, ErrRoomNotFound) {
					// Unknown rooms (a client's typo, junk input) must not grow
					// memory: drop the entry; waiters see dropped and retry.
					rm.dropped = true
					r.roomsMu.Lock()
					if r.rooms[roomID] == rm {
						delete(r.rooms, roomID)
					}
					r.roomsMu.Unlock()
				}
				rm.mu.Unlock()
				return nil, err
			}
		}
		return rm, nil
	}
}

func (r *Roomserver) loadRoom(ctx context.Context, rm *room) error {
	var version string
	err := r.db.QueryRow(ctx, `SELECT room_nid, room_version, current_snapshot_nid FROM rooms WHERE room_id = $1`, string(rm.id)).
		Scan(&rm.nid, &version, &rm.currentNID)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrRoomNotFound
	}
	if err != nil {
		return fmt.Errorf("loading room %s: %w", rm.id, err)
	}
	v, ok := roomversion.Lookup(id.RoomVersion(version))
	if !ok {
		return fmt.Errorf("room %s has unsupported version %q", rm.id, version)
	}
	rm.version = v
	if rm.current, rm.currentMeta, err = r.loadSnapshot(ctx, r.db, rm.currentNID); err != nil {
		return err
	}
	rows, err := r.db.Query(ctx, `SELECT e.event_nid, e.event_id, e.depth FROM forward_extremities f JOIN events e ON e.event_nid = f.event_nid WHERE f.room_nid = $1`, rm.nid)
	if err != nil {
		return fmt.Errorf("loading extremities of %s: %w", rm.id, err)
	}
	defer rows.Close()
	rm.extremities = rm.extremities[:0]
	for rows.Next() {
		var x extremity
		var eid string
		if err := rows.Scan(&x.nid, &eid, &x.depth); err != nil {
			return fmt.Errorf("loading extremities of %s: %w", rm.id, err)
		}
		x.id = id.EventID(eid)
		rm.extremities = append(rm.extremities, x)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rm.loaded = true
	return nil
}

// forget drops the in-memory view so the next writer reloads it from the database
// (after a failed transaction, memory may be ahead of the database).
func (rm *room) forget() { rm.loaded = false }

// RoomVersion returns the version of a known room.
func (r *Roomserver) RoomVersion(ctx context.Context, roomID id.RoomID) (*roomversion.Version, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	return rm.version, nil
}

func logErr(msg string, err error, args ...any) {
	slog.Error(msg, append(args, "err", err)...)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
