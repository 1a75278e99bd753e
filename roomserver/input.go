package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/auth"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
	"hearth/storage"
)

// maxPrevEvents caps how many forward extremities a new local event references.
const maxPrevEvents = 10

// maxDepth is the largest depth the PDU format allows (2^53 - 1).
const maxDepth = 1<<53 - 1

// SendRequest is a new local event for an existing room.
type SendRequest struct {
	Type     string
	StateKey *string
	Sender   id.UserID
	// Content is a JSON object.
	Content []byte
	// Redacts is the target of an m.room.redaction.
	Redacts id.EventID
}

type originTSKey struct{}

// WithOriginServerTS returns a context under which the local events SendEvent
// builds carry origin_server_ts ts (unix ms, > 0) instead of the current time:
// an application service's timestamp massaging (Application Service API,
// "Timestamp massaging"). The event's place in the DAG is unchanged.
func WithOriginServerTS(ctx context.Context, ts int64) context.Context {
	return context.WithValue(ctx, originTSKey{}, ts)
}

// originServerTS is the timestamp set by WithOriginServerTS, or 0 (now).
func originServerTS(ctx context.Context) int64 {
	ts, _ := ctx.Value(originTSKey{}).(int64)
	return ts
}

// CreateRoom creates a room of the given version whose m.room.create event is sent
// by sender with createContent (room_version and, before v11, creator are filled
// in). The rest of the initial state is sent with SendEvent.
func (r *Roomserver) CreateRoom(ctx context.Context, version id.RoomVersion, sender id.UserID, createContent []byte) (id.RoomID, *OutputEvent, error) {
	v, ok := roomversion.Lookup(version)
	if !ok {
		return "", nil, fmt.Errorf("%w: %q", ErrUnsupportedRoomVersion, version)
	}
	content, err := createEventContent(v, sender, createContent)
	if err != nil {
		return "", nil, err
	}
	empty := ""
	proto := events.ProtoEvent{Type: "m.room.create", StateKey: &empty, Sender: sender, Content: content, Depth: 1}
	if !v.RoomIDIsCreateEventID {
		proto.RoomID = id.RoomID("!" + randomString(18) + ":" + r.serverName)
	}
	ev, err := events.Build(v.ID, proto, r.serverName, id.KeyID(r.key.ID), r.key.PrivateKey)
	if err != nil {
		return "", nil, &BadEventError{Err: err}
	}
	roomID := ev.RoomID()
	if err := auth.Allowed(v.ID, ev.PDU(), nil, nil, r.getKey); err != nil {
		return "", nil, &NotAllowedError{Err: err}
	}
	if _, err := r.db.Exec(ctx, `INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)`,
		string(roomID), string(v.ID), time.Now().UnixMilli()); err != nil {
		return "", nil, fmt.Errorf("creating room %s: %w", roomID, err)
	}
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	defer rm.mu.Unlock()
	out, err := r.persist(ctx, rm, &persistInput{ev: ev, stateBeforeNID: 0, stateBefore: stateMap{}})
	if err != nil {
		return "", nil, err
	}
	return roomID, out, nil
}

// ErrUnsupportedRoomVersion is returned for room versions Hearth does not know.
var ErrUnsupportedRoomVersion = errors.New("unsupported room version")

// BadEventError wraps a malformed event (M_BAD_JSON / M_TOO_LARGE for callers).
type BadEventError struct{ Err error }

func (e *BadEventError) Error() string { return "bad event: " + e.Err.Error() }
func (e *BadEventError) Unwrap() error { return e.Err }

func createEventContent(v *roomversion.Version, sender id.UserID, raw []byte) ([]byte, error) {
	content := map[string]any{}
	if len(raw) > 0 {
		if err := jsonUnmarshal(raw, &content); err != nil {
			return nil, &BadEventError{Err: fmt.Errorf("creation content: %w", err)}
		}
	}
	content["room_version"] = string(v.ID)
	if v.CreatorInContent {
		content["creator"] = string(sender)
	} else {
		delete(content, "creator")
	}
	return jsonMarshal(content)
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	s := base64.RawURLEncoding.EncodeToString(b)
	// Room IDs' opaque part: keep to letters so it is valid in every grammar.
	out := make([]byte, 0, n)
	for i := 0; i < len(s) && len(out) < n; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			out = append(out, c)
		}
	}
	for len(out) < n {
		out = append(out, 'x')
	}
	return string(out)
}

