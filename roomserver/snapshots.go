package roomserver

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"hearth/storage"
)

// stateMap is a full room state: interned (type, state_key) → event NID. Maps handed
// out by the snapshot cache are shared and must never be modified; copy first.
type stateMap map[int64]int64

func (m stateMap) clone(extra int) stateMap {
	c := make(stateMap, len(m)+extra)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// maxChainLen bounds how many deltas are stacked on a complete snapshot before a new
// complete one is written: the trade between rows written per state event and work
// to load a state.
const maxChainLen = 64

type snapshotMeta struct {
	chainLen int
	size     int
}

// snapshotCache keeps recently used full states in memory (LRU by use order).
type snapshotCache struct {
	mu    sync.Mutex
	max   int
	items map[int64]*snapshotEntry
	head  *snapshotEntry // most recent
	tail  *snapshotEntry
}

type snapshotEntry struct {
	nid        int64
	state      stateMap
	meta       snapshotMeta
	prev, next *snapshotEntry
}

func newSnapshotCache(max int) *snapshotCache {
	return &snapshotCache{max: max, items: make(map[int64]*snapshotEntry, max)}
}

func (c *snapshotCache) get(nid int64) (stateMap, snapshotMeta, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[nid]
	if !ok {
		return nil, snapshotMeta{}, false
	}
	c.moveFront(e)
	return e.state, e.meta, true
}

func (c *snapshotCache) put(nid int64, s stateMap, meta snapshotMeta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[nid]; ok {
		c.moveFront(e)
		return
	}
	e := &snapshotEntry{nid: nid, state: s, meta: meta}
	c.items[nid] = e
	c.pushFront(e)
	for len(c.items) > c.max && c.tail != nil {
		old := c.tail
		c.unlink(old)
		delete(c.items, old.nid)
	}
}

func (c *snapshotCache) pushFront(e *snapshotEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *snapshotCache) unlink(e *snapshotEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *snapshotCache) moveFront(e *snapshotEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}

// loadSnapshot returns the full state of a snapshot (nil map for snapshot 0).
func (r *Roomserver) loadSnapshot(ctx context.Context, q storage.Conn, nid int64) (stateMap, snapshotMeta, error) {
	if nid == 0 {
		return stateMap{}, snapshotMeta{}, nil
	}
	if s, meta, ok := r.snapshots.get(nid); ok {
		return s, meta, nil
	}
	// One recursive query walks the delta chain to its complete root and returns
	// every entry along it, level 0 being the snapshot itself.
	rows, err := q.Query(ctx, `
		WITH RECURSIVE chain(nid, parent, lvl) AS (
			SELECT snapshot_nid, parent_nid, 0 FROM state_snapshots WHERE snapshot_nid = $1
			UNION ALL
			SELECT s.snapshot_nid, s.parent_nid, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.parent
		)
		SELECT c.lvl, e.state_key_nid, e.event_nid FROM chain c JOIN state_snapshot_entries e ON e.snapshot_nid = c.nid`, nid)
	if err != nil {
		return nil, snapshotMeta{}, fmt.Errorf("loading state snapshot %d: %w", nid, err)
	}
	type entry struct {
		lvl      int
		key, val int64
	}
	var entries []entry
	maxLvl := 0
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.lvl, &e.key, &e.val); err != nil {
			rows.Close()
			return nil, snapshotMeta{}, fmt.Errorf("loading state snapshot %d: %w", nid, err)
		}
		if e.lvl > maxLvl {
			maxLvl = e.lvl
		}
		entries = append(entries, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, snapshotMeta{}, fmt.Errorf("loading state snapshot %d: %w", nid, err)
	}
	// Apply from the root (highest level) to the snapshot itself.
	sort.Slice(entries, func(i, j int) bool { return entries[i].lvl > entries[j].lvl })
	s := make(stateMap, len(entries))
	for _, e := range entries {
		if e.val == 0 {
			delete(s, e.key)
		} else {
			s[e.key] = e.val
		}
	}
	meta := snapshotMeta{chainLen: maxLvl, size: len(s)}
	r.snapshots.put(nid, s, meta)
	return s, meta, nil
}

// writeSnapshot stores state as a new snapshot: a delta on parent when the chain is
// short enough and the delta small, else a complete snapshot. It returns the new NID
// and its metadata; the caller caches it once the transaction commits.
func writeSnapshot(ctx context.Context, tx *storage.Tx, roomNID, parent int64, parentState stateMap, parentMeta snapshotMeta, state stateMap) (int64, snapshotMeta, error) {
	var delta [][2]int64
	complete := parent == 0 || parentMeta.chainLen+1 >= maxChainLen
	if !complete {
		for k, v := range state {
			if pv, ok := parentState[k]; !ok || pv != v {
				delta = append(delta, [2]int64{k, v})
			}
		}
		for k := range parentState {
			if _, ok := state[k]; !ok {
				delta = append(delta, [2]int64{k, 0})
			}
		}
		// A delta as big as half the state is better written whole.
		if len(delta) > 8 && len(delta)*2 > len(state) {
			complete = true
		}
	}
	var entries [][2]int64
	meta := snapshotMeta{size: len(state)}
	if complete {
		parent = 0
		entries = make([][2]int64, 0, len(state))
		for k, v := range state {
			entries = append(entries, [2]int64{k, v})
		}
	} else {
		entries = delta
		meta.chainLen = parentMeta.chainLen + 1
	}
	var nid int64
	if err := tx.QueryRow(ctx, `INSERT INTO state_snapshots (room_nid, parent_nid, chain_len, entry_count) VALUES ($1, $2, $3, $4) RETURNING snapshot_nid`,
		roomNID, parent, meta.chainLen, len(state)).Scan(&nid); err != nil {
		return 0, meta, fmt.Errorf("writing state snapshot: %w", err)
	}
	if err := insertPairs(ctx, tx, `INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid) VALUES `, nid, entries); err != nil {
		return 0, meta, fmt.Errorf("writing state snapshot entries: %w", err)
	}
	return nid, meta, nil
}

// insertPairs inserts (fixed, a, b) rows in multi-row statements.
func insertPairs(ctx context.Context, tx *storage.Tx, prefix string, fixed int64, rows [][2]int64) error {
	const batch = 300 // 900 parameters: under SQLite's 999 limit on old builds
	for len(rows) > 0 {
		n := len(rows)
		if n > batch {
			n = batch
		}
		q := make([]byte, 0, len(prefix)+n*16)
		q = append(q, prefix...)
		args := make([]any, 0, n*3)
		for i, row := range rows[:n] {
			if i > 0 {
				q = append(q, ',')
			}
			p := len(args)
			q = fmt.Appendf(q, "($%d,$%d,$%d)", p+1, p+2, p+3)
			args = append(args, fixed, row[0], row[1])
		}
		if _, err := tx.Exec(ctx, string(q), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}
