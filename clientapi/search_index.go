package clientapi

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
)

// The search index (event_search, migration 0061) holds the searchable text
// of room events (Client-Server API, "Server Side Search", room_events: the
// keys content.body of m.room.message, content.name of m.room.name, and
// content.topic of m.room.topic with the text/plain body of its m.topic).
//
// It is filled like the relations index: the room engine's after-commit
// listener only queues events that bring work (a document, or a redaction
// that removes one), a worker goroutine started on demand writes the queue in
// batches, readers wait for the queue to drain up to the moment they started,
// and the worker records how far it has read the stream so that a restart
// re-reads the events it may not have written.
//
// On Postgres the text is stored as an English tsvector with a GIN index; on
// SQLite in an FTS4 table whose docid is the event's stream position.

// searchIndexer keeps event_search up to date.
type searchIndexer struct {
	db *storage.DB
	rs *roomserver.Roomserver

	mu       sync.Mutex
	queue    []searchItem
	enqueued uint64
	flushed  uint64
	running  bool
	progress chan struct{} // closed (and replaced) whenever flushed advances
	idle     int           // events seen since the position was last queued
	ready    chan struct{} // closed when the start-up catch-up is done
}

// searchItem is one unit of indexing work: a document to add, a redacted
// event to remove, or neither (a marker that only moves the position).
type searchItem struct {
	doc     *searchDoc
	redacts id.EventID
}

// searchDoc is one row of the index.
type searchDoc struct {
	pos     int64
	eventID id.EventID
	roomID  id.RoomID
	sender  id.UserID
	key     string
	text    string
}

// Search keys (the spec's enum for room_events.keys).
const (
	searchKeyBody  = "content.body"
	searchKeyName  = "content.name"
	searchKeyTopic = "content.topic"
)

func newSearchIndexer(db *storage.DB, rs *roomserver.Roomserver) *searchIndexer {
	x := &searchIndexer{db: db, rs: rs, progress: make(chan struct{}), ready: make(chan struct{})}
	rs.AddListener(x.onEvent)
	go x.catchUp()
	return x
}

// onEvent is the room engine listener: it runs with the room locked, so it only
// extracts the text and queues it.
func (x *searchIndexer) onEvent(o roomserver.OutputEvent) {
	if o.SoftFailed {
		return
	}
	item, ok := searchItemOf(o.Event, o.StreamPos)
	x.mu.Lock()
	defer x.mu.Unlock()
	if !ok {
		if x.idle++; x.idle < idlePositionEvery {
			return
		}
	}
	x.idle = 0
	x.queue = append(x.queue, item)
	x.enqueued++
	if !x.running {
		x.running = true
		go x.run()
	}
}

// searchItemOf finds the indexing work an event brings, if any.
func searchItemOf(ev *events.Event, pos int64) (searchItem, bool) {
	if ev.Type() == "m.room.redaction" {
		if t := ev.Redacts(); t != "" {
			return searchItem{redacts: t}, true
		}
		return searchItem{}, false
	}
	key, text := searchTextOf(ev)
	if text == "" {
		return searchItem{}, false
	}
	return searchItem{doc: &searchDoc{pos: pos, eventID: ev.ID(), roomID: ev.RoomID(), sender: ev.Sender(), key: key, text: text}}, true
}

// searchTextOf returns the searchable key and text of an event ("" when it has
// none). The text is valid UTF-8 without NUL bytes, which Postgres refuses.
func searchTextOf(ev *events.Event) (key, text string) {
	c := ev.Content()
	switch ev.Type() {
	case "m.room.message":
		if ev.IsState() {
			return "", ""
		}
		key, text = searchKeyBody, gjson.GetBytes(c, "body").Str
	case "m.room.name":
		if ev.StateKey() == nil || *ev.StateKey() != "" {
			return "", ""
		}
		key, text = searchKeyName, gjson.GetBytes(c, "name").Str
	case "m.room.topic":
		if ev.StateKey() == nil || *ev.StateKey() != "" {
			return "", ""
		}
		// content.topic "as well as the body of the text/plain
		// representation in content['m.topic']" (Client-Server API,
		// "room_events").
		key, text = searchKeyTopic, gjson.GetBytes(c, "topic").Str
		for _, r := range gjson.GetBytes(c, `m\.topic.m\.text`).Array() {
			mt := r.Get("mimetype").Str
			if (mt == "" || mt == "text/plain") && r.Get("body").Type == gjson.String {
				if b := r.Get("body").Str; b != "" && b != text {
					text = strings.TrimSpace(text + "\n" + b)
				}
				break
			}
		}
	default:
		return "", ""
	}
	if strings.IndexByte(text, 0) >= 0 {
		text = strings.ReplaceAll(text, "\x00", " ")
	}
	return key, strings.ToValidUTF8(text, "\uFFFD")
}

// run drains the queue, then exits.
func (x *searchIndexer) run() {
	for {
		x.mu.Lock()
		items := x.queue
		x.queue = nil
		if len(items) == 0 {
			x.running = false
			x.mu.Unlock()
			return
		}
		x.mu.Unlock()
		pos := x.rs.StreamPosition()
		if err := x.apply(context.Background(), items, pos); err != nil {
			// The recorded position did not move: the next start re-reads these.
			slog.Error("indexing events for search", "err", err)
		}
		x.mu.Lock()
		x.flushed += uint64(len(items))
		close(x.progress)
		x.progress = make(chan struct{})
		x.mu.Unlock()
	}
}

