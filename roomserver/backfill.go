package roomserver

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
	"hearth/storage"
)

// Backfilled history (Server-Server API, "Backfilling and retrieving missing
// events"). Events fetched with /backfill are older than everything this server
// has in the room. They join the timeline as historical events: /messages pages
// through them in topological order, but they never change the forward
// extremities or the current state, and /sync never sees them.
//
// Topological order is (depth, stream position) and the stream position column is
// unique and NOT NULL for timeline events, so historical events take negative
// stream positions, allocated downward: below every live event (/sync reads
// positions above a non-negative token) and, within a depth, before the events
// this server already had.

// backfillMu serialises the downward allocation of historical stream positions
// (the column is unique across rooms).
var backfillMu sync.Mutex

// BackfillPoints returns up to limit events that the room's timeline cites as
// prev_events but that this server does not hold in the timeline (unknown, or
// only an outlier), oldest first: where /backfill continues. It is empty once
// the timeline reaches the room's create event.
func (r *Roomserver) BackfillPoints(ctx context.Context, roomID id.RoomID, limit int) ([]id.EventID, error) {
	nid, err := r.roomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := r.db.Query(ctx, `SELECT p.prev_event_id FROM event_prev_edges p JOIN events e ON e.event_nid = p.event_nid
		LEFT JOIN events x ON x.event_id = p.prev_event_id
		WHERE e.room_nid = $1 AND e.stream_pos IS NOT NULL AND NOT e.is_rejected AND (x.event_nid IS NULL OR x.stream_pos IS NULL)
		GROUP BY p.prev_event_id ORDER BY MIN(e.depth), p.prev_event_id LIMIT $2`, nid, limit)
	if err != nil {
		return nil, fmt.Errorf("finding backfill points of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []id.EventID
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("finding backfill points of %s: %w", roomID, err)
		}
		out = append(out, id.EventID(s))
	}
	return out, rows.Err()
}

// BackfillResult says what InputBackfilledEvents did.
type BackfillResult struct {
	// Stored are the events that joined the timeline (new ones, and outliers
	// such as a join's state events), rejected ones included.
	Stored []id.EventID
	// Rejected counts the stored events that failed the auth rules.
	Rejected int
	// MissingAuth lists auth events without which some events were skipped.
	MissingAuth []id.EventID
}

// InputBackfilledEvents stores events of roomID fetched with /backfill as
// historical timeline events. The caller has verified their signatures and
// content hashes (steps 1–3 of "Checks performed on receipt of a PDU"). Each
// event must pass the auth rules against its auth_events (step 4) and, when the
// state before it is known — all its prev_events are timeline events with state,
// as happens once the batch reaches back to the create event — against that state
// too (step 5); otherwise it is stored as rejected. Events whose state before is
// unknown keep no state snapshot (like Synapse's and Dendrite's backfill without
// /state_ids, history visibility then falls back to the default, "shared").
// Events already in the timeline are skipped; events known as outliers join the
// timeline. Events whose auth events are unknown are skipped and listed.
func (r *Roomserver) InputBackfilledEvents(ctx context.Context, roomID id.RoomID, evs []*events.Event) (*BackfillResult, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	backfillMu.Lock()
	defer backfillMu.Unlock()

	batch := make([]*events.Event, 0, len(evs))
	ids := make([]id.EventID, 0, len(evs))
	seen := make(map[id.EventID]struct{}, len(evs))
	for _, ev := range evs {
		if ev.RoomID() != roomID || ev.Version().ID != rm.version.ID {
			continue
		}
		if _, dup := seen[ev.ID()]; dup {
			continue
		}
		seen[ev.ID()] = struct{}{}
		batch = append(batch, ev)
		ids = append(ids, ev.ID())
	}
	// Oldest first, so that prev and auth events within the batch come first.
	slices.SortFunc(batch, func(a, b *events.Event) int {
		return cmp.Or(cmp.Compare(a.Depth(), b.Depth()), cmp.Compare(a.ID(), b.ID()))
	})
	knownList, err := r.eventsByID(ctx, r.db, ids)
	if err != nil {
		return nil, err
	}
	known := make(map[id.EventID]*StoredEvent, len(knownList))
	for _, k := range knownList {
		known[k.ID()] = k
	}
	todo := batch[:0]
	for _, ev := range batch {
		if k := known[ev.ID()]; k == nil || k.Outlier {
			todo = append(todo, ev)
		}
	}
	res := &BackfillResult{}
	if len(todo) == 0 {
		return res, nil
	}
	var low sql.NullInt64
	if err := r.db.QueryRow(ctx, `SELECT MIN(stream_pos) FROM events`).Scan(&low); err != nil {
		return nil, fmt.Errorf("allocating historical positions: %w", err)
	}
	top := min(low.Int64, 0) - 1 // the newest event of the batch; older ones below
	for i, ev := range todo {
		pos := top - int64(len(todo)-1-i)
		stored, rejected, err := r.inputHistorical(ctx, rm, ev, known[ev.ID()], pos, res)
		if err != nil {
			return res, fmt.Errorf("storing backfilled event %s: %w", ev.ID(), err)
		}
		if stored {
			res.Stored = append(res.Stored, ev.ID())
			if rejected {
				res.Rejected++
			}
		}
	}
	return res, nil
}

