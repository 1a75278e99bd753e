package clientapi

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/storage"
)

// Receipt types (Client-Server API, "Receipts").
const (
	receiptRead        = "m.read"
	receiptReadPrivate = "m.read.private"
)

// storedReceipt is one user's receipt of one type (and thread) in a room.
type storedReceipt struct {
	user     id.UserID
	typ      string
	thread   string // "" for an unthreaded receipt
	eventID  id.EventID
	eventPos int64
	ts       int64
	pos      int64
}

type storedReceiptKey struct {
	typ    string
	user   id.UserID
	thread string
}

// receiptStore keeps every room's current receipts: in the receipts table,
// and in memory for the rooms /sync has looked at, with a stream position per
// change so incremental syncs send only what changed.
type receiptStore struct {
	db      *storage.DB
	tracker *syncstream.Tracker
	start   int64

	mu sync.RWMutex
	// latest: the newest receipt position of each room changed since start.
	latest map[id.RoomID]int64
	rooms  map[id.RoomID]map[storedReceiptKey]*storedReceipt
	// loading serialises loads of one room.
	loading sync.Mutex
}

func newReceiptStore(ctx context.Context, db *storage.DB) (*receiptStore, error) {
	var max *int64
	if err := db.QueryRow(ctx, `SELECT MAX(stream_pos) FROM receipts`).Scan(&max); err != nil {
		return nil, fmt.Errorf("reading receipt stream position: %w", err)
	}
	start := int64(0)
	if max != nil {
		start = *max
	}
	return &receiptStore{db: db, tracker: syncstream.NewTracker(start), start: start,
		latest: map[id.RoomID]int64{}, rooms: map[id.RoomID]map[storedReceiptKey]*storedReceipt{}}, nil
}

// current is the receipt stream position a sync may read up to.
func (s *receiptStore) current() int64 { return s.tracker.Current() }

// room returns a room's receipts, loading them from the store once.
func (s *receiptStore) room(ctx context.Context, roomID id.RoomID) (map[storedReceiptKey]*storedReceipt, error) {
	s.mu.RLock()
	m, ok := s.rooms[roomID]
	s.mu.RUnlock()
	if ok {
		return m, nil
	}
	s.loading.Lock()
	defer s.loading.Unlock()
	s.mu.RLock()
	m, ok = s.rooms[roomID]
	s.mu.RUnlock()
	if ok {
		return m, nil
	}
	rows, err := s.db.Query(ctx, `SELECT receipt_type, user_id, thread_id, event_id, event_pos, ts, stream_pos FROM receipts WHERE room_id = $1`, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("loading receipts of %s: %w", roomID, err)
	}
	defer rows.Close()
	m = map[storedReceiptKey]*storedReceipt{}
	for rows.Next() {
		r := &storedReceipt{}
		var user, eid string
		if err := rows.Scan(&r.typ, &user, &r.thread, &eid, &r.eventPos, &r.ts, &r.pos); err != nil {
			return nil, fmt.Errorf("loading receipts of %s: %w", roomID, err)
		}
		r.user, r.eventID = id.UserID(user), id.EventID(eid)
		m[storedReceiptKey{r.typ, r.user, r.thread}] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("loading receipts of %s: %w", roomID, err)
	}
	s.mu.Lock()
	// Receipts written while loading are already in the map installed by put.
	if cur, ok := s.rooms[roomID]; ok {
		m = cur
	} else {
		s.rooms[roomID] = m
	}
	s.mu.Unlock()
	return m, nil
}

