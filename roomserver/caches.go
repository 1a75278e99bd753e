package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
	"hearth/storage"
)

// streamTracker hands out global stream positions and knows the highest position
// below which every allocated position has finished (committed or failed), so
// readers never skip an event that commits late.
type streamTracker struct {
	mu      sync.Mutex
	next    int64
	pending map[int64]struct{}
	cur     int64
}

func newStreamTracker(max int64) *streamTracker {
	return &streamTracker{next: max + 1, cur: max, pending: make(map[int64]struct{})}
}

func (s *streamTracker) allocate() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.next
	s.next++
	s.pending[p] = struct{}{}
	return p
}

// finish marks p done and advances the current position past every finished one.
func (s *streamTracker) finish(p int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, p)
	for s.cur+1 < s.next {
		if _, busy := s.pending[s.cur+1]; busy {
			break
		}
		s.cur++
	}
}

func (s *streamTracker) current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// StoredEvent is an event with what the store knows about it: its position in the
// stream, whether it is an outlier, rejected or soft-failed, and its state snapshots.
type StoredEvent struct {
	*events.Event
	NID        int64
	RoomNID    int64
	StreamPos  int64 // 0 for outliers
	Outlier    bool
	Rejected   bool
	SoftFailed bool
	// StateBefore/After are snapshot NIDs (0 for outliers and rejected events' after).
	StateBefore int64
	StateAfter  int64
	RedactedBy  id.EventID
}

// PDU returns the event's PDU with InternalMeta.Rejected set as stored.
func (e *StoredEvent) authPDU() *pdu.PDU {
	p := e.Event.PDU()
	if e.Rejected && !p.InternalMeta.Rejected {
		c := *p
		c.InternalMeta.Rejected = true
		return &c
	}
	return p
}

// eventCache caches stored events by NID and ID. Events are immutable once stored,
// except for their redaction, which updates the cache entry.
type eventCache struct {
	mu    sync.RWMutex
	max   int
	byNID map[int64]*StoredEvent
	byID  map[id.EventID]*StoredEvent
	// gen counts drops. A loader notes it before reading the store and puts
	// what it read only if no drop came in between: a row read just before a
	// redaction commits must not be cached after the drop that follows it.
	gen uint64
}

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, byNID: make(map[int64]*StoredEvent), byID: make(map[id.EventID]*StoredEvent)}
}

func (c *eventCache) getNID(nid int64) *StoredEvent {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byNID[nid]
}

func (c *eventCache) getID(eid id.EventID) *StoredEvent {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[eid]
}

// generation returns the drop count, for putIfGen.
func (c *eventCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// putIfGen is put for an event read from the store when the drop count was
// gen: it is not cached if an event was dropped since.
func (c *eventCache) putIfGen(e *StoredEvent, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.putLocked(e)
	}
}

func (c *eventCache) put(e *StoredEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(e)
}

func (c *eventCache) putLocked(e *StoredEvent) {
	if len(c.byNID) >= c.max {
		// Random eviction of a slice of the cache: cheap, and hot events come back.
		n := c.max / 8
		for k, v := range c.byNID {
			delete(c.byNID, k)
			delete(c.byID, v.ID())
			if n--; n <= 0 {
				break
			}
		}
	}
	c.byNID[e.NID] = e
	c.byID[e.ID()] = e
}

func (c *eventCache) drop(e *StoredEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.byNID, e.NID)
	delete(c.byID, e.ID())
}

// dropID drops the event with the given ID, if cached.
func (c *eventCache) dropID(eid id.EventID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if e := c.byID[eid]; e != nil {
		delete(c.byNID, e.NID)
		delete(c.byID, eid)
	}
}

const eventColumns = `e.event_nid, e.room_nid, e.event_id, r.room_version, e.json, COALESCE(e.stream_pos, 0), e.is_outlier, e.is_rejected, e.is_soft_failed, e.state_before_nid, e.state_after_nid, COALESCE(e.redacted_by, '')`

func scanEvent(rows interface{ Scan(...any) error }) (*StoredEvent, error) {
	var (
		se       StoredEvent
		eid, ver string
		raw      []byte
		redacted string
	)
	if err := rows.Scan(&se.NID, &se.RoomNID, &eid, &ver, &raw, &se.StreamPos, &se.Outlier, &se.Rejected, &se.SoftFailed, &se.StateBefore, &se.StateAfter, &redacted); err != nil {
		return nil, err
	}
	ev, err := events.FromStored(id.RoomVersion(ver), id.EventID(eid), raw)
	if err != nil {
		return nil, fmt.Errorf("stored event %s does not parse: %w", eid, err)
	}
	se.Event = ev
	se.RedactedBy = id.EventID(redacted)
	return &se, nil
}

// eventsByNID loads events by NID through the cache; missing NIDs are an error.
func (r *Roomserver) eventsByNID(ctx context.Context, q storage.Conn, nids []int64) ([]*StoredEvent, error) {
	out := make([]*StoredEvent, len(nids))
	var missing []any
	idx := map[int64][]int{}
	for i, n := range nids {
		if e := r.events.getNID(n); e != nil {
			out[i] = e
			continue
		}
		if _, dup := idx[n]; !dup {
			missing = append(missing, n)
		}
		idx[n] = append(idx[n], i)
	}
	err := r.loadEvents(ctx, q, "e.event_nid", missing, func(se *StoredEvent) {
		for _, i := range idx[se.NID] {
			out[i] = se
		}
	})
	if err != nil {
		return nil, err
	}
	for i, e := range out {
		if e == nil {
			return nil, fmt.Errorf("%w: nid %d", ErrEventNotFound, nids[i])
		}
	}
	return out, nil
}

