package appservice

import (
	"context"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// Which events a service gets (Application Service API, "Registration"): those
// sent by a user it is interested in (its sender or a local user in its user
// namespace), membership events about such a user, and every event of a room
// whose ID is in its room namespace, that has a local alias in its alias
// namespace, or that has a joined local member it is interested in. This is
// Synapse's is_interested_in_event.

// roomInterestTTL bounds how long a room's interest is trusted: aliases come
// and go without room events, and the member list is read from current state.
const roomInterestTTL = 30 * time.Second

// maxCachedRooms bounds the room interest cache of one worker.
const maxCachedRooms = 10_000

// interested reports whether the worker's service should get e.
func (w *worker) interested(ctx context.Context, e *roomserver.StoredEvent) (bool, error) {
	as := w.as
	roomID := e.RoomID()
	if e.Type() == "m.room.member" {
		if sk := e.StateKey(); sk != nil {
			target := id.UserID(*sk)
			if as.IsInterestedInUser(target) {
				// Keep the room cache right without reading the member list:
				// a join makes the room interesting; after anything else,
				// another member may or may not still be, so look again.
				if gjson.GetBytes(e.Content(), "membership").Str == "join" {
					w.rooms.set(roomID, true)
				} else {
					w.rooms.forget(roomID)
				}
				return true, nil
			}
		}
	}
	if as.IsInterestedInUser(e.Sender()) {
		return true, nil
	}
	return w.roomInterested(ctx, roomID)
}

// roomInterested reports whether every event of the room goes to the service.
func (w *worker) roomInterested(ctx context.Context, roomID id.RoomID) (bool, error) {
	as := w.as
	if as.RoomInNamespace(roomID) {
		return true, nil
	}
	if v, ok := w.rooms.get(roomID); ok {
		return v, nil
	}
	v, err := w.computeRoomInterest(ctx, roomID)
	if err != nil {
		return false, err
	}
	w.rooms.set(roomID, v)
	return v, nil
}

func (w *worker) computeRoomInterest(ctx context.Context, roomID id.RoomID) (bool, error) {
	as := w.as
	if len(as.Aliases) > 0 && w.aliases != nil {
		aliases, err := w.aliases.LocalAliasesOfRoom(ctx, roomID)
		if err != nil {
			return false, err
		}
		for _, a := range aliases {
			if as.AliasInNamespace(a) {
				return true, nil
			}
		}
	}
	members, err := w.s.rooms.Members(ctx, roomID, "join")
	if err != nil {
		return false, err
	}
	for _, u := range members {
		if as.IsInterestedInUser(u) { // local users only
			return true, nil
		}
	}
	return false, nil
}

// roomInterestCache remembers, per room, whether a service is interested in
// it. It belongs to one worker goroutine and needs no lock.
type roomInterestCache struct {
	m   map[id.RoomID]roomInterest
	now func() time.Time
}

type roomInterest struct {
	interested bool
	at         time.Time
}

func newRoomInterestCache() *roomInterestCache {
	return &roomInterestCache{m: make(map[id.RoomID]roomInterest), now: time.Now}
}

func (c *roomInterestCache) get(roomID id.RoomID) (bool, bool) {
	e, ok := c.m[roomID]
	if !ok || c.now().Sub(e.at) >= roomInterestTTL {
		return false, false
	}
	return e.interested, true
}

// set records v for the room (an update of a live entry keeps its age).
func (c *roomInterestCache) set(roomID id.RoomID, v bool) {
	if e, ok := c.m[roomID]; ok {
		if c.now().Sub(e.at) < roomInterestTTL {
			e.interested = v
			c.m[roomID] = e
			return
		}
	}
	if len(c.m) >= maxCachedRooms {
		// Drop an arbitrary tenth: map iteration order is random.
		n := maxCachedRooms / 10
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[roomID] = roomInterest{interested: v, at: c.now()}
}

func (c *roomInterestCache) forget(roomID id.RoomID) { delete(c.m, roomID) }
