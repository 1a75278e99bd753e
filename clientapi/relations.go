package clientapi

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/syncstream"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
)

// Relations between events (Client-Server API, "Forming relationships between
// events"): the index, bundled aggregations, /relations and /threads.
//
// The index (event_relations, room_threads) is filled from the room engine's
// event stream by an eventIndexer (eventindexer.go): the work an event brings is
// a relation, or a redaction that breaks one.

// relationIndexer keeps event_relations and room_threads up to date.
type relationIndexer = eventIndexer[relationRow]

// relationRow is one row of event_relations.
type relationRow struct {
	eventID, relatesTo      id.EventID
	roomID                  id.RoomID
	relType, evType, key    string
	sender                  id.UserID
	depth, stream, originTS int64
}

// newRelationIndexer starts the relations index.
func newRelationIndexer(db *storage.DB, rs *roomserver.Roomserver) *relationIndexer {
	return newEventIndexer(db, rs, indexKind[relationRow]{
		name:          "relations",
		positionTable: "relations_position",
		rowOf:         relationRowOf,
		eventID:       func(r *relationRow) id.EventID { return r.eventID },
		insert:        insertRelation,
		remove:        unlinkRelation,
	})
}

// relationRowOf returns the relation an event adds to the index, or nil.
func relationRowOf(ev *events.Event, pos int64) *relationRow {
	rel := relationOf(ev.Content())
	if rel != nil {
		rel.eventID, rel.roomID, rel.evType, rel.sender = ev.ID(), ev.RoomID(), ev.Type(), ev.Sender()
		rel.depth, rel.stream, rel.originTS = ev.Depth(), pos, ev.OriginServerTS()
	}
	return rel
}

// relationOf reads content."m.relates_to" with a rel_type and an event_id, or nil
// (replies without a rel_type are not relations for this index).
func relationOf(content []byte) *relationRow {
	if !bytes.Contains(content, []byte(`"m.relates_to"`)) {
		return nil
	}
	rel := gjson.GetBytes(content, `m\.relates_to`)
	rt, eid := rel.Get("rel_type"), rel.Get("event_id")
	if rt.Type != gjson.String || eid.Type != gjson.String || rt.Str == "" || len(rt.Str) > 255 ||
		len(eid.Str) < 2 || len(eid.Str) > 255 || eid.Str[0] != '$' {
		return nil
	}
	row := &relationRow{relatesTo: id.EventID(eid.Str), relType: rt.Str}
	if rt.Str == "m.annotation" {
		if k := rel.Get("key"); k.Type == gjson.String && len(k.Str) <= 1024 {
			row.key = k.Str
		}
	}
	return row
}