// SendEvent builds, signs, authorises and persists a local event in roomID, after
// the room's forward extremities. The state it is checked against is the room's
// current state.
func (r *Roomserver) SendEvent(ctx context.Context, roomID id.RoomID, req SendRequest) (*OutputEvent, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	ev, authNIDs, err := r.buildLocal(ctx, rm, req)
	if err != nil {
		return nil, err
	}
	if err := r.checkAgainst(ctx, rm, ev, rm.current); err != nil {
		return nil, &NotAllowedError{Err: err}
	}
	return r.persist(ctx, rm, &persistInput{
		ev: ev, authNIDs: authNIDs,
		stateBeforeNID: rm.currentNID, stateBefore: rm.current, stateBeforeMeta: rm.currentMeta,
	})
}

// BuildEvent builds and signs a local event against the room's current state without
// persisting it (make_join/make_leave templates and tests use it).
func (r *Roomserver) BuildEvent(ctx context.Context, roomID id.RoomID, req SendRequest) (*events.Event, error) {
	rm, err := r.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer rm.mu.Unlock()
	ev, _, err := r.buildLocal(ctx, rm, req)
	return ev, err
}

func (r *Roomserver) buildLocal(ctx context.Context, rm *room, req SendRequest) (*events.Event, []int64, error) {
	proto, authNIDs, err := r.protoLocal(ctx, rm, req)
	if err != nil {
		return nil, nil, err
	}
	proto.OriginServerTS = originServerTS(ctx)
	ev, err := events.Build(rm.version.ID, *proto, r.serverName, id.KeyID(r.key.ID), r.key.PrivateKey)
	if err != nil {
		return nil, nil, &BadEventError{Err: err}
	}
	return ev, authNIDs, nil
}

// protoLocal makes a new event in rm as of its current state, unsigned:
// prev_events (the newest extremities, capped), depth, auth_events (the auth
// events selection of the Server-Server API over the current state) and, for
// room v1/v2, the reference hashes of both. It returns the auth events' NIDs.
func (r *Roomserver) protoLocal(ctx context.Context, rm *room, req SendRequest) (*events.ProtoEvent, []int64, error) {
	if len(rm.extremities) == 0 {
		return nil, nil, fmt.Errorf("room %s has no forward extremities (not joined here)", rm.id)
	}
	exts := slices.Clone(rm.extremities)
	sort.Slice(exts, func(i, j int) bool {
		return exts[i].depth > exts[j].depth || exts[i].depth == exts[j].depth && exts[i].id < exts[j].id
	})
	if len(exts) > maxPrevEvents {
		exts = exts[:maxPrevEvents]
	}
	proto := &events.ProtoEvent{Type: req.Type, StateKey: req.StateKey, Sender: req.Sender, RoomID: rm.id, Content: req.Content}
	if req.Redacts != "" {
		redacts := req.Redacts
		proto.Redacts = &redacts
	}
	prevNIDs := make([]int64, 0, len(exts))
	for _, x := range exts {
		proto.PrevEvents = append(proto.PrevEvents, x.id)
		prevNIDs = append(prevNIDs, x.nid)
		proto.Depth = max(proto.Depth, x.depth+1)
	}
	proto.Depth = min(proto.Depth, maxDepth)
	selection := (&pdu.PDU{Type: req.Type, StateKey: req.StateKey, Sender: req.Sender, Content: req.Content}).AuthEventSelection(rm.version.SpecVersion())
	var authNIDs []int64
	for _, k := range selection {
		knid, err := r.keys.lookup(ctx, r.db, k)
		if err != nil {
			return nil, nil, err
		}
		if enid, ok := rm.current[knid]; ok && knid != 0 {
			authNIDs = append(authNIDs, enid)
		}
	}
	authEvs, err := r.eventsByNID(ctx, r.db, authNIDs)
	if err != nil {
		return nil, nil, err
	}
	for _, ae := range authEvs {
		proto.AuthEvents = append(proto.AuthEvents, ae.ID())
	}
	if rm.version.EventIDFormat == roomversion.EventIDOriginBased {
		proto.ReferenceHashes = map[id.EventID][32]byte{}
		prevs, err := r.eventsByNID(ctx, r.db, prevNIDs)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range append(prevs, authEvs...) {
			proto.ReferenceHashes[e.ID()] = e.ReferenceHash()
		}
	}
	return proto, authNIDs, nil
}

