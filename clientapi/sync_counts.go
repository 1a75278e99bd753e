package clientapi

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/pushrules"
	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
)

// Unread notification counts (Client-Server API, "Receiving notifications",
// "Marking notifications as read"; threads: "Threaded read receipts").
//
// The push rules of every local member of a room are evaluated once per event,
// when it arrives: the room engine's listener queues the event, and one worker
// goroutine evaluates queued events in batches, writes one row per notification
// (sync_notifications) in one transaction per batch, and keeps the counts of
// users who sync in memory. Read receipts (and a user's own events) delete the
// rows they pass. A /sync waits until the worker has caught up with the events
// it returns, so counts arrive in the same response as their event.

// countJob is one piece of the worker's queue.
type countJob struct {
	event   *roomserver.OutputEvent
	receipt *readUpTo
	load    id.UserID
}

// readUpTo says a user has read a room (or one thread of it) up to an event.
type readUpTo struct {
	user   id.UserID
	roomID id.RoomID
	// thread is "" for an unthreaded receipt (all threads), "main" for the
	// main timeline, or a thread root's event ID.
	thread string
	pos    int64
}

// threadCounts are the counts of one thread ("" is the main timeline).
type threadCounts struct {
	notif, highlight int
	last             int64 // position of the newest unread notification
}

// roomCounts holds a user's unread counts in one room, by thread.
type roomCounts map[string]*threadCounts

// notifCounter is the worker and the in-memory counts.
type notifCounter struct {
	s *Syncer

	mu      sync.Mutex
	queue   []countJob
	signal  chan struct{}
	enq     int64 // jobs queued so far
	done    int64 // jobs finished (in memory) so far
	written int64 // jobs finished and written to the store so far
	doneCh  chan struct{}
	closed  bool

	cmu   sync.RWMutex
	users map[id.UserID]map[id.RoomID]roomCounts

	// Worker-only state.
	rooms   map[id.RoomID]*countRoom
	pending countWrites
}

// countRoom is what evaluating push rules needs to know about a room.
type countRoom struct {
	// members maps the local joined users to their display names.
	members map[id.UserID]string
	joined  int
	pl      pushPowerLevels

	// predecessor is the room this one replaced (create event), if any.
	predecessor id.RoomID
}

// pushPowerLevels is the part of m.room.power_levels push rules look at.
type pushPowerLevels struct {
	users         map[id.UserID]int64
	usersDefault  int64
	notifications map[string]int64
	creators      map[id.UserID]struct{} // room v12 creators: unlimited power
}

func (p *pushPowerLevels) level(u id.UserID) int64 {
	if _, ok := p.creators[u]; ok {
		return 1 << 53
	}
	if l, ok := p.users[u]; ok {
		return l
	}
	return p.usersDefault
}

// countWrites are the rows a batch writes.
type countWrites struct {
	rows []notifRow
	// deletes: per user, room and thread ("*": all), the position read up to.
	deletes map[readKey]int64
	dirUser map[id.UserID]dirProfile
	dirRoom map[id.RoomID]dirRoomFlags
}

type readKey struct {
	user   id.UserID
	roomID id.RoomID
	thread string
}

func (w *countWrites) empty() bool {
	return len(w.rows) == 0 && len(w.deletes) == 0 && len(w.dirUser) == 0 && len(w.dirRoom) == 0
}

type notifRow struct {
	user      id.UserID
	roomID    id.RoomID
	pos       int64
	thread    string
	highlight bool
}

// maxCountRooms bounds the rooms the worker keeps; beyond it, arbitrary ones
// are dropped and reloaded when needed.
const maxCountRooms = 20_000

func newNotifCounter(s *Syncer) *notifCounter {
	return &notifCounter{
		s: s, signal: make(chan struct{}, 1), doneCh: make(chan struct{}),
		users: make(map[id.UserID]map[id.RoomID]roomCounts), rooms: make(map[id.RoomID]*countRoom),
	}
}

func (c *notifCounter) push(j countJob) int64 {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0
	}
	c.queue = append(c.queue, j)
	c.enq++
	seq := c.enq
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return seq
}

// enqueueEvent queues an event (from the listener: must be quick).
func (c *notifCounter) enqueueEvent(o roomserver.OutputEvent) { c.push(countJob{event: &o}) }

// enqueueRead queues a read receipt's effect on counts.
func (c *notifCounter) enqueueRead(r readUpTo) int64 { return c.push(countJob{receipt: &r}) }

// queued is the number of jobs queued so far: waiting for it waits for every
// job queued before the call.
func (c *notifCounter) queued() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enq
}

