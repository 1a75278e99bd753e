package clientapi

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
)

// The indexes of room events the client API keeps beside the room engine's
// event store (relations, search) share one machinery, eventIndexer.
//
// An index is filled from the room engine's event stream by a listener, so
// events from other servers (InputRemoteEvent) are indexed exactly like local
// ones. The listener runs with the room locked, so it only extracts the row an
// event adds (or the target of a redaction) and queues it; a worker goroutine,
// started when there is work and gone when there is none, writes the queue in
// batches. Readers that must see their own writes (a client that sends an edit
// and asks for the relations) wait for the queue to drain up to the moment they
// started. The worker records how far it has read the stream, and on start the
// indexer re-reads the stream from there, so nothing is lost to a crash.

// catchUpMargin is how far before the recorded position the start-up catch-up
// begins: events committed but not yet announced when the position was recorded
// are at most a few per room being written at that moment.
const catchUpMargin = 1000

// idlePositionEvery is how many events that bring no work pass before the
// position is recorded anyway, bounding the start-up catch-up.
const idlePositionEvery = 2000

// indexWaitLimit bounds how long a reader waits for an index to catch up.
const indexWaitLimit = 5 * time.Second

// indexKind is what one index adds to eventIndexer: its rows and how they are
// written.
type indexKind[R any] struct {
	// name names the index in log lines.
	name string
	// positionTable holds one row (id 1) with the stream position the index
	// has read up to.
	positionTable string
	// rowOf returns the row an event adds to the index, or nil. It runs with
	// the room locked: no I/O.
	rowOf func(ev *events.Event, pos int64) *R
	// eventID is the event a row was made from.
	eventID func(row *R) id.EventID
	// insert adds a row (a row already there, from a re-read after a restart,
	// is left as it is).
	insert func(ctx context.Context, tx *storage.Tx, row *R) error
	// remove takes out what a redacted event added, if anything.
	remove func(ctx context.Context, tx *storage.Tx, redacted id.EventID) error
	// retryEach makes a failed batch be written again item by item, so that
	// one bad event costs only its own entry.
	retryEach bool
}

// indexItem is one unit of indexing work: a row to add, the target of a
// redaction (whose row goes if the redaction applied), or neither (a marker
// that only moves the recorded position).
type indexItem[R any] struct {
	row     *R
	redacts id.EventID
}

// eventIndexer keeps one index of room events up to date (see the top of this
// file).
type eventIndexer[R any] struct {
	db   *storage.DB
	rs   *roomserver.Roomserver
	kind indexKind[R]
	// readPosition and writePosition read and advance kind.positionTable.
	readPosition, writePosition string

	mu       sync.Mutex
	queue    []indexItem[R]
	enqueued uint64
	flushed  uint64
	running  bool
	progress chan struct{} // closed (and replaced) whenever flushed advances
	idle     int           // events seen since the position was last queued
	ready    chan struct{} // closed when the start-up catch-up is done
}

// newEventIndexer starts an index: it listens to the room engine's events and
// catches up, in the background, on those committed since its recorded
// position.
func newEventIndexer[R any](db *storage.DB, rs *roomserver.Roomserver, kind indexKind[R]) *eventIndexer[R] {
	x := &eventIndexer[R]{
		db: db, rs: rs, kind: kind,
		readPosition: `SELECT stream_pos FROM ` + kind.positionTable + ` WHERE id = 1`,
		writePosition: `INSERT INTO ` + kind.positionTable + ` (id, stream_pos) VALUES (1, $1)
			ON CONFLICT (id) DO UPDATE SET stream_pos = excluded.stream_pos WHERE excluded.stream_pos > ` + kind.positionTable + `.stream_pos`,
		progress: make(chan struct{}), ready: make(chan struct{}),
	}
	rs.AddListener(x.onEvent)
	go x.catchUp()
	return x
}

