package federationapi

import (
	"context"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// maxJoinWait bounds how long a received transaction waits for a join of its
// room that this server has in flight.
const maxJoinWait = 30 * time.Second

// joinsInFlight tracks the remote joins this server is making, by room. A
// resident server sends new events (a ban right after the join, say) as soon as
// it has answered send_join, often before this server has stored the room's
// state; a transaction for such a room waits for the join to finish rather than
// finding the room unknown or half-stored and dropping the events.
type joinsInFlight struct {
	mu    sync.Mutex
	rooms map[id.RoomID]*joinInFlight
}

type joinInFlight struct {
	n    int
	done chan struct{}
}

// begin marks a join of roomID in flight; the returned func ends it.
func (j *joinsInFlight) begin(roomID id.RoomID) func() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rooms == nil {
		j.rooms = make(map[id.RoomID]*joinInFlight)
	}
	f := j.rooms[roomID]
	if f == nil {
		f = &joinInFlight{done: make(chan struct{})}
		j.rooms[roomID] = f
	}
	f.n++
	return func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		if f.n--; f.n == 0 {
			close(f.done)
			delete(j.rooms, roomID)
		}
	}
}

// wait returns once no join of roomID is in flight, ctx ends or maxJoinWait
// passes, whichever comes first.
func (j *joinsInFlight) wait(ctx context.Context, roomID id.RoomID) {
	j.mu.Lock()
	f := j.rooms[roomID]
	j.mu.Unlock()
	if f == nil {
		return
	}
	t := time.NewTimer(maxJoinWait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-ctx.Done():
	case <-t.C:
	}
}
