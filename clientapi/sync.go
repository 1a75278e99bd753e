package clientapi

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/roomserver"
	"hearth/storage"
)

// Syncer is the machinery behind /sync (Client-Server API, "Syncing") and the
// ephemeral streams it carries: it follows the room engine's event stream
// through a listener, keeps what incremental syncs need in memory (who is in
// which room, each room's recent timeline, typing, receipts, presence,
// notification counts), and wakes long-polling requests of exactly the users
// an event concerns. It is made by NewSyncer, handed to New in
// Options.Sync, and attached to the API by Register.
type Syncer struct {
	rs         *roomserver.Roomserver
	db         *storage.DB
	serverName string
	api        *API

	notifier  *syncstream.Notifier
	announced *syncstream.Announced
	timelines *syncstream.Timelines
	members   *syncstream.Memberships
	typing    *syncstream.Typing
	receipts  *receiptStore
	presence  *presenceStore
	counts    *notifCounter
	userData  *userDataCache
	filters   *filterCache
	lazy      *lazyMembers
	devices   atomic.Pointer[deviceStreamsBox]

	remoteInvites  atomic.Pointer[remoteInvitesBox]
	ephemeralHooks atomic.Pointer[EphemeralHooks]
	invitePos      atomic.Int64
	inviteMu       sync.Mutex
	inviteVers     map[id.UserID]int64
	// remoteLeavePos: the invite-stream position of each out-of-band leave
	// recorded since start (sync_remoteleaves.go), under inviteMu.
	remoteLeavePos map[id.EventID]int64

	// gapMu serialises the resolution of gaps in the event stream.
	gapMu sync.Mutex

	attached  atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
}

// SyncOptions tune the Syncer; the zero value is the default.
type SyncOptions struct {
	// TimelineCacheSize is how many recent events are kept per room (default 64).
	TimelineCacheSize int
	// PresenceIdle is how long after its last activity an online user becomes
	// unavailable (default 5 minutes); PresenceOffline how long after its last
	// sync a user who went online by syncing becomes offline (default 1 minute).
	PresenceIdle, PresenceOffline time.Duration
}

// NewSyncer prepares the /sync machinery over the room engine and database.
// It must be created before the server takes requests: it starts following
// the event stream from the current position.
func NewSyncer(ctx context.Context, db *storage.DB, rs *roomserver.Roomserver, opts SyncOptions) (*Syncer, error) {
	if opts.TimelineCacheSize <= 0 {
		opts.TimelineCacheSize = 64
	}
	if opts.PresenceIdle <= 0 {
		opts.PresenceIdle = 5 * time.Minute
	}
	if opts.PresenceOffline <= 0 {
		opts.PresenceOffline = time.Minute
	}
	start := rs.StreamPosition()
	s := &Syncer{
		rs:         rs,
		db:         db,
		serverName: rs.ServerName(),
		notifier:   syncstream.NewNotifier(),
		announced:  syncstream.NewAnnounced(start),
		timelines:  syncstream.NewTimelines(start, opts.TimelineCacheSize),
		members:    syncstream.NewMemberships(),
		userData:   newUserDataCache(),
		filters:    newFilterCache(4096),
		lazy:       newLazyMembers(4096),
		inviteVers: map[id.UserID]int64{},
		stop:       make(chan struct{}),
	}
	s.typing = syncstream.NewTyping(s.wakeRoom)
	var err error
	if s.receipts, err = newReceiptStore(ctx, db); err != nil {
		return nil, err
	}
	if s.presence, err = newPresenceStore(ctx, db, opts.PresenceIdle, opts.PresenceOffline); err != nil {
		return nil, err
	}
	s.counts = newNotifCounter(s)
	return s, nil
}

// attach binds the Syncer to its API and starts following the event stream.
func (s *Syncer) attach(a *API) {
	if !s.attached.CompareAndSwap(false, true) {
		return
	}
	s.api = a
	if a.opts.Keys != nil {
		s.SetDeviceStreams(a.opts.Keys)
	}
	s.rs.AddListener(s.onEvent)
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.counts.run() }()
	go func() { defer s.wg.Done(); s.presence.sweep(s) }()
	go func() { defer s.wg.Done(); s.populateUserDirectory() }()
}