// waitFor waits up to d until the jobs up to seq are done.
func (c *notifCounter) waitFor(seq int64, d time.Duration) bool {
	var timer *time.Timer
	for {
		c.mu.Lock()
		done, ch, closed := c.done, c.doneCh, c.closed
		c.mu.Unlock()
		if done >= seq || closed {
			return done >= seq
		}
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// ensureLoaded makes the worker load a user's counts into memory (once).
func (c *notifCounter) ensureLoaded(userID id.UserID) {
	c.cmu.RLock()
	_, ok := c.users[userID]
	c.cmu.RUnlock()
	if ok {
		return
	}
	c.waitFor(c.push(countJob{load: userID}), 5*time.Second)
}

// get returns a user's counts in a room: all threads together, or, with
// threads set, the main timeline and each thread apart.
func (c *notifCounter) get(userID id.UserID, roomID id.RoomID, threads bool) (main threadCounts, byThread map[string]threadCounts) {
	c.cmu.RLock()
	defer c.cmu.RUnlock()
	for t, tc := range c.users[userID][roomID] {
		if !threads || t == "" {
			main.notif += tc.notif
			main.highlight += tc.highlight
			continue
		}
		if tc.notif == 0 && tc.highlight == 0 {
			continue
		}
		if byThread == nil {
			byThread = make(map[string]threadCounts)
		}
		byThread[t] = *tc
	}
	return main, byThread
}

func (c *notifCounter) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// maxCountBatch bounds the jobs taken from the queue at once.
const maxCountBatch = 512

// Writes are batched: rows wait in memory (where the counts syncs read are
// current already) until the queue has been idle for flushDelay or
// maxPendingRows rows are waiting, so a busy room costs few transactions
// (on SQLite, time taken from the one writer that sends also need).
const (
	flushDelay     = 5 * time.Millisecond
	maxPendingRows = 4096
)

// run is the worker loop.
func (c *notifCounter) run() {
	ctx := context.Background()
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.mu.Unlock()
			if c.pending.empty() {
				<-c.signal
			} else {
				idle.Reset(flushDelay)
				select {
				case <-c.signal:
				case <-idle.C:
					c.flushAndMark(ctx)
				}
				idle.Stop()
			}
			c.mu.Lock()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			c.flushAndMark(ctx)
			return // closed, and everything queued is done
		}
		n := min(len(c.queue), maxCountBatch)
		batch := make([]countJob, n)
		copy(batch, c.queue)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()

		for _, j := range batch {
			switch {
			case j.event != nil:
				c.processEvent(ctx, j.event)
			case j.receipt != nil:
				c.processRead(ctx, *j.receipt)
			case j.load != "":
				c.flush(ctx)
				c.loadUser(ctx, j.load)
			}
		}
		// The counts in memory are current: syncs need not wait for the write.
		c.mu.Lock()
		c.done += int64(n)
		close(c.doneCh)
		c.doneCh = make(chan struct{})
		c.mu.Unlock()
		if len(c.pending.rows) >= maxPendingRows {
			c.flushAndMark(ctx)
		}
	}
}

// flushAndMark writes the pending rows and records every processed job as
// written.
func (c *notifCounter) flushAndMark(ctx context.Context) {
	c.flush(ctx)
	c.mu.Lock()
	c.written = c.done
	close(c.doneCh)
	c.doneCh = make(chan struct{})
	c.mu.Unlock()
}