// inputHistorical checks and stores one backfilled event at stream position pos
// (see InputBackfilledEvents); outlier is its stored row when it is an outlier.
// The room's lock and backfillMu must be held.
func (r *Roomserver) inputHistorical(ctx context.Context, rm *room, ev *events.Event, outlier *StoredEvent, pos int64, res *BackfillResult) (stored, rejected bool, err error) {
	// Step 4: the auth events.
	authIDs := ev.AuthEventIDs()
	lookup := authIDs
	createID := id.EventID("")
	if rm.version.RoomIDIsCreateEventID && ev.Type() != "m.room.create" {
		createID = id.EventID("$" + string(ev.RoomID())[1:])
		lookup = append(slices.Clone(authIDs), createID)
	}
	authEvs, err := r.eventsByID(ctx, r.db, lookup)
	if err != nil {
		return false, false, err
	}
	byID := make(map[id.EventID]*StoredEvent, len(authEvs))
	for _, e := range authEvs {
		byID[e.ID()] = e
	}
	missing := false
	for _, a := range lookup {
		if _, ok := byID[a]; !ok {
			res.MissingAuth = append(res.MissingAuth, a)
			missing = true
		}
	}
	if missing {
		return false, false, nil
	}
	authNIDs := make([]int64, len(authIDs))
	for i, a := range authIDs {
		authNIDs[i] = byID[a].NID
	}
	if outlier != nil {
		rejected = outlier.Rejected
	} else {
		if err := r.ownAuthRejection(rm, ev, byID); err != nil {
			slog.Info("rejected backfilled event", "event_id", ev.ID(), "room_id", rm.id, "reason", err)
			rejected = true
		}
	}

	// Step 5, when the state before the event is known.
	prevs, err := r.eventsByID(ctx, r.db, ev.PrevEventIDs())
	if err != nil {
		return false, false, err
	}
	stateKnown := len(prevs) == len(ev.PrevEventIDs())
	for _, p := range prevs {
		stateKnown = stateKnown && !p.Outlier && p.StreamPos != 0 && p.StateAfter != 0
	}
	var (
		beforeNID, parentNID   int64
		before, parentState    stateMap
		beforeMeta, parentMeta snapshotMeta
		freshBefore            bool
	)
	if stateKnown && len(prevs) > 0 {
		states := make([]stateMap, 0, len(prevs))
		for _, p := range prevs {
			s, _, err := r.loadSnapshot(ctx, r.db, p.StateAfter)
			if err != nil {
				return false, false, err
			}
			states = append(states, s)
		}
		parentNID = prevs[0].StateAfter
		if parentState, parentMeta, err = r.loadSnapshot(ctx, r.db, parentNID); err != nil {
			return false, false, err
		}
		if len(prevs) == 1 {
			beforeNID, before, beforeMeta = parentNID, parentState, parentMeta
		} else {
			if before, err = r.resolveStates(ctx, r.db, rm, states, nil); err != nil {
				return false, false, err
			}
			freshBefore = true
		}
		if !rejected {
			if err := r.checkAgainst(ctx, rm, ev, before); err != nil {
				slog.Info("rejected backfilled event", "event_id", ev.ID(), "room_id", rm.id, "reason", err)
				rejected = true
			}
		}
	} else if stateKnown && ev.Type() == "m.room.create" {
		before = stateMap{}
	} else {
		stateKnown = false
	}

	var (
		se          *StoredEvent
		newKey      pdu.StateKey
		newKeyNID   int64
		snapsToKeep []cachedSnapshot
	)
	err = r.db.WithTx(ctx, func(tx *storage.Tx) error {
		newKeyNID, snapsToKeep = 0, snapsToKeep[:0]
		bNID, bMeta := beforeNID, beforeMeta
		if freshBefore {
			nid, meta, err := writeSnapshot(ctx, tx, rm.nid, parentNID, parentState, parentMeta, before)
			if err != nil {
				return err
			}
			bNID, bMeta = nid, meta
			snapsToKeep = append(snapsToKeep, cachedSnapshot{nid, before, meta})
		}
		var (
			eventNID   int64
			redactedBy id.EventID
		)
		if outlier != nil {
			eventNID = outlier.NID
			if _, err := tx.Exec(ctx, `UPDATE events SET stream_pos = $1, is_outlier = FALSE, is_rejected = $2, state_before_nid = $3, state_after_nid = $3
				WHERE event_nid = $4`, pos, rejected, bNID, eventNID); err != nil {
				return fmt.Errorf("moving outlier %s into the timeline: %w", ev.ID(), err)
			}
		} else {
			var stateKey any
			if sk := ev.StateKey(); sk != nil {
				stateKey = *sk
			}
			err := tx.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, event_type, state_key, sender, depth, origin_server_ts, stream_pos,
				is_outlier, is_rejected, is_soft_failed, state_before_nid, state_after_nid, json)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9, FALSE, $10, $10, $11) RETURNING event_nid`,
				string(ev.ID()), rm.nid, ev.Type(), stateKey, string(ev.Sender()), ev.Depth(), ev.OriginServerTS(), pos,
				rejected, bNID, ev.JSON()).Scan(&eventNID)
			if err != nil {
				return fmt.Errorf("inserting event %s: %w", ev.ID(), err)
			}
			if !rejected {
				if redactedBy, err = r.applyPendingRedactions(ctx, tx, rm, ev, eventNID); err != nil {
					return err
				}
			}
		}
		if len(authNIDs) > 0 {
			if err := insertEdges(ctx, tx, eventNID, authNIDs); err != nil {
				return err
			}
		}
		if p := ev.PrevEventIDs(); len(p) > 0 {
			if err := insertPrevEdges(ctx, tx, eventNID, p); err != nil {
				return err
			}
		}
		after := bNID
		if stateKnown && ev.IsState() && !rejected {
			k := pdu.StateKey{Type: ev.Type(), StateKey: *ev.StateKey()}
			knid, err := r.keys.lookup(ctx, tx, k)
			if err != nil {
				return err
			}
			if knid == 0 {
				if knid, err = r.keys.assign(ctx, tx, k); err != nil {
					return err
				}
				newKey, newKeyNID = k, knid
			}
			afterState := before.clone(1)
			afterState[knid] = eventNID
			var afterMeta snapshotMeta
			if after, afterMeta, err = writeSnapshot(ctx, tx, rm.nid, bNID, before, bMeta, afterState); err != nil {
				return err
			}
			snapsToKeep = append(snapsToKeep, cachedSnapshot{after, afterState, afterMeta})
			if _, err := tx.Exec(ctx, `UPDATE events SET state_after_nid = $1 WHERE event_nid = $2`, after, eventNID); err != nil {
				return fmt.Errorf("recording state after %s: %w", ev.ID(), err)
			}
		}
		se = &StoredEvent{Event: ev, NID: eventNID, RoomNID: rm.nid, StreamPos: pos, Rejected: rejected, StateBefore: bNID, StateAfter: after, RedactedBy: redactedBy}
		if outlier != nil {
			se.RedactedBy = outlier.RedactedBy
		}
		return nil
	})
	if err != nil {
		if storage.IsUniqueViolation(err) {
			err = errors.Join(err, errors.New("historical stream position taken (another process backfilling?)"))
		}
		return false, false, err
	}
	if newKeyNID != 0 {
		r.keys.remember(newKey, newKeyNID)
	}
	for _, c := range snapsToKeep {
		r.snapshots.put(c.nid, c.state, c.meta)
	}
	if outlier != nil {
		r.events.drop(outlier)
	}
	r.events.put(se)
	return true, rejected, nil
}