// put stores a receipt unless the user's receipt of that type and thread
// already points at a later event (receipts only move forward). before runs
// after the write commits and before the receipt becomes visible to /sync.
// It reports whether the receipt was stored.
func (s *receiptStore) put(ctx context.Context, roomID id.RoomID, r *storedReceipt, before func()) (bool, error) {
	m, err := s.room(ctx, roomID)
	if err != nil {
		return false, err
	}
	k := storedReceiptKey{r.typ, r.user, r.thread}
	s.mu.RLock()
	old := m[k]
	s.mu.RUnlock()
	if old != nil && old.eventPos >= r.eventPos {
		return false, nil
	}
	r.pos = s.tracker.Allocate()
	defer s.tracker.Finish(r.pos)
	_, err = s.db.Exec(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id,
			event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos
		WHERE receipts.event_pos < excluded.event_pos`,
		string(roomID), r.typ, string(r.user), r.thread, string(r.eventID), r.eventPos, r.ts, r.pos)
	if err != nil {
		return false, fmt.Errorf("storing receipt: %w", err)
	}
	if before != nil {
		before()
	}
	s.mu.Lock()
	if cur := m[k]; cur == nil || cur.eventPos < r.eventPos {
		m[k] = r
	}
	if s.latest[roomID] < r.pos {
		s.latest[roomID] = r.pos
	}
	s.mu.Unlock()
	return true, nil
}

// changed reports whether a room's receipts changed in (since, upTo].
func (s *receiptStore) changed(ctx context.Context, roomID id.RoomID, since, upTo int64) (bool, error) {
	if since >= upTo {
		return false, nil
	}
	if since >= s.start {
		s.mu.RLock()
		l := s.latest[roomID]
		s.mu.RUnlock()
		return l > since, nil
	}
	m, err := s.room(ctx, roomID)
	if err != nil {
		return false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range m {
		if r.pos > since && r.pos <= upTo {
			return true, nil
		}
	}
	return false, nil
}

// event returns the m.receipt event of a room's receipts changed in
// (since, upTo] as viewer may see them (private receipts only their own;
// none of ignored users), or nil when there are none.
func (s *receiptStore) event(ctx context.Context, roomID id.RoomID, since, upTo int64, viewer id.UserID, ignored map[id.UserID]struct{}) ([]byte, error) {
	m, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var list []*storedReceipt
	s.mu.RLock()
	for _, r := range m {
		if r.pos <= since || r.pos > upTo {
			continue
		}
		if r.typ == receiptReadPrivate && r.user != viewer {
			continue
		}
		if _, ign := ignored[r.user]; ign {
			continue
		}
		list = append(list, r)
	}
	s.mu.RUnlock()
	if len(list) == 0 {
		return nil, nil
	}
	// content: event ID → receipt type → user ID → {ts, thread_id}.
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if a.eventID != b.eventID {
			return a.eventID < b.eventID
		}
		if a.typ != b.typ {
			return a.typ < b.typ
		}
		if a.user != b.user {
			return a.user < b.user
		}
		return a.thread < b.thread
	})
	b := make([]byte, 0, 64+len(list)*96)
	b = append(b, `{"type":"m.receipt","content":{`...)
	for i := 0; i < len(list); {
		if i > 0 {
			b = append(b, ',')
		}
		ev := list[i].eventID
		b = appendJSONString(b, string(ev))
		b = append(b, `:{`...)
		first := true
		for i < len(list) && list[i].eventID == ev {
			typ := list[i].typ
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, typ)
			b = append(b, `:{`...)
			var lastUser id.UserID
			for i < len(list) && list[i].eventID == ev && list[i].typ == typ {
				r := list[i]
				i++
				// A user may hold receipts of one type on one event in several
				// threads; the object is keyed by user, so the first is kept.
				if r.user == lastUser {
					continue
				}
				if lastUser != "" {
					b = append(b, ',')
				}
				lastUser = r.user
				b = appendJSONString(b, string(r.user))
				b = fmt.Appendf(b, `:{"ts":%d`, r.ts)
				if r.thread != "" {
					b = append(b, `,"thread_id":`...)
					b = appendJSONString(b, r.thread)
				}
				b = append(b, '}')
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	b = append(b, `}}`...)
	return b, nil
}