// checkAgainst applies the auth rules to ev with state as the room state.
func (r *Roomserver) checkAgainst(ctx context.Context, rm *room, ev *events.Event, state stateMap) error {
	p := ev.PDU()
	if p.Type == "m.room.create" {
		return auth.Allowed(rm.version.ID, p, nil, nil, r.getKey)
	}
	authEvents, create, err := r.selectFrom(ctx, rm, p, state)
	if err != nil {
		return err
	}
	return auth.Allowed(rm.version.ID, p, create, authEvents, r.getKey)
}

// selectFrom returns the auth events for p chosen from state, and the create event.
func (r *Roomserver) selectFrom(ctx context.Context, rm *room, p *pdu.PDU, state stateMap) ([]*pdu.PDU, *pdu.PDU, error) {
	keys := p.AuthEventSelection(rm.version.SpecVersion())
	keys.Add("m.room.create", "")
	nids := make([]int64, 0, len(keys))
	for _, k := range keys {
		knid, err := r.keys.lookup(ctx, r.db, k)
		if err != nil {
			return nil, nil, err
		}
		if enid, ok := state[knid]; ok && knid != 0 {
			nids = append(nids, enid)
		}
	}
	evs, err := r.eventsByNID(ctx, r.db, nids)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*pdu.PDU, 0, len(evs))
	var create *pdu.PDU
	for _, e := range evs {
		ap := e.authPDU()
		if e.Type() == "m.room.create" {
			create = ap
			if rm.version.RoomIDIsCreateEventID {
				continue // looked up by room ID, never an auth event
			}
		}
		out = append(out, ap)
	}
	return out, create, nil
}

// getKey is handed to the auth rules for third-party-invite and restricted-join
// signature checks. Remote keys come from the federation key ring, which registers
// itself with SetKeyFetcher; until then only the local key is known.
func (r *Roomserver) getKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	if serverName == r.serverName && string(keyID) == r.key.ID {
		return id.SigningKey(base64.RawStdEncoding.EncodeToString(r.key.Public())), time.Now().Add(24 * time.Hour), nil
	}
	if f := r.keyFetcher.Load(); f != nil {
		return (*f)(serverName, keyID, minValidUntil)
	}
	return "", time.Time{}, fmt.Errorf("no key for %s %s", serverName, keyID)
}

// SetKeyFetcher installs the function the auth rules use to fetch remote servers'
// signing keys (the federation key ring).
func (r *Roomserver) SetKeyFetcher(f pdu.GetKeyFunc) { r.keyFetcher.Store(&f) }

// persistInput is one event on its way into the store.
type persistInput struct {
	ev                 *events.Event
	authNIDs           []int64
	outlier            bool
	rejected           bool
	softFailed         bool
	stateBeforeNID     int64
	stateBefore        stateMap
	stateBeforeMeta    snapshotMeta
	stateBeforeIsFresh bool // stateBefore must be written as a new snapshot
	freshParentNID     int64
	freshParentState   stateMap
	freshParentMeta    snapshotMeta
	// pendingRedactions: a redaction that arrived before the event may apply
	// to it (remote events; a local event's ID is new).
	pendingRedactions bool
}