func insertRelation(ctx context.Context, tx *storage.Tx, r *relationRow) error {
	if _, err := tx.Exec(ctx, `INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, event_type, sender, aggregation_key, depth, stream_pos, origin_server_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING`,
		string(r.eventID), string(r.roomID), string(r.relatesTo), r.relType, r.evType, string(r.sender), r.key, r.depth, r.stream, r.originTS); err != nil {
		return fmt.Errorf("indexing relation of %s: %w", r.eventID, err)
	}
	if r.relType != "m.thread" {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO room_threads (room_id, root_event_id, latest_event_id, latest_depth, latest_stream) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id, root_event_id) DO UPDATE SET latest_event_id = excluded.latest_event_id, latest_depth = excluded.latest_depth, latest_stream = excluded.latest_stream
		WHERE excluded.latest_depth > room_threads.latest_depth OR (excluded.latest_depth = room_threads.latest_depth AND excluded.latest_stream > room_threads.latest_stream)`,
		string(r.roomID), string(r.relatesTo), string(r.eventID), r.depth, r.stream)
	if err != nil {
		return fmt.Errorf("indexing thread of %s: %w", r.relatesTo, err)
	}
	return nil
}

// unlinkRelation removes a redacted child's relation ("when a child event is
// redacted then the relationship is broken"), updating its thread.
func unlinkRelation(ctx context.Context, tx *storage.Tx, child id.EventID) error {
	var parent, relType, roomID string
	err := tx.QueryRow(ctx, `SELECT relates_to, rel_type, room_id FROM event_relations WHERE event_id = $1`, string(child)).Scan(&parent, &relType, &roomID)
	if isNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unlinking relation of %s: %w", child, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM event_relations WHERE event_id = $1`, string(child)); err != nil {
		return fmt.Errorf("unlinking relation of %s: %w", child, err)
	}
	if relType != "m.thread" {
		return nil
	}
	var latest string
	var depth, stream int64
	err = tx.QueryRow(ctx, `SELECT event_id, depth, stream_pos FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread'
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, parent).Scan(&latest, &depth, &stream)
	switch {
	case isNoRows(err):
		_, err = tx.Exec(ctx, `DELETE FROM room_threads WHERE room_id = $1 AND root_event_id = $2`, roomID, parent)
	case err == nil:
		_, err = tx.Exec(ctx, `UPDATE room_threads SET latest_event_id = $1, latest_depth = $2, latest_stream = $3 WHERE room_id = $4 AND root_event_id = $5`,
			latest, depth, stream, roomID, parent)
	}
	if err != nil {
		return fmt.Errorf("updating thread %s: %w", parent, err)
	}
	return nil
}

// childRow is a row of event_relations as readers use it.
type childRow struct {
	eventID, parent id.EventID
	roomID          id.RoomID
	relType, evType string
	sender          id.UserID
	pos             roomserver.TopoPos
	originTS        int64
}

const childColumns = `event_id, relates_to, room_id, rel_type, event_type, sender, depth, stream_pos, origin_server_ts`

func scanChildren(rows interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}) ([]childRow, error) {
	defer rows.Close()
	var out []childRow
	for rows.Next() {
		var c childRow
		var eid, parent, room, sender string
		if err := rows.Scan(&eid, &parent, &room, &c.relType, &c.evType, &sender, &c.pos.Depth, &c.pos.Stream, &c.originTS); err != nil {
			return nil, err
		}
		c.eventID, c.parent, c.roomID, c.sender = id.EventID(eid), id.EventID(parent), id.RoomID(room), id.UserID(sender)
		out = append(out, c)
	}
	return out, rows.Err()
}

// childrenOf returns the indexed children of the given parents with the given
// relation types (all types when relTypes is nil).
func (a *API) childrenOf(ctx context.Context, parents []id.EventID, relTypes []string) ([]childRow, error) {
	var out []childRow
	for len(parents) > 0 {
		batch := parents[:min(len(parents), 400)]
		parents = parents[len(batch):]
		args := make([]any, 0, len(batch)+len(relTypes))
		var q strings.Builder
		q.WriteString(`SELECT ` + childColumns + ` FROM event_relations WHERE relates_to IN (`)
		for i, p := range batch {
			if i > 0 {
				q.WriteByte(',')
			}
			args = append(args, string(p))
			q.WriteString("$" + strconv.Itoa(len(args)))
		}
		q.WriteByte(')')
		if relTypes != nil {
			q.WriteString(` AND rel_type IN (`)
			for i, t := range relTypes {
				if i > 0 {
					q.WriteByte(',')
				}
				args = append(args, t)
				q.WriteString("$" + strconv.Itoa(len(args)))
			}
			q.WriteByte(')')
		}
		rows, err := a.db.Query(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("loading relations: %w", err)
		}
		rs, err := scanChildren(rows)
		if err != nil {
			return nil, fmt.Errorf("loading relations: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// maxBundleDepth bounds bundled aggregations inside bundled aggregations (a
// thread's latest event carries its own edits).
const maxBundleDepth = 2

// bundledAggregations computes unsigned."m.relations" for the events that have
// aggregatable children (Client-Server API, "Aggregations of child events"):
// m.replace (the most recent valid edit), m.thread (latest event, count,
// current_user_participated) and m.reference (the referencing event IDs).
// m.annotation is not aggregated by servers. State events get none.
func (a *API) bundledAggregations(ctx context.Context, v viewer, evs []*roomserver.StoredEvent) (map[id.EventID][]byte, error) {
	return a.bundledAggregationsAt(ctx, v, evs, 1)
}

func (a *API) bundledAggregationsAt(ctx context.Context, v viewer, evs []*roomserver.StoredEvent, depth int) (map[id.EventID][]byte, error) {
	parents := make(map[id.EventID]*roomserver.StoredEvent, len(evs))
	ids := make([]id.EventID, 0, len(evs))
	for _, e := range evs {
		if !e.IsState() {
			parents[e.ID()] = e
			ids = append(ids, e.ID())
		}
	}
	if len(ids) == 0 || a.rooms == nil {
		return nil, nil
	}
	if err := a.rooms.relations.wait(ctx); err != nil {
		return nil, err
	}
	rows, err := a.childrenOf(ctx, ids, []string{"m.replace", "m.thread", "m.reference"})
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	ignored, err := a.IgnoredUsers(ctx, v.localpart)
	if err != nil {
		return nil, err
	}
	type agg struct {
		edits, thread, refs []childRow
	}
	byParent := map[id.EventID]*agg{}
	for _, c := range rows {
		p := parents[c.parent]
		if _, ign := ignored[c.sender]; ign || c.roomID != p.RoomID() {
			// Relations across rooms are ignored ("Forming relationships
			// between events").
			continue
		}
		g := byParent[c.parent]
		if g == nil {
			g = &agg{}
			byParent[c.parent] = g
		}
		switch c.relType {
		case "m.replace":
			// Edits of redacted events are not bundled; only the original
			// sender's edits of the same type can be valid.
			if p.RedactedBy == "" && c.sender == p.Sender() && c.evType == p.Type() {
				g.edits = append(g.edits, c)
			}
		case "m.thread":
			g.thread = append(g.thread, c)
		case "m.reference":
			g.refs = append(g.refs, c)
		}
	}
	// Candidates to load: every edit (most recent first) and the newest few
	// thread events of each thread, checked for validity and visibility.
	var want []id.EventID
	for _, g := range byParent {
		slices.SortFunc(g.edits, func(x, y childRow) int {
			if x.originTS != y.originTS {
				return int(y.originTS - x.originTS)
			}
			return strings.Compare(string(y.eventID), string(x.eventID))
		})
		slices.SortFunc(g.thread, func(x, y childRow) int {
			if topoBefore(x.pos, y.pos) {
				return 1
			}
			if topoBefore(y.pos, x.pos) {
				return -1
			}
			return 0
		})
		for _, c := range g.edits[:min(len(g.edits), 5)] {
			want = append(want, c.eventID)
		}
		for _, c := range g.thread[:min(len(g.thread), 5)] {
			want = append(want, c.eventID)
		}
	}
	loaded := map[id.EventID]*roomserver.StoredEvent{}
	if len(want) > 0 {
		evs, err := a.opts.Roomserver.Events(ctx, want)
		if err != nil {
			return nil, err
		}
		vis, err := a.visibility(ctx, v.userID, evs)
		if err != nil {
			return nil, err
		}
		for i, e := range evs {
			if vis[i].visible && e.RedactedBy == "" {
				loaded[e.ID()] = e
			}
		}
	}
	// The chosen children are written with their own aggregations.
	var chosen []*roomserver.StoredEvent
	edit := map[id.EventID]*roomserver.StoredEvent{}
	latest := map[id.EventID]*roomserver.StoredEvent{}
	for pid, g := range byParent {
		p := parents[pid]
		if !isReplacement(p.Content()) {
			for _, c := range g.edits {
				if e := loaded[c.eventID]; e != nil && validReplacement(p, e) {
					edit[pid] = e
					chosen = append(chosen, e)
					break
				}
			}
		}
		for _, c := range g.thread {
			if e := loaded[c.eventID]; e != nil {
				latest[pid] = e
				chosen = append(chosen, e)
				break
			}
		}
	}
	written := map[id.EventID][]byte{}
	if len(chosen) > 0 {
		f := EventFormat{Bundle: depth < maxBundleDepth}
		w, err := a.newEventWriterAt(ctx, v, chosen, f, depth+1)
		if err != nil {
			return nil, err
		}
		for _, e := range chosen {
			written[e.ID()] = w.append(nil, e)
		}
	}
	out := make(map[id.EventID][]byte, len(byParent))
	for pid, g := range byParent {
		var b []byte
		add := func(key string) {
			if b == nil {
				b = append(b, '{')
			} else {
				b = append(b, ',')
			}
			b = appendJSONString(b, key)
			b = append(b, ':')
		}
		if e := edit[pid]; e != nil {
			add("m.replace")
			b = append(b, written[e.ID()]...)
		}
		if len(g.thread) > 0 {
			participated := parents[pid].Sender() == v.userID
			for _, c := range g.thread {
				if c.sender == v.userID {
					participated = true
					break
				}
			}
			add("m.thread")
			b = append(b, '{')
			if e := latest[pid]; e != nil {
				b = append(b, `"latest_event":`...)
				b = append(b, written[e.ID()]...)
				b = append(b, ',')
			}
			b = append(b, `"count":`...)
			b = strconv.AppendInt(b, int64(len(g.thread)), 10)
			b = append(b, `,"current_user_participated":`...)
			b = strconv.AppendBool(b, participated)
			b = append(b, '}')
		}
		if len(g.refs) > 0 {
			add("m.reference")
			b = append(b, `{"chunk":[`...)
			for i, c := range g.refs {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"event_id":`...)
				b = appendJSONString(b, string(c.eventID))
				b = append(b, '}')
			}
			b = append(b, `]}`...)
		}
		if b != nil {
			out[pid] = append(b, '}')
		}
	}
	return out, nil
}