// flushed waits up to d until every job queued before the call is written.
func (c *notifCounter) flushed(d time.Duration) bool {
	c.mu.Lock()
	seq := c.enq
	c.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		written, ch, closed := c.written, c.doneCh, c.closed
		c.mu.Unlock()
		if written >= seq || closed {
			return written >= seq
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// processEvent evaluates one event for every local member of its room.
func (c *notifCounter) processEvent(ctx context.Context, o *roomserver.OutputEvent) {
	ev := o.Event
	roomID := ev.RoomID()
	room, err := c.room(ctx, roomID)
	if err != nil {
		logSyncErr("loading room for notification counts", err, "room", roomID)
		return
	}
	sender := ev.Sender()
	if len(room.members) > 0 && !(len(room.members) == 1 && memberIn(room.members, sender)) {
		c.evaluate(ctx, o, room)
	}
	if c.s.isLocal(sender) && memberIn(room.members, sender) {
		// A user's own event reads their thread up to it.
		c.read(readUpTo{user: sender, roomID: roomID, thread: c.threadKey(ctx, ev), pos: o.StreamPos}, true)
	}
	c.applyState(ctx, ev, room)
}

func memberIn(m map[id.UserID]string, u id.UserID) bool { _, ok := m[u]; return ok }

// evaluate runs the members' push rules on an event.
func (c *notifCounter) evaluate(ctx context.Context, o *roomserver.OutputEvent, room *countRoom) {
	ev := o.Event
	pe, err := pushrules.NewEvent(ev.JSON())
	if err != nil {
		return
	}
	rc := &pushrules.RoomContext{MemberCount: room.joined, SenderPowerLevel: room.pl.level(ev.Sender()), NotificationPowerLevels: room.pl.notifications}
	thread, threadKnown := "", false
	for u, displayName := range room.members {
		if u == ev.Sender() {
			continue
		}
		lp, _, _ := u.Parse()
		eval, err := c.s.api.PushEvaluator(ctx, lp)
		if err != nil {
			logSyncErr("loading push rules", err, "user", u)
			continue
		}
		res := safeEvaluate(eval, pe, rc, displayName)
		if res == nil || !res.Notify {
			continue
		}
		c.s.api.push.notify(u, ev, res) // push gateways (push_gateway.go)
		if !threadKnown {
			thread, threadKnown = c.threadKey(ctx, ev), true
		}
		c.pending.rows = append(c.pending.rows, notifRow{user: u, roomID: ev.RoomID(), pos: o.StreamPos, thread: thread, highlight: res.Highlight})
		c.cmu.Lock()
		if rooms, ok := c.users[u]; ok {
			rc := rooms[ev.RoomID()]
			if rc == nil {
				rc = roomCounts{}
				rooms[ev.RoomID()] = rc
			}
			tc := rc[thread]
			if tc == nil {
				tc = &threadCounts{}
				rc[thread] = tc
			}
			tc.notif++
			if res.Highlight {
				tc.highlight++
			}
			tc.last = max(tc.last, o.StreamPos)
		}
		c.cmu.Unlock()
	}
}

// safeEvaluate runs a user's push rules, treating a panic as no match.
func safeEvaluate(eval *pushrules.Evaluator, pe *pushrules.Event, rc *pushrules.RoomContext, displayName string) (res *pushrules.Result) {
	defer func() {
		if r := recover(); r != nil {
			logSyncErr("push rule evaluation panicked", fmt.Errorf("%v", r))
			res = nil
		}
	}()
	return eval.Evaluate(pe, rc, displayName)
}

// maxThreadHops bounds how many relations are followed to find an event's
// thread ("a maximum of 3 hops is recommended").
const maxThreadHops = 3

// threadKey returns the thread an event belongs to: its thread root's ID, or
// "" for the main timeline (Client-Server API, "Threaded read receipts").
func (c *notifCounter) threadKey(ctx context.Context, ev *events.Event) string {
	content := ev.Content()
	for hop := 0; hop < maxThreadHops; hop++ {
		rel := gjson.GetBytes(content, `m\.relates_to`)
		if !rel.IsObject() {
			return ""
		}
		if rel.Get("rel_type").Str == "m.thread" {
			if root := rel.Get("event_id").Str; strings.HasPrefix(root, "$") {
				return root
			}
			return ""
		}
		parent := rel.Get("event_id").Str
		if parent == "" {
			parent = rel.Get(`m\.in_reply_to.event_id`).Str
		}
		if parent == "" {
			return ""
		}
		pe, err := c.s.rs.Event(ctx, id.EventID(parent))
		if err != nil {
			return ""
		}
		content = pe.Content()
	}
	return ""
}

// applyState keeps the room's members and power levels current.
func (c *notifCounter) applyState(ctx context.Context, ev *events.Event, room *countRoom) {
	sk := ev.StateKey()
	if sk == nil {
		return
	}
	switch ev.Type() {
	case "m.room.member":
		u := id.UserID(*sk)
		content := ev.Content()
		membership := gjson.GetBytes(content, "membership").Str
		// The joined count is re-read (idempotent, unlike counting changes: the
		// room may have been loaded after this event was stored).
		if joined, _, err := c.s.rs.MemberCounts(ctx, ev.RoomID()); err == nil {
			room.joined = joined
		}
		delete(room.members, u)
		if membership == "join" {
			if c.s.isLocal(u) {
				room.members[u] = gjson.GetBytes(content, "displayname").Str
				if room.predecessor != "" {
					c.s.api.carryOverPushRules(ctx, u, room.predecessor, ev.RoomID()) // push.go
				}
			}
			if c.pending.dirUser == nil {
				c.pending.dirUser = map[id.UserID]dirProfile{}
			}
			c.pending.dirUser[u] = dirProfileOf(content)
		}
	case "m.room.power_levels":
		if *sk == "" {
			room.pl = parsePushPowerLevels(ev.Content(), room.pl.creators)
		}
	case "m.room.join_rules", "m.room.history_visibility":
		if *sk == "" {
			c.s.roomDirectoryFlags(ev, &c.pending)
		}
	}
}

// parsePushPowerLevels reads what push rules need from m.room.power_levels.
func parsePushPowerLevels(content []byte, creators map[id.UserID]struct{}) pushPowerLevels {
	p := pushPowerLevels{creators: creators, notifications: map[string]int64{}}
	c := gjson.ParseBytes(content)
	p.usersDefault = c.Get("users_default").Int()
	if us := c.Get("users"); us.IsObject() {
		p.users = map[id.UserID]int64{}
		us.ForEach(func(k, v gjson.Result) bool {
			p.users[id.UserID(k.Str)] = v.Int()
			return true
		})
	}
	if n := c.Get("notifications"); n.IsObject() {
		n.ForEach(func(k, v gjson.Result) bool {
			p.notifications[k.Str] = v.Int()
			return true
		})
	}
	if _, ok := p.notifications["room"]; !ok {
		p.notifications["room"] = 50
	}
	return p
}

// room returns the worker's view of a room, loading it from the store.
func (c *notifCounter) room(ctx context.Context, roomID id.RoomID) (*countRoom, error) {
	if r := c.rooms[roomID]; r != nil {
		return r, nil
	}
	rs := c.s.rs
	joined, _, err := rs.MemberCounts(ctx, roomID)
	if err != nil {
		return nil, err
	}
	local, err := rs.CurrentMemberEvents(ctx, roomID, "join", c.s.serverName)
	if err != nil {
		return nil, err
	}
	r := &countRoom{members: make(map[id.UserID]string, len(local)), joined: joined}
	for _, m := range local {
		if sk := m.StateKey(); sk != nil {
			r.members[id.UserID(*sk)] = gjson.GetBytes(m.Content(), "displayname").Str
		}
	}
	create, err := rs.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil {
		return nil, err
	}
	if create != nil {
		r.predecessor = id.RoomID(gjson.GetBytes(create.Content(), "predecessor.room_id").Str)
	}
	var creators map[id.UserID]struct{}
	if create != nil && create.Version().PrivilegedCreators {
		creators = map[id.UserID]struct{}{create.Sender(): {}}
		for _, x := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
			creators[id.UserID(x.Str)] = struct{}{}
		}
	}
	pl, err := rs.CurrentStateEvent(ctx, roomID, "m.room.power_levels", "")
	if err != nil {
		return nil, err
	}
	if pl != nil {
		r.pl = parsePushPowerLevels(pl.Content(), creators)
	} else {
		// No power levels: the creator has 100, everyone else 0.
		r.pl = pushPowerLevels{creators: creators, notifications: map[string]int64{"room": 50}}
		if create != nil {
			r.pl.users = map[id.UserID]int64{create.Sender(): 100}
		}
	}
	if len(c.rooms) >= maxCountRooms {
		for k := range c.rooms {
			delete(c.rooms, k)
			if len(c.rooms) < maxCountRooms*9/10 {
				break
			}
		}
	}
	c.rooms[roomID] = r
	return r, nil
}

// processRead applies a read receipt to the counts.
func (c *notifCounter) processRead(ctx context.Context, r readUpTo) {
	thread := r.thread
	if thread == "main" {
		thread = ""
	} else if thread == "" {
		thread = "*"
	}
	r.thread = thread
	if c.read(r, false) {
		c.flush(ctx)
		c.recount(ctx, r.user, r.roomID)
	}
}

// read marks a user's notifications up to r.pos read (thread "*": all of
// them). It reports whether some remain unread before pos, so the counts must
// be recomputed from the store.
func (c *notifCounter) read(r readUpTo, own bool) (recount bool) {
	if c.pending.deletes == nil {
		c.pending.deletes = map[readKey]int64{}
	}
	k := readKey{r.user, r.roomID, r.thread}
	c.pending.deletes[k] = max(c.pending.deletes[k], r.pos)
	c.cmu.Lock()
	defer c.cmu.Unlock()
	rooms, ok := c.users[r.user]
	if !ok {
		return false
	}
	rc := rooms[r.roomID]
	for t, tc := range rc {
		if r.thread != "*" && t != r.thread {
			continue
		}
		if tc.notif == 0 && tc.highlight == 0 {
			continue
		}
		if r.pos >= tc.last {
			tc.notif, tc.highlight = 0, 0
		} else if !own {
			recount = true
		}
	}
	return recount
}

// recount reloads a user's counts in a room from the store.
func (c *notifCounter) recount(ctx context.Context, user id.UserID, roomID id.RoomID) {
	rows, err := c.s.db.Query(ctx, `SELECT thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END), MAX(stream_pos)
		FROM sync_notifications WHERE user_id = $1 AND room_id = $2 GROUP BY thread_id`, string(user), string(roomID))
	if err != nil {
		logSyncErr("recounting notifications", err, "user", user)
		return
	}
	defer rows.Close()
	rc := roomCounts{}
	for rows.Next() {
		var t string
		tc := &threadCounts{}
		if err := rows.Scan(&t, &tc.notif, &tc.highlight, &tc.last); err != nil {
			logSyncErr("recounting notifications", err, "user", user)
			return
		}
		rc[t] = tc
	}
	c.cmu.Lock()
	if rooms, ok := c.users[user]; ok {
		rooms[roomID] = rc
	}
	c.cmu.Unlock()
}

// loadUser loads a user's counts from the store into memory.
func (c *notifCounter) loadUser(ctx context.Context, user id.UserID) {
	c.cmu.RLock()
	_, ok := c.users[user]
	c.cmu.RUnlock()
	if ok {
		return
	}
	rows, err := c.s.db.Query(ctx, `SELECT room_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END), MAX(stream_pos)
		FROM sync_notifications WHERE user_id = $1 GROUP BY room_id, thread_id`, string(user))
	if err != nil {
		logSyncErr("loading notification counts", err, "user", user)
		return
	}
	defer rows.Close()
	rooms := map[id.RoomID]roomCounts{}
	for rows.Next() {
		var rid, t string
		tc := &threadCounts{}
		if err := rows.Scan(&rid, &t, &tc.notif, &tc.highlight, &tc.last); err != nil {
			logSyncErr("loading notification counts", err, "user", user)
			return
		}
		rc := rooms[id.RoomID(rid)]
		if rc == nil {
			rc = roomCounts{}
			rooms[id.RoomID(rid)] = rc
		}
		rc[t] = tc
	}
	if rows.Err() != nil {
		logSyncErr("loading notification counts", rows.Err(), "user", user)
		return
	}
	c.cmu.Lock()
	c.users[user] = rooms
	c.cmu.Unlock()
}

// notifRowsPerInsert keeps an insert under SQLite's old 999-parameter limit.
const notifRowsPerInsert = 190

// flush writes the pending rows in one transaction.
func (c *notifCounter) flush(ctx context.Context) {
	p := &c.pending
	if p.empty() {
		return
	}
	err := c.s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for rows := p.rows; len(rows) > 0; {
			n := min(len(rows), notifRowsPerInsert)
			q := make([]byte, 0, 96+n*32)
			q = append(q, `INSERT INTO sync_notifications (user_id, room_id, stream_pos, thread_id, highlight) VALUES `...)
			args := make([]any, 0, n*5)
			for i, r := range rows[:n] {
				if i > 0 {
					q = append(q, ',')
				}
				b := len(args)
				q = fmt.Appendf(q, "($%d,$%d,$%d,$%d,$%d)", b+1, b+2, b+3, b+4, b+5)
				args = append(args, string(r.user), string(r.roomID), r.pos, r.thread, r.highlight)
			}
			q = append(q, ` ON CONFLICT (user_id, room_id, stream_pos) DO NOTHING`...)
			if _, err := tx.Exec(ctx, string(q), args...); err != nil {
				return fmt.Errorf("writing notifications: %w", err)
			}
			rows = rows[n:]
		}
		for d, pos := range p.deletes {
			var err error
			if d.thread == "*" {
				_, err = tx.Exec(ctx, `DELETE FROM sync_notifications WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3`, string(d.user), string(d.roomID), pos)
			} else {
				_, err = tx.Exec(ctx, `DELETE FROM sync_notifications WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3 AND thread_id = $4`, string(d.user), string(d.roomID), pos, d.thread)
			}
			if err != nil {
				return fmt.Errorf("clearing read notifications: %w", err)
			}
		}
		return c.s.writeDirectory(ctx, tx, p.dirUser, p.dirRoom)
	})
	logSyncErr("writing notification counts", err)
	p.rows, p.deletes = p.rows[:0], nil
	p.dirUser, p.dirRoom = nil, nil
}