// persist stores an event with its state, updates the forward extremities and the
// current state, all in one transaction, then updates memory and tells listeners.
// The room's lock must be held.
func (r *Roomserver) persist(ctx context.Context, rm *room, in *persistInput) (*OutputEvent, error) {
	ev := in.ev
	timeline := !in.outlier
	var pos int64
	if timeline {
		pos = r.stream.allocate()
		defer r.stream.finish(pos)
	}
	var (
		newKeys        []pdu.StateKey
		newKeyNIDs     []int64
		se             *StoredEvent
		newExts        []extremity
		newCurrentNID  int64
		newCurrent     stateMap
		newCurrentMeta snapshotMeta
		stateChanged   bool
		cacheSnapshots []cachedSnapshot
	)
	err := r.db.WithTx(ctx, func(tx *storage.Tx) error {
		newKeys, newKeyNIDs, cacheSnapshots = newKeys[:0], newKeyNIDs[:0], cacheSnapshots[:0]
		before := in.stateBeforeNID
		beforeState := in.stateBefore
		beforeMeta := in.stateBeforeMeta
		if timeline && in.stateBeforeIsFresh {
			nid, meta, err := writeSnapshot(ctx, tx, rm.nid, in.freshParentNID, in.freshParentState, in.freshParentMeta, in.stateBefore)
			if err != nil {
				return err
			}
			before, beforeMeta = nid, meta
			cacheSnapshots = append(cacheSnapshots, cachedSnapshot{nid, beforeState, meta})
		}
		var streamArg any
		if timeline {
			streamArg = pos
		}
		var stateKey any
		if sk := ev.StateKey(); sk != nil {
			stateKey = *sk
		}
		var eventNID int64
		err := tx.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, event_type, state_key, sender, depth, origin_server_ts, stream_pos,
			is_outlier, is_rejected, is_soft_failed, state_before_nid, state_after_nid, json)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) RETURNING event_nid`,
			string(ev.ID()), rm.nid, ev.Type(), stateKey, string(ev.Sender()), ev.Depth(), ev.OriginServerTS(), streamArg,
			in.outlier, in.rejected, in.softFailed, before, ev.JSON()).Scan(&eventNID)
		if err != nil {
			if storage.IsUniqueViolation(err) {
				return errDuplicateEvent
			}
			return fmt.Errorf("inserting event %s: %w", ev.ID(), err)
		}
		if len(in.authNIDs) > 0 {
			if err := insertEdges(ctx, tx, eventNID, in.authNIDs); err != nil {
				return err
			}
		}
		if prevs := ev.PrevEventIDs(); len(prevs) > 0 {
			if err := insertPrevEdges(ctx, tx, eventNID, prevs); err != nil {
				return err
			}
		}
		var redactedBy id.EventID
		if in.pendingRedactions && !in.rejected {
			if redactedBy, err = r.applyPendingRedactions(ctx, tx, rm, ev, eventNID); err != nil {
				return err
			}
		}
		after := before
		afterState := beforeState
		afterMeta := beforeMeta
		if timeline && ev.IsState() && !in.rejected {
			k := pdu.StateKey{Type: ev.Type(), StateKey: *ev.StateKey()}
			knid, err := r.keys.lookup(ctx, tx, k)
			if err != nil {
				return err
			}
			if knid == 0 {
				if knid, err = r.keys.assign(ctx, tx, k); err != nil {
					return err
				}
				newKeys, newKeyNIDs = append(newKeys, k), append(newKeyNIDs, knid)
			}
			afterState = beforeState.clone(1)
			afterState[knid] = eventNID
			if after, afterMeta, err = writeSnapshot(ctx, tx, rm.nid, before, beforeState, beforeMeta, afterState); err != nil {
				return err
			}
			cacheSnapshots = append(cacheSnapshots, cachedSnapshot{after, afterState, afterMeta})
			if _, err := tx.Exec(ctx, `UPDATE events SET state_after_nid = $1 WHERE event_nid = $2`, after, eventNID); err != nil {
				return fmt.Errorf("recording state after %s: %w", ev.ID(), err)
			}
		}
		se = &StoredEvent{Event: ev, NID: eventNID, RoomNID: rm.nid, StreamPos: pos, Outlier: in.outlier, Rejected: in.rejected,
			SoftFailed: in.softFailed, StateBefore: before, StateAfter: after, RedactedBy: redactedBy}
		if !timeline {
			return nil
		}
		// Forward extremities and current state. Rejected and soft-failed events
		// never become extremities (Server-Server API, "Soft failure").
		newExts = rm.extremities
		newCurrentNID, newCurrent, newCurrentMeta = rm.currentNID, rm.current, rm.currentMeta
		if in.rejected || in.softFailed {
			return nil
		}
		prevSet := make(map[id.EventID]struct{}, len(ev.PrevEventIDs()))
		for _, p := range ev.PrevEventIDs() {
			prevSet[p] = struct{}{}
		}
		newExts = make([]extremity, 0, len(rm.extremities)+1)
		var removed []any
		for _, x := range rm.extremities {
			if _, gone := prevSet[x.id]; gone {
				removed = append(removed, x.nid)
			} else {
				newExts = append(newExts, x)
			}
		}
		newExts = append(newExts, extremity{nid: eventNID, id: ev.ID(), depth: ev.Depth()})
		if len(removed) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM forward_extremities WHERE room_nid = $1 AND event_nid IN (`+placeholders(len(removed), 2)+`)`,
				append([]any{rm.nid}, removed...)...); err != nil {
				return fmt.Errorf("updating extremities: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO forward_extremities (room_nid, event_nid) VALUES ($1, $2)`, rm.nid, eventNID); err != nil {
			return fmt.Errorf("updating extremities: %w", err)
		}
		if len(newExts) == 1 {
			newCurrentNID, newCurrent, newCurrentMeta = after, afterState, afterMeta
		} else {
			// Several extremities: the current state is their resolved state.
			resolved, err := r.resolveExtremities(ctx, tx, rm, newExts, eventNID, afterState)
			if err != nil {
				return err
			}
			if sameState(resolved, afterState) {
				newCurrentNID, newCurrent, newCurrentMeta = after, afterState, afterMeta
			} else if sameState(resolved, rm.current) {
				// unchanged
			} else {
				nid, meta, err := writeSnapshot(ctx, tx, rm.nid, rm.currentNID, rm.current, rm.currentMeta, resolved)
				if err != nil {
					return err
				}
				newCurrentNID, newCurrent, newCurrentMeta = nid, resolved, meta
				cacheSnapshots = append(cacheSnapshots, cachedSnapshot{nid, resolved, meta})
			}
		}
		if newCurrentNID != rm.currentNID {
			changed, err := r.updateCurrentState(ctx, tx, rm, rm.current, newCurrent, se)
			if err != nil {
				return err
			}
			stateChanged = changed
			if _, err := tx.Exec(ctx, `UPDATE rooms SET current_snapshot_nid = $1 WHERE room_nid = $2`, newCurrentNID, rm.nid); err != nil {
				return fmt.Errorf("updating current state: %w", err)
			}
		}
		if ev.Type() == "m.room.redaction" {
			if err := r.applyRedaction(ctx, tx, rm, se, newCurrent); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errDuplicateEvent) {
		return nil, errDuplicateEvent
	}
	if err != nil {
		rm.forget()
		return nil, err
	}
	for i, k := range newKeys {
		r.keys.remember(k, newKeyNIDs[i])
	}
	for _, c := range cacheSnapshots {
		r.snapshots.put(c.nid, c.state, c.meta)
	}
	r.events.put(se)
	if t := ev.Redacts(); t != "" && timeline && !in.rejected && !in.softFailed {
		// Again now that the redaction is committed: a reader may have cached
		// the target as it was between applyRedaction's drop and the commit.
		r.events.dropID(t)
	}
	if !timeline {
		return &OutputEvent{Event: ev, RoomNID: rm.nid}, nil
	}
	rm.extremities = newExts
	rm.currentNID, rm.current, rm.currentMeta = newCurrentNID, newCurrent, newCurrentMeta
	out := &OutputEvent{Event: ev, RoomNID: rm.nid, StreamPos: pos, SoftFailed: in.softFailed || in.rejected, StateChanged: stateChanged}
	if !in.rejected {
		r.stream.finish(pos) // visible before listeners look (finish is idempotent)
		r.notify(*out)
	}
	return out, nil
}