// isReplacement reports whether content makes its event an m.replace edit.
func isReplacement(content []byte) bool {
	rel := relationOf(content)
	return rel != nil && rel.relType == "m.replace"
}

// validReplacement applies the spec's validity rules for an edit of original
// (Client-Server API, "Validity of replacement events"): same room, sender and
// type, neither a state event, the original not itself an edit, and the edit
// carrying m.new_content (an encrypted edit carries it inside its ciphertext).
func validReplacement(original, edit *roomserver.StoredEvent) bool {
	if original.RoomID() != edit.RoomID() || original.Sender() != edit.Sender() || original.Type() != edit.Type() ||
		original.IsState() || edit.IsState() || isReplacement(original.Content()) {
		return false
	}
	if edit.Type() == "m.room.encrypted" {
		return true
	}
	return gjson.GetBytes(edit.Content(), `m\.new_content`).IsObject()
}

// checkRelation enforces what the server must refuse at send time: a second
// identical annotation by the same user (M_DUPLICATE_ANNOTATION) and a thread
// rooted at an event that itself has a relation (400 M_UNKNOWN; Client-Server API,
// "Validation of m.thread relationships").
func (a *API) checkRelation(ctx context.Context, roomID id.RoomID, sender id.UserID, evType string, content []byte) error {
	rel := relationOf(content)
	if rel == nil {
		return nil
	}
	switch rel.relType {
	case "m.annotation":
		if err := a.rooms.relations.wait(ctx); err != nil {
			return err
		}
		var one int
		err := a.db.QueryRow(ctx, `SELECT 1 FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.annotation' AND sender = $2
			AND event_type = $3 AND aggregation_key = $4 LIMIT 1`, string(rel.relatesTo), string(sender), evType, rel.key).Scan(&one)
		if err == nil {
			return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_DUPLICATE_ANNOTATION", Message: "You already sent this annotation for that event"}
		}
		if !isNoRows(err) {
			return internalErr(err)
		}
	case "m.thread":
		parent, err := a.opts.Roomserver.Event(ctx, rel.relatesTo)
		if errors.Is(err, roomserver.ErrEventNotFound) {
			return nil
		}
		if err != nil {
			return internalErr(err)
		}
		if parent.RoomID() == roomID && relationOf(parent.Content()) != nil {
			return httputil.Unknown("Cannot start a thread from an event that has a relation itself")
		}
	}
	return nil
}