// Close wakes every waiting /sync request so it answers at once, and stops
// the background work. Call it before shutting the HTTP server down.
func (s *Syncer) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		s.notifier.Close()
		s.typing.Close()
		s.counts.close()
		s.wg.Wait()
	})
}

// WakeUser wakes userID's waiting /sync requests: other modules that feed
// /sync (to-device messages, device list changes) call it when they have news.
func (s *Syncer) WakeUser(userID id.UserID) { s.notifier.Wake(userID) }

// Waiting reports whether a /sync request of userID is waiting for news.
func (s *Syncer) Waiting(userID id.UserID) bool { return s.notifier.Waiting(userID) }

// Settle waits up to d until the notification work queued so far (push rule
// evaluation and the counts it writes) is done, and reports whether it is.
func (s *Syncer) Settle(d time.Duration) bool {
	if !s.counts.waitFor(s.counts.queued(), d) {
		return false
	}
	s.counts.flushed(d)
	return true
}

// isLocal reports whether userID belongs to this server.
func (s *Syncer) isLocal(userID id.UserID) bool {
	return strings.HasSuffix(string(userID), ":"+s.serverName) && strings.HasPrefix(string(userID), "@")
}

// onEvent is the room engine's listener, called after each commit with the
// room's lock held: it updates the in-memory indexes, queues the notification
// work and wakes the users concerned, touching no storage.
func (s *Syncer) onEvent(o roomserver.OutputEvent) {
	if o.Event == nil || o.StreamPos == 0 || !s.announced.Claim(o.StreamPos) {
		return
	}
	s.ingest(o)
	s.announced.Done(o.StreamPos)
	if !o.SoftFailed {
		s.wakeFor(o)
	}
}

// ingest records an event in the indexes and queues its notification work.
func (s *Syncer) ingest(o roomserver.OutputEvent) {
	ev := o.Event
	roomID := ev.RoomID()
	if o.SoftFailed {
		return
	}
	s.timelines.Append(roomID, o.StreamPos, ev)
	if ev.Type() == "m.room.member" && ev.StateKey() != nil {
		target := id.UserID(*ev.StateKey())
		if s.isLocal(target) {
			s.members.Apply(target, syncstream.Membership{
				RoomID: roomID, Membership: gjson.GetBytes(ev.Content(), "membership").Str, Pos: o.StreamPos, EventID: ev.ID(),
			})
		}
	}
	s.counts.enqueueEvent(o)
}

// wakeFor wakes the syncing members of the event's room, and the target of a
// member event (an invitee, or someone who left).
func (s *Syncer) wakeFor(o roomserver.OutputEvent) {
	var buf [64]id.UserID
	users := s.members.JoinedUsers(o.Event.RoomID(), buf[:0])
	if o.Event.Type() == "m.room.member" && o.Event.StateKey() != nil {
		users = append(users, id.UserID(*o.Event.StateKey()))
	}
	s.notifier.WakeUsers(users)
}

// wakeRoom wakes the syncing members of a room (typing, public receipts).
func (s *Syncer) wakeRoom(roomID id.RoomID) {
	var buf [64]id.UserID
	s.notifier.WakeUsers(s.members.JoinedUsers(roomID, buf[:0]))
}