// onEvent is the room engine listener: it runs with the room locked, so it only
// finds the work an event brings and queues it.
func (x *eventIndexer[R]) onEvent(o roomserver.OutputEvent) {
	if o.SoftFailed {
		return
	}
	item, ok := x.itemOf(o.Event, o.StreamPos)
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

// itemOf finds the indexing work an event brings, if any.
func (x *eventIndexer[R]) itemOf(ev *events.Event, pos int64) (indexItem[R], bool) {
	if ev.Type() == "m.room.redaction" {
		if t := ev.Redacts(); t != "" {
			return indexItem[R]{redacts: t}, true
		}
		return indexItem[R]{}, false
	}
	if row := x.kind.rowOf(ev, pos); row != nil {
		return indexItem[R]{row: row}, true
	}
	return indexItem[R]{}, false
}

// eventIDOf is the event an item is about: the one its row was made from, or
// the target of its redaction ("" for a marker).
func (x *eventIndexer[R]) eventIDOf(it indexItem[R]) id.EventID {
	if it.row != nil {
		return x.kind.eventID(it.row)
	}
	return it.redacts
}

// run drains the queue, then exits.
func (x *eventIndexer[R]) run() {
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
			slog.Error("writing an event index", "index", x.kind.name, "err", err)
		}
		x.mu.Lock()
		x.flushed += uint64(len(items))
		close(x.progress)
		x.progress = make(chan struct{})
		x.mu.Unlock()
	}
}

// catchUp indexes the events committed since the recorded position.
func (x *eventIndexer[R]) catchUp() {
	defer close(x.ready)
	ctx := context.Background()
	var from int64
	err := x.db.QueryRow(ctx, x.readPosition).Scan(&from)
	if err != nil && !isNoRows(err) {
		slog.Error("reading an event index position", "index", x.kind.name, "err", err)
		return
	}
	from = max(0, from-catchUpMargin)
	to := x.rs.StreamPosition()
	start, indexed := time.Now(), 0
	for from < to {
		evs, err := x.rs.EventsSince(ctx, from, to, 500)
		if err != nil {
			slog.Error("catching up an event index", "index", x.kind.name, "err", err)
			return
		}
		if len(evs) == 0 {
			break
		}
		var items []indexItem[R]
		for _, e := range evs {
			if e.SoftFailed {
				continue
			}
			if it, ok := x.itemOf(e.Event, e.StreamPos); ok {
				items = append(items, it)
			}
		}
		from = evs[len(evs)-1].StreamPos
		if err := x.apply(ctx, items, from); err != nil {
			slog.Error("catching up an event index", "index", x.kind.name, "err", err)
			return
		}
		indexed += len(items)
	}
	if indexed > 0 {
		slog.Info("event index caught up", "index", x.kind.name, "events", indexed, "took", time.Since(start).Round(time.Millisecond))
	}
}

// apply writes a batch of work and records pos as read, in one transaction.
// With kind.retryEach, a failed batch is written again item by item.
func (x *eventIndexer[R]) apply(ctx context.Context, items []indexItem[R], pos int64) error {
	err := x.applyBatch(ctx, items, pos)
	if err == nil || !x.kind.retryEach || len(items) < 2 {
		return err
	}
	var failed int
	for i := range items {
		if err := x.applyBatch(ctx, items[i:i+1], pos); err != nil {
			failed++
			slog.Warn("indexing an event", "index", x.kind.name, "event_id", x.eventIDOf(items[i]), "err", err)
		}
	}
	if failed == len(items) {
		return err
	}
	return nil
}

func (x *eventIndexer[R]) applyBatch(ctx context.Context, items []indexItem[R], pos int64) error {
	// Events redacted before they are indexed are not indexed; redactions
	// remove what their target added only if they applied (the room engine
	// marked the target).
	var ids []id.EventID
	for _, it := range items {
		if eid := x.eventIDOf(it); eid != "" {
			ids = append(ids, eid)
		}
	}
	redacted := map[id.EventID]bool{}
	if len(ids) > 0 {
		evs, err := x.rs.Events(ctx, ids)
		if err != nil {
			return fmt.Errorf("checking redactions: %w", err)
		}
		for _, e := range evs {
			if e.RedactedBy != "" {
				redacted[e.ID()] = true
			}
		}
	}
	return x.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, it := range items {
			switch {
			case it.row != nil && !redacted[x.kind.eventID(it.row)]:
				if err := x.kind.insert(ctx, tx, it.row); err != nil {
					return err
				}
			case it.redacts != "" && redacted[it.redacts]:
				if err := x.kind.remove(ctx, tx, it.redacts); err != nil {
					return err
				}
			}
		}
		if _, err := tx.Exec(ctx, x.writePosition, pos); err != nil {
			return fmt.Errorf("recording the %s index position: %w", x.kind.name, err)
		}
		return nil
	})
}

// wait returns once everything queued before the call is written (or after
// indexWaitLimit, serving what is there).
func (x *eventIndexer[R]) wait(ctx context.Context) error {
	timer := time.NewTimer(indexWaitLimit)
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