// Pagination limits of /relations and /threads.
const (
	defaultRelationsLimit = 10
	maxRelationsLimit     = 100
	// maxRecursedRelations caps what a recursive /relations collects.
	maxRecursedRelations = 2000
	// relationRecursionDepth is how many levels a recursive /relations follows
	// (the spec asks for at least 3).
	relationRecursionDepth = 3
)

// GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
func (a *API) getRelations(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	parent, relType, evType, err := a.relationsPath(ctx, roomID, mux.Vars(r)["rest"])
	if err != nil {
		return err
	}
	parentID := parent.ID()
	q := r.URL.Query()
	dir, err := dirParam(q.Get("dir"), roomserver.Backward)
	if err != nil {
		return err
	}
	limit, err := limitParam(q.Get("limit"), defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return err
	}
	recurse := false
	recurseGiven := q.Has("recurse")
	if recurseGiven {
		switch q.Get("recurse") {
		case "true":
			recurse = true
		case "false":
		default:
			return httputil.InvalidParam("recurse must be true or false")
		}
	}
	if vis, err := a.visibility(ctx, d.UserID, []*roomserver.StoredEvent{parent}); err != nil {
		return internalErr(err)
	} else if !vis[0].visible {
		return httputil.NotFound("Unknown event")
	}
	from, fromGiven, err := a.parseGap(ctx, roomID, q.Get("from"))
	if err != nil {
		return err
	}
	to, toGiven, err := a.parseGap(ctx, roomID, q.Get("to"))
	if err != nil {
		return err
	}
	if err := a.rooms.relations.wait(ctx); err != nil {
		return err
	}
	// Collect the children: one level, or up to relationRecursionDepth levels
	// through children that pass the filters themselves.
	var all []childRow
	level := []id.EventID{parentID}
	depth := 0
	seen := map[id.EventID]bool{parentID: true}
	for len(level) > 0 && len(all) < maxRecursedRelations {
		depth++
		rows, err := a.childrenOf(ctx, level, nil)
		if err != nil {
			return internalErr(err)
		}
		level = level[:0]
		for _, c := range rows {
			if seen[c.eventID] || c.roomID != roomID || (relType != "" && c.relType != relType) || (evType != "" && c.evType != evType) {
				continue
			}
			seen[c.eventID] = true
			all = append(all, c)
			level = append(level, c.eventID)
		}
		if !recurse || depth >= relationRecursionDepth {
			break
		}
	}
	slices.SortFunc(all, func(x, y childRow) int {
		if topoBefore(x.pos, y.pos) {
			return -1
		}
		if topoBefore(y.pos, x.pos) {
			return 1
		}
		return 0
	})
	// Page through them like /messages: backward from the gap "from" (the newest
	// first), or forward.
	var page []childRow
	if dir == roomserver.Backward {
		for i := len(all) - 1; i >= 0; i-- {
			p := all[i].pos
			if fromGiven && !topoBefore(p, from) {
				continue
			}
			if toGiven && topoBefore(p, to) {
				break
			}
			page = append(page, all[i])
		}
	} else {
		for _, c := range all {
			if fromGiven && topoBefore(c.pos, from) {
				continue
			}
			if toGiven && !topoBefore(c.pos, to) {
				break
			}
			page = append(page, c)
		}
	}
	more := len(page) > limit
	page = page[:min(len(page), limit)]
	ids := make([]id.EventID, len(page))
	for i, c := range page {
		ids[i] = c.eventID
	}
	evs, err := a.eventsInOrder(ctx, ids)
	if err != nil {
		return internalErr(err)
	}
	evs, err = a.visibleToDevice(ctx, d, evs)
	if err != nil {
		return internalErr(err)
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), evs, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	b := append(make([]byte, 0, 256+len(evs)*512), `{"chunk":`...)
	b = wr.appendArray(b, evs)
	if more && len(page) > 0 {
		last := page[len(page)-1].pos
		if dir == roomserver.Forward {
			last.Stream++
		}
		b = append(b, `,"next_batch":`...)
		b = appendJSONString(b, gapToken(last))
	}
	if fromGiven {
		b = append(b, `,"prev_batch":`...)
		b = appendJSONString(b, q.Get("from"))
	}
	if recurseGiven {
		b = append(b, `,"recursion_depth":`...)
		b = strconv.AppendInt(b, int64(depth), 10)
	}
	writeJSON(w, append(b, '}'))
	return nil
}