type cachedSnapshot struct {
	nid   int64
	state stateMap
	meta  snapshotMeta
}

var errDuplicateEvent = errors.New("event already stored")

func sameState(a, b stateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// insertEdges records the auth_events edges of an event.
func insertEdges(ctx context.Context, tx *storage.Tx, eventNID int64, authNIDs []int64) error {
	vals := make([]any, len(authNIDs))
	for i, a := range authNIDs {
		vals[i] = a
	}
	return insertEdgeRows(ctx, tx, "event_auth_edges (event_nid, auth_event_nid)", eventNID, vals)
}

// insertPrevEdges records the prev_events edges of an event.
func insertPrevEdges(ctx context.Context, tx *storage.Tx, eventNID int64, prevs []id.EventID) error {
	vals := make([]any, len(prevs))
	for i, p := range prevs {
		vals[i] = string(p)
	}
	return insertEdgeRows(ctx, tx, "event_prev_edges (event_nid, prev_event_id)", eventNID, vals)
}

// insertEdgeRows inserts (eventNID, v) for each v in one statement.
func insertEdgeRows(ctx context.Context, tx *storage.Tx, table string, eventNID int64, vals []any) error {
	q := make([]byte, 0, 64+len(vals)*12)
	q = append(q, "INSERT INTO "...)
	q = append(q, table...)
	q = append(q, " VALUES "...)
	args := make([]any, 0, len(vals)+1)
	args = append(args, eventNID)
	for i, v := range vals {
		if i > 0 {
			q = append(q, ',')
		}
		args = append(args, v)
		q = fmt.Appendf(q, "($1,$%d)", len(args))
	}
	q = append(q, " ON CONFLICT DO NOTHING"...)
	if _, err := tx.Exec(ctx, string(q), args...); err != nil {
		return fmt.Errorf("inserting into %s: %w", table, err)
	}
	return nil
}

// updateCurrentState writes the difference between two current states into the
// current_state table. It reports whether anything changed.
func (r *Roomserver) updateCurrentState(ctx context.Context, tx *storage.Tx, rm *room, old, cur stateMap, justStored *StoredEvent) (bool, error) {
	var changedKeys []int64
	for k, v := range cur {
		if old[k] != v {
			changedKeys = append(changedKeys, k)
		}
	}
	var removedKeys []int64
	for k := range old {
		if _, ok := cur[k]; !ok {
			removedKeys = append(removedKeys, k)
		}
	}
	if len(changedKeys) == 0 && len(removedKeys) == 0 {
		return false, nil
	}
	keys, err := r.keys.keysOf(ctx, tx, append(slices.Clone(changedKeys), removedKeys...), false)
	if err != nil {
		return false, err
	}
	// The state key of an event stored in this transaction may not be remembered yet.
	if justStored != nil && justStored.IsState() {
		for _, k := range changedKeys {
			if cur[k] == justStored.NID {
				keys[k] = pdu.StateKey{Type: justStored.Type(), StateKey: *justStored.StateKey()}
			}
		}
	}
	var evNIDs []int64
	for _, k := range changedKeys {
		if justStored == nil || cur[k] != justStored.NID {
			evNIDs = append(evNIDs, cur[k])
		}
	}
	evs, err := r.eventsByNID(ctx, tx, evNIDs)
	if err != nil {
		return false, err
	}
	byNID := make(map[int64]*StoredEvent, len(evs)+1)
	for _, e := range evs {
		byNID[e.NID] = e
	}
	if justStored != nil {
		byNID[justStored.NID] = justStored
	}
	for _, k := range changedKeys {
		sk, ok := keys[k]
		if !ok {
			return false, fmt.Errorf("unknown state key nid %d", k)
		}
		e := byNID[cur[k]]
		var membership any
		if sk.Type == "m.room.member" {
			membership = gjson.GetBytes(e.Content(), "membership").String()
		}
		if _, err := tx.Exec(ctx, `INSERT INTO current_state (room_nid, event_type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (room_nid, event_type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
			rm.nid, sk.Type, sk.StateKey, e.NID, membership); err != nil {
			return false, fmt.Errorf("updating current state: %w", err)
		}
	}
	for _, k := range removedKeys {
		sk := keys[k]
		if _, err := tx.Exec(ctx, `DELETE FROM current_state WHERE room_nid = $1 AND event_type = $2 AND state_key = $3`, rm.nid, sk.Type, sk.StateKey); err != nil {
			return false, fmt.Errorf("updating current state: %w", err)
		}
	}
	return true, nil
}
