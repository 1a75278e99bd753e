package e2ee

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// LocalJoin tells that a local user joined a room (a join, not a profile
// change): servers in the room that shared no other room with the user must
// now hear of the user's devices (Server-Server API, "Device Management").
type LocalJoin struct {
	UserID id.UserID
	RoomID id.RoomID
}

// OnLocalJoin registers fn to be told of local users' joins. fn is called from
// a background goroutine after the join is committed and must be quick.
func (s *Service) OnLocalJoin(fn func(LocalJoin)) {
	s.subsMu.Lock()
	s.joinFn = append(s.joinFn, fn)
	s.subsMu.Unlock()
}

// roomWatch follows joins for the remote device-list cache. A remote user's
// join means their server may not have been sending us their updates; a local
// user's join means the remote members of the room may be users nobody here
// shared a room with. Either way their entries are marked stale. The room
// engine's listener only queues the work: a goroutine does it.
type roomWatch struct {
	mu      sync.Mutex
	jobs    []watchJob
	running bool
	// pendingUsers and pendingRooms count queued jobs: remote users whose
	// entries are about to be marked stale, and local joins whose rooms'
	// remote members are. The cache is not used for them meanwhile.
	pendingUsers map[id.UserID]int
	pendingRooms int
}

type watchJob struct {
	user id.UserID
	room id.RoomID
	// authIDs are the join event's auth events (local joins only): they hold
	// the user's previous membership.
	authIDs []id.EventID
}

// watchTimeout bounds the work of one batch of jobs.
const watchTimeout = time.Minute

// onRoomEvent is the room engine listener (called with the room locked: it
// only queues).
func (s *Service) onRoomEvent(o roomserver.OutputEvent) {
	ev := o.Event
	if o.SoftFailed || !o.StateChanged || ev == nil || ev.Type() != "m.room.member" || ev.StateKey() == nil {
		return
	}
	if gjson.GetBytes(ev.Content(), "membership").Str != "join" {
		return
	}
	job := watchJob{user: id.UserID(*ev.StateKey()), room: ev.RoomID()}
	local := s.IsLocal(job.user)
	if local {
		job.authIDs = slices.Clone(ev.AuthEventIDs())
	}
	w := &s.watch
	w.mu.Lock()
	w.jobs = append(w.jobs, job)
	if local {
		w.pendingRooms++
	} else {
		if w.pendingUsers == nil {
			w.pendingUsers = map[id.UserID]int{}
		}
		w.pendingUsers[job.user]++
	}
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go s.watchLoop()
	}
}

// watchLoop does the queued jobs and exits when there are none.
func (s *Service) watchLoop() {
	w := &s.watch
	for {
		w.mu.Lock()
		jobs := w.jobs
		w.jobs = nil
		if len(jobs) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		joins := s.doWatchJobs(jobs)
		w.mu.Lock()
		for _, j := range jobs {
			if s.IsLocal(j.user) {
				w.pendingRooms--
			} else if w.pendingUsers[j.user]--; w.pendingUsers[j.user] <= 0 {
				delete(w.pendingUsers, j.user)
			}
		}
		w.mu.Unlock()
		if len(joins) == 0 {
			continue
		}
		s.subsMu.RLock()
		fns := s.joinFn
		s.subsMu.RUnlock()
		for _, j := range joins {
			for _, fn := range fns {
				fn(j)
			}
		}
	}
}

// doWatchJobs marks the entries the jobs concern stale and returns the local
// users' joins (profile changes left out).
func (s *Service) doWatchJobs(jobs []watchJob) []LocalJoin {
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel()
	var stale []id.UserID
	var joins []LocalJoin
	for _, j := range jobs {
		if !s.IsLocal(j.user) {
			stale = append(stale, j.user)
			continue
		}
		if !s.newJoin(ctx, j) {
			continue
		}
		joins = append(joins, LocalJoin{UserID: j.user, RoomID: j.room})
		members, err := s.rooms.Members(ctx, j.room, "join")
		if err != nil {
			slog.Warn("listing members after a join", "room_id", j.room, "err", err)
			continue
		}
		for _, m := range members {
			if !s.IsLocal(m) {
				stale = append(stale, m)
			}
		}
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		stale = slices.Compact(stale)
		if err := s.MarkRemoteDeviceListsStale(ctx, stale); err != nil {
			slog.Warn("marking remote device lists stale", "users", len(stale), "err", err)
		}
	}
	return joins
}

// newJoin reports whether a local user's join event is a join rather than a
// profile change: the user's membership before it, found among its auth events
// (Room versions, auth rules for m.room.member: the target's current
// membership event is an auth event), was not "join".
func (s *Service) newJoin(ctx context.Context, j watchJob) bool {
	evs, err := s.rooms.Events(ctx, j.authIDs)
	if err != nil {
		slog.Warn("loading a join's auth events", "room_id", j.room, "err", err)
		return true
	}
	for _, e := range evs {
		if e.Type() == "m.room.member" && e.StateKey() != nil && *e.StateKey() == string(j.user) {
			return gjson.GetBytes(e.Content(), "membership").Str != "join"
		}
	}
	return true
}