// relationsPath splits "{eventId}[/{relType}[/{eventType}]]": the event ID is the
// shortest prefix (up to a '/') naming an event of the room.
func (a *API) relationsPath(ctx context.Context, roomID id.RoomID, rest string) (*roomserver.StoredEvent, string, string, error) {
	for i := 0; i <= len(rest); i++ {
		if i < len(rest) && rest[i] != '/' {
			continue
		}
		eid := rest[:i]
		if len(eid) < 2 || len(eid) > 255 || eid[0] != '$' {
			continue
		}
		e, err := a.opts.Roomserver.Event(ctx, id.EventID(eid))
		if errors.Is(err, roomserver.ErrEventNotFound) {
			continue
		}
		if err != nil {
			return nil, "", "", internalErr(err)
		}
		if e.RoomID() != roomID {
			break
		}
		var relType, evType string
		if i < len(rest) {
			relType, evType, _ = strings.Cut(rest[i+1:], "/")
			if relType == "" {
				return nil, "", "", httputil.Unrecognized("Unrecognized request")
			}
		}
		return e, relType, evType, nil
	}
	return nil, "", "", httputil.NotFound("Unknown event")
}

// GET /v1/rooms/{roomId}/threads
func (a *API) getThreads(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	include := q.Get("include")
	if include != "" && include != "all" && include != "participated" {
		return httputil.InvalidParam("include must be all or participated")
	}
	limit, err := limitParam(q.Get("limit"), defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return err
	}
	from, fromGiven, err := a.parseGap(ctx, roomID, q.Get("from"))
	if err != nil {
		return err
	}
	if _, err := a.historyAccess(ctx, roomID, d.UserID); err != nil {
		return err
	}
	if err := a.rooms.relations.wait(ctx); err != nil {
		return err
	}
	var out []*roomserver.StoredEvent
	more := false
	// Threads are read in batches, newest activity first, and filtered
	// (participation, visibility) until the page is full or they run out.
scan:
	for scanned := 0; scanned < 10*maxRelationsLimit; {
		args := []any{string(roomID), limit + 1}
		q := `SELECT root_event_id, latest_depth, latest_stream FROM room_threads WHERE room_id = $1`
		if fromGiven {
			q += ` AND (latest_depth < $3 OR (latest_depth = $3 AND latest_stream < $4))`
			args = append(args, from.Depth, from.Stream)
		}
		q += ` ORDER BY latest_depth DESC, latest_stream DESC LIMIT $2`
		batch, err := a.threadRows(ctx, q, args...)
		if err != nil {
			return internalErr(err)
		}
		exhausted := len(batch) <= limit
		batch = batch[:min(len(batch), limit)]
		if len(batch) == 0 {
			break
		}
		scanned += len(batch)
		ids := make([]id.EventID, len(batch))
		for i, t := range batch {
			ids[i] = t.root
		}
		keep, err := a.threadRoots(ctx, d, roomID, ids, include == "participated")
		if err != nil {
			return internalErr(err)
		}
		for i, t := range batch {
			from, fromGiven = t.latest, true
			if root := keep[t.root]; root != nil {
				out = append(out, root)
				if len(out) == limit {
					more = i < len(batch)-1 || !exhausted
					break scan
				}
			}
		}
		if exhausted {
			break
		}
		more = true
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), out, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	b := append(make([]byte, 0, 256+len(out)*1024), `{"chunk":`...)
	b = wr.appendArray(b, out)
	if more {
		// The threads after the last one looked at.
		b = append(b, `,"next_batch":`...)
		b = appendJSONString(b, gapToken(from))
	}
	writeJSON(w, append(b, '}'))
	return nil
}