// eventsByID loads the known events among ids (unknown ones are left out).
func (r *Roomserver) eventsByID(ctx context.Context, q storage.Conn, ids []id.EventID) ([]*StoredEvent, error) {
	out := make([]*StoredEvent, 0, len(ids))
	var missing []any
	for _, eid := range ids {
		if e := r.events.getID(eid); e != nil {
			out = append(out, e)
		} else {
			missing = append(missing, string(eid))
		}
	}
	err := r.loadEvents(ctx, q, "e.event_id", missing, func(se *StoredEvent) { out = append(out, se) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// loadEvents loads the events whose column is one of keys, in batches, caching each
// and handing it to fn.
func (r *Roomserver) loadEvents(ctx context.Context, q storage.Conn, column string, keys []any, fn func(*StoredEvent)) error {
	for len(keys) > 0 {
		batch := keys
		if len(batch) > 500 {
			batch = batch[:500]
		}
		keys = keys[len(batch):]
		gen := r.events.generation()
		rows, err := q.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE `+column+` IN (`+placeholders(len(batch), 1)+`)`, batch...)
		if err != nil {
			return fmt.Errorf("loading events: %w", err)
		}
		for rows.Next() {
			se, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return err
			}
			r.events.putIfGen(se, gen)
			fn(se)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("loading events: %w", err)
		}
	}
	return nil
}

// placeholders returns "$start, $start+1, …" for n parameters.
func placeholders(n, start int) string {
	b := make([]byte, 0, n*4)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "$%d", start+i)
	}
	return string(b)
}

// stateKeyInterner maps (type, state_key) pairs to small integers and back.
type stateKeyInterner struct {
	mu    sync.RWMutex
	toNID map[pdu.StateKey]int64
	toKey map[int64]pdu.StateKey
}

func newStateKeyInterner() *stateKeyInterner {
	return &stateKeyInterner{toNID: make(map[pdu.StateKey]int64), toKey: make(map[int64]pdu.StateKey)}
}

// lookup returns the NID of a pair without creating it (0 if unknown).
func (s *stateKeyInterner) lookup(ctx context.Context, db storage.Conn, k pdu.StateKey) (int64, error) {
	s.mu.RLock()
	nid, ok := s.toNID[k]
	s.mu.RUnlock()
	if ok {
		return nid, nil
	}
	err := db.QueryRow(ctx, `SELECT state_key_nid FROM state_keys WHERE event_type = $1 AND state_key = $2`, k.Type, k.StateKey).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking up state key: %w", err)
	}
	s.remember(k, nid)
	return nid, nil
}

// assign returns the NID of a pair, creating it inside tx if needed.
func (s *stateKeyInterner) assign(ctx context.Context, tx *storage.Tx, k pdu.StateKey) (int64, error) {
	if nid, err := s.lookup(ctx, tx, k); err != nil || nid != 0 {
		return nid, err
	}
	var nid int64
	err := tx.QueryRow(ctx, `INSERT INTO state_keys (event_type, state_key) VALUES ($1, $2) ON CONFLICT (event_type, state_key) DO UPDATE SET event_type = excluded.event_type RETURNING state_key_nid`, k.Type, k.StateKey).Scan(&nid)
	if err != nil {
		return 0, fmt.Errorf("interning state key: %w", err)
	}
	// Not remembered until the transaction commits: see rememberAfterCommit.
	return nid, nil
}

// ensure returns the NID of a pair, creating it if needed: inside q's transaction
// when q is one, else in its own (interning is idempotent, so a pair created for an
// event whose transaction later fails does no harm).
func (s *stateKeyInterner) ensure(ctx context.Context, q storage.Conn, k pdu.StateKey) (int64, error) {
	if tx, ok := q.(*storage.Tx); ok {
		return s.assign(ctx, tx, k)
	}
	db := q.(*storage.DB)
	var nid int64
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		nid, err = s.assign(ctx, tx, k)
		return err
	})
	if err == nil {
		s.remember(k, nid)
	}
	return nid, err
}

func (s *stateKeyInterner) remember(k pdu.StateKey, nid int64) {
	s.mu.Lock()
	s.toNID[k] = nid
	s.toKey[nid] = k
	s.mu.Unlock()
}

// keysOf returns the pairs of the given NIDs, loading unknown ones. Inside a write
// transaction pass remember=false: a pair inserted by it may yet be rolled back.
func (s *stateKeyInterner) keysOf(ctx context.Context, db storage.Conn, nids []int64, remember bool) (map[int64]pdu.StateKey, error) {
	out := make(map[int64]pdu.StateKey, len(nids))
	var missing []any
	s.mu.RLock()
	for _, n := range nids {
		if k, ok := s.toKey[n]; ok {
			out[n] = k
		} else {
			missing = append(missing, n)
		}
	}
	s.mu.RUnlock()
	for len(missing) > 0 {
		batch := missing
		if len(batch) > 500 {
			batch = batch[:500]
		}
		missing = missing[len(batch):]
		rows, err := db.Query(ctx, `SELECT state_key_nid, event_type, state_key FROM state_keys WHERE state_key_nid IN (`+placeholders(len(batch), 1)+`)`, batch...)
		if err != nil {
			return nil, fmt.Errorf("loading state keys: %w", err)
		}
		for rows.Next() {
			var n int64
			var k pdu.StateKey
			if err := rows.Scan(&n, &k.Type, &k.StateKey); err != nil {
				rows.Close()
				return nil, err
			}
			out[n] = k
			if remember {
				s.remember(k, n)
			}
		}
		rows.Close()
	}
	return out, nil
}