// catchUp indexes the events committed since the recorded position.
func (x *searchIndexer) catchUp() {
	defer close(x.ready)
	ctx := context.Background()
	var from int64
	err := x.db.QueryRow(ctx, `SELECT stream_pos FROM search_position WHERE id = 1`).Scan(&from)
	if err != nil && !isNoRows(err) {
		slog.Error("reading search index position", "err", err)
		return
	}
	from = max(0, from-catchUpMargin)
	to := x.rs.StreamPosition()
	start, indexed := time.Now(), 0
	for from < to {
		evs, err := x.rs.EventsSince(ctx, from, to, 500)
		if err != nil {
			slog.Error("catching up the search index", "err", err)
			return
		}
		if len(evs) == 0 {
			break
		}
		var items []searchItem
		for _, e := range evs {
			if e.SoftFailed {
				continue
			}
			if it, ok := searchItemOf(e.Event, e.StreamPos); ok {
				items = append(items, it)
			}
		}
		from = evs[len(evs)-1].StreamPos
		if err := x.apply(ctx, items, from); err != nil {
			slog.Error("catching up the search index", "err", err)
			return
		}
		indexed += len(items)
	}
	if indexed > 0 {
		slog.Info("search index caught up", "events", indexed, "took", time.Since(start).Round(time.Millisecond))
	}
}

// apply writes a batch of work and records pos as read, in one transaction.
// Should the batch fail, its items are written one by one, so one bad event
// costs only its own entry.
func (x *searchIndexer) apply(ctx context.Context, items []searchItem, pos int64) error {
	err := x.applyBatch(ctx, items, pos)
	if err == nil || len(items) < 2 {
		return err
	}
	var failed int
	for _, it := range items {
		if err := x.applyBatch(ctx, []searchItem{it}, pos); err != nil {
			failed++
			slog.Warn("indexing an event for search", "event_id", it.eventID(), "err", err)
		}
	}
	if failed == len(items) {
		return err
	}
	return nil
}

func (it searchItem) eventID() id.EventID {
	if it.doc != nil {
		return it.doc.eventID
	}
	return it.redacts
}

func (x *searchIndexer) applyBatch(ctx context.Context, items []searchItem, pos int64) error {
	// Events redacted before they are indexed are not indexed; redactions
	// remove their target only if they applied (the room engine marked it).
	var ids []id.EventID
	for _, it := range items {
		if it.doc != nil {
			ids = append(ids, it.doc.eventID)
		} else if it.redacts != "" {
			ids = append(ids, it.redacts)
		}
	}
	redacted := map[id.EventID]bool{}
	if len(ids) > 0 {
		evs, err := x.rs.Events(ctx, ids)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.RedactedBy != "" {
				redacted[e.ID()] = true
			}
		}
	}
	pg := x.db.Dialect == storage.Postgres
	return x.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, it := range items {
			switch {
			case it.doc != nil && !redacted[it.doc.eventID]:
				if err := insertSearchDoc(ctx, tx, pg, it.doc); err != nil {
					return err
				}
			case it.redacts != "" && redacted[it.redacts]:
				if err := deleteSearchDoc(ctx, tx, pg, it.redacts); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO search_position (id, stream_pos) VALUES (1, $1)
			ON CONFLICT (id) DO UPDATE SET stream_pos = excluded.stream_pos WHERE excluded.stream_pos > search_position.stream_pos`, pos)
		return err
	})
}

func insertSearchDoc(ctx context.Context, tx *storage.Tx, pg bool, d *searchDoc) error {
	if pg {
		if _, err := tx.Exec(ctx, `INSERT INTO event_search (stream_pos, event_id, room_id, sender, vector, search_key)
			VALUES ($1, $2, $3, $4, to_tsvector('english', $5), $6) ON CONFLICT DO NOTHING`,
			d.pos, string(d.eventID), string(d.roomID), string(d.sender), d.text, d.key); err != nil {
			return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
		}
		return nil
	}
	res, err := tx.Exec(ctx, `INSERT INTO event_search (stream_pos, event_id, room_id, sender, search_key)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		d.pos, string(d.eventID), string(d.roomID), string(d.sender), d.key)
	if err != nil {
		return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // already indexed (a re-read after a restart)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO event_search_text (docid, value) VALUES ($1, $2)`, d.pos, d.text); err != nil {
		return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
	}
	return nil
}

// deleteSearchDoc removes a redacted event from the index.
func deleteSearchDoc(ctx context.Context, tx *storage.Tx, pg bool, eventID id.EventID) error {
	if !pg {
		if _, err := tx.Exec(ctx, `DELETE FROM event_search_text WHERE docid IN (SELECT stream_pos FROM event_search WHERE event_id = $1)`, string(eventID)); err != nil {
			return fmt.Errorf("removing %s from the search index: %w", eventID, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM event_search WHERE event_id = $1`, string(eventID)); err != nil {
		return fmt.Errorf("removing %s from the search index: %w", eventID, err)
	}
	return nil
}

// searchWaitLimit bounds how long a search waits for the index to catch up.
const searchWaitLimit = 5 * time.Second

// wait returns once everything queued before the call is written (or after
// searchWaitLimit, serving what is there).
func (x *searchIndexer) wait(ctx context.Context) error {
	timer := time.NewTimer(searchWaitLimit)
	defer timer.Stop()
	select {
	case <-x.ready:
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
	x.mu.Lock()
	target := x.enqueued
	x.mu.Unlock()
	for {
		x.mu.Lock()
		done, ch := x.flushed >= target, x.progress
		x.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		}
	}
}