// threadRow is a row of room_threads.
type threadRow struct {
	root   id.EventID
	latest roomserver.TopoPos
}

func (a *API) threadRows(ctx context.Context, q string, args ...any) ([]threadRow, error) {
	rows, err := a.db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []threadRow
	for rows.Next() {
		var t threadRow
		var root string
		if err := rows.Scan(&root, &t.latest.Depth, &t.latest.Stream); err != nil {
			return nil, err
		}
		t.root = id.EventID(root)
		out = append(out, t)
	}
	return out, rows.Err()
}

// threadRoots loads the thread roots among ids the requester may see (and, with
// participated, whose threads they took part in).
func (a *API) threadRoots(ctx context.Context, d *Device, roomID id.RoomID, ids []id.EventID, participated bool) (map[id.EventID]*roomserver.StoredEvent, error) {
	roots, err := a.eventsInOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	roots = slices.DeleteFunc(roots, func(r *roomserver.StoredEvent) bool { return r.RoomID() != roomID })
	if participated {
		took, err := a.threadsParticipated(ctx, ids, d.UserID)
		if err != nil {
			return nil, err
		}
		roots = slices.DeleteFunc(roots, func(r *roomserver.StoredEvent) bool { return r.Sender() != d.UserID && !took[r.ID()] })
	}
	if roots, err = a.visibleToDevice(ctx, d, roots); err != nil {
		return nil, err
	}
	out := make(map[id.EventID]*roomserver.StoredEvent, len(roots))
	for _, r := range roots {
		out[r.ID()] = r
	}
	return out, nil
}