// eventPosition is the position of the event stream a sync may read up to:
// every event at or below it has reached the in-memory indexes. Positions the
// engine finished without announcing (rejected events, failed writes) are
// resolved against the store after a short wait.
func (s *Syncer) eventPosition(ctx context.Context) (int64, error) {
	cur := s.announced.Current()
	committed := s.rs.StreamPosition()
	if committed <= cur {
		return cur, nil
	}
	if cur = s.announced.WaitFor(committed, 20*time.Millisecond); cur >= committed {
		return cur, nil
	}
	s.gapMu.Lock()
	defer s.gapMu.Unlock()
	for {
		gaps := s.announced.Gaps(committed)
		if len(gaps) == 0 {
			return s.announced.Current(), nil
		}
		hi := gaps[len(gaps)-1]
		evs, err := s.rs.EventsAtPositions(ctx, gaps)
		if err != nil {
			return 0, fmt.Errorf("resolving event stream gaps: %w", err)
		}
		slices.SortFunc(evs, func(a, b *roomserver.StoredEvent) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
		for _, e := range evs {
			if !s.announced.Claim(e.StreamPos) {
				continue
			}
			// Committed but not announced (yet): handle it here; the late
			// announcement will be ignored.
			o := roomserver.OutputEvent{Event: e.Event, RoomNID: e.RoomNID, StreamPos: e.StreamPos, SoftFailed: e.SoftFailed, StateChanged: e.IsState()}
			s.ingest(o)
			s.announced.Done(e.StreamPos)
			if !o.SoftFailed {
				s.wakeFor(o)
			}
		}
		s.announced.Resolve(gaps)
		if hi >= committed {
			return s.announced.Current(), nil
		}
	}
}

// loadUser indexes a local user's rooms on their first sync.
func (s *Syncer) loadUser(ctx context.Context, userID id.UserID) error {
	if !s.members.BeginLoad(userID) {
		return nil
	}
	ms, err := s.rs.MembershipsOf(ctx, userID)
	if err != nil {
		s.members.AbortLoad(userID)
		return err
	}
	out := make([]syncstream.Membership, len(ms))
	for i, m := range ms {
		out[i] = syncstream.Membership{RoomID: m.RoomID, Membership: m.Membership, Pos: m.StreamPos, EventID: m.EventID}
	}
	s.members.FinishLoad(userID, out)
	return nil
}

// userDataCache remembers, per local user, their account-data stream
// position and ignored users, until an account-data write invalidates them.
type userDataCache struct {
	mu  sync.Mutex
	m   map[string]*userData
	gen map[string]uint64 // bumped by invalidate
}

type userData struct {
	pos     int64
	ignored map[id.UserID]struct{}
	// invites is the invite permission config (MSC4155; nil: none).
	invites  *inviteFilter
	loadedAt time.Time
}

// userDataTTL bounds how long cached account-data positions are trusted: writes
// that bypass AccountDataChanged are seen after at most this long.
const userDataTTL = 30 * time.Second

// maxUserDataEntries bounds the cache; beyond it arbitrary entries are dropped.
const maxUserDataEntries = 100_000

func newUserDataCache() *userDataCache {
	return &userDataCache{m: map[string]*userData{}, gen: map[string]uint64{}}
}

// get returns the user's cached data, loading it when unknown or stale.
func (c *userDataCache) get(ctx context.Context, a *API, localpart string) (*userData, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		d, g := c.m[localpart], c.gen[localpart]
		c.mu.Unlock()
		if d != nil && time.Since(d.loadedAt) < userDataTTL {
			return d, nil
		}
		pos, err := a.accounts.AccountDataPos(ctx, localpart)
		if err != nil {
			return nil, fmt.Errorf("reading account data position: %w", err)
		}
		ign, err := a.IgnoredUsers(ctx, localpart)
		if err != nil {
			return nil, fmt.Errorf("reading ignored users: %w", err)
		}
		inv, err := a.inviteFilterOf(ctx, localpart)
		if err != nil {
			return nil, err
		}
		d = &userData{pos: pos, ignored: ign, invites: inv, loadedAt: time.Now()}
		c.mu.Lock()
		if c.gen[localpart] != g && attempt < 3 {
			// A write raced with the load: load again.
			c.mu.Unlock()
			continue
		}
		if len(c.m) >= maxUserDataEntries {
			for k := range c.m {
				delete(c.m, k)
				delete(c.gen, k)
				if len(c.m) < maxUserDataEntries*9/10 {
					break
				}
			}
		}
		c.m[localpart] = d
		c.mu.Unlock()
		return d, nil
	}
}

// invalidate forgets a user's cached data after an account-data write.
func (c *userDataCache) invalidate(localpart string) {
	c.mu.Lock()
	delete(c.m, localpart)
	c.gen[localpart]++
	c.mu.Unlock()
}

// AccountDataChanged tells /sync that a local user's account data changed
// (the client API's account-data endpoints are watched already; other
// writers call it): their syncs are woken and see the change.
func (s *Syncer) AccountDataChanged(userID id.UserID) { s.accountDataChanged(userID) }

func (s *Syncer) accountDataChanged(userID id.UserID) {
	lp, _, _ := userID.Parse()
	s.userData.invalidate(lp)
	s.notifier.Wake(userID)
}

// syncNoRows reports whether err is sql.ErrNoRows.
func syncNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// logSyncErr logs a failure of background sync work.
func logSyncErr(what string, err error, args ...any) {
	if err != nil {
		slog.Error(what, append(args, "err", err)...)
	}
}