// threadsParticipated reports which of the thread roots have a thread event by
// userID.
func (a *API) threadsParticipated(ctx context.Context, roots []id.EventID, userID id.UserID) (map[id.EventID]bool, error) {
	rows, err := a.childrenOf(ctx, roots, []string{"m.thread"})
	if err != nil {
		return nil, err
	}
	out := map[id.EventID]bool{}
	for _, c := range rows {
		if c.sender == userID {
			out[c.parent] = true
		}
	}
	return out, nil
}

// eventsInOrder loads the known events among ids in the order of ids.
func (a *API) eventsInOrder(ctx context.Context, ids []id.EventID) ([]*roomserver.StoredEvent, error) {
	evs, err := a.opts.Roomserver.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[id.EventID]*roomserver.StoredEvent, len(evs))
	for _, e := range evs {
		byID[e.ID()] = e
	}
	out := make([]*roomserver.StoredEvent, 0, len(ids))
	for _, x := range ids {
		if e := byID[x]; e != nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// gapToken is the pagination token of the gap just before position p.
func gapToken(p roomserver.TopoPos) string {
	return syncstream.TopoToken{Depth: p.Depth, Stream: p.Stream}.String()
}

func isNoRows(err error) bool { return err != nil && errors.Is(err, sql.ErrNoRows) }
