package roomserver

import (
	"context"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/auth"
	"hearth/roomserver/events"
	"hearth/roomserver/roomversion"
	"hearth/roomserver/stateres"
	"hearth/storage"
)

// storeProvider feeds state resolution from the store (through the caches), with
// events stored in the current, uncommitted transaction supplied as extra.
type storeProvider struct {
	r     *Roomserver
	q     storage.Conn
	extra map[id.EventID]*StoredEvent
}

var _ stateres.Provider = (*storeProvider)(nil)

func (p *storeProvider) load(ctx context.Context, ids []id.EventID) ([]*StoredEvent, error) {
	out := make([]*StoredEvent, 0, len(ids))
	rest := ids[:0:0]
	for _, eid := range ids {
		if e, ok := p.extra[eid]; ok {
			out = append(out, e)
		} else {
			rest = append(rest, eid)
		}
	}
	if len(rest) > 0 {
		evs, err := p.r.eventsByID(ctx, p.q, rest)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// Events implements stateres.Provider.
func (p *storeProvider) Events(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	evs, err := p.load(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*pdu.PDU, len(evs))
	for i, e := range evs {
		out[i] = e.authPDU()
	}
	return out, nil
}

// AuthChain implements stateres.Provider: a breadth-first walk of auth_events, one
// batched load per level.
func (p *storeProvider) AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error) {
	return p.r.authChain(ctx, p.q, ids, p.extra)
}

func (r *Roomserver) authChain(ctx context.Context, q storage.Conn, ids []id.EventID, extra map[id.EventID]*StoredEvent) (map[id.EventID]struct{}, error) {
	seen := make(map[id.EventID]struct{}, len(ids)*4)
	frontier := ids
	p := &storeProvider{r: r, q: q, extra: extra}
	for len(frontier) > 0 {
		evs, err := p.load(ctx, frontier)
		if err != nil {
			return nil, err
		}
		var next []id.EventID
		for _, e := range evs {
			for _, a := range e.AuthEventIDs() {
				if _, ok := seen[a]; !ok {
					seen[a] = struct{}{}
					next = append(next, a)
				}
			}
		}
		frontier = next
	}
	return seen, nil
}

// authFunc adapts the auth rules for state resolution; for room versions whose room
// ID is the create event's ID it finds the create event itself.
func (r *Roomserver) authFunc(ctx context.Context, p *storeProvider, roomID id.RoomID) stateres.AuthFunc {
	var create *pdu.PDU
	return func(rv id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU) error {
		c := create
		for _, ae := range authEvents {
			if ae.Type == "m.room.create" {
				c = ae
			}
		}
		if c == nil && roomversion.SpecVersion(rv).RoomIDIsCreateEventID() {
			evs, err := p.Events(ctx, []id.EventID{id.EventID("$" + string(roomID)[1:])})
			if err != nil {
				return fmt.Errorf("%w: %w", stateres.ErrAuthUnavailable, err)
			}
			if len(evs) == 1 {
				create = evs[0]
				c = create
			}
		}
		return auth.Allowed(rv, evt, c, authEvents, r.getKey)
	}
}

// resolveStates resolves several states (NID form) of a room into one.
func (r *Roomserver) resolveStates(ctx context.Context, q storage.Conn, rm *room, states []stateMap, extra map[id.EventID]*StoredEvent) (stateMap, error) {
	if len(states) == 1 {
		return states[0], nil
	}
	// Convert to ID form: collect every key and event NID once.
	keySet := map[int64]struct{}{}
	evSet := map[int64]struct{}{}
	for _, s := range states {
		for k, v := range s {
			keySet[k] = struct{}{}
			evSet[v] = struct{}{}
		}
	}
	keyNIDs := make([]int64, 0, len(keySet))
	for k := range keySet {
		keyNIDs = append(keyNIDs, k)
	}
	keys, err := r.keys.keysOf(ctx, q, keyNIDs, false)
	if err != nil {
		return nil, err
	}
	keyToNID := make(map[pdu.StateKey]int64, len(keys))
	for n, k := range keys {
		keyToNID[k] = n
	}
	evNIDs := make([]int64, 0, len(evSet))
	byNID := map[int64]*StoredEvent{}
	for n := range evSet {
		found := false
		for _, e := range extra {
			if e.NID == n {
				byNID[n] = e
				found = true
			}
		}
		if !found {
			evNIDs = append(evNIDs, n)
		}
	}
	evs, err := r.eventsByNID(ctx, q, evNIDs)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		byNID[e.NID] = e
	}
	idToNID := make(map[id.EventID]int64, len(byNID))
	for n, e := range byNID {
		idToNID[e.ID()] = n
	}
	in := make([]stateres.StateMap, len(states))
	for i, s := range states {
		m := make(stateres.StateMap, len(s))
		for k, v := range s {
			m[keys[k]] = byNID[v].ID()
		}
		in[i] = m
	}
	p := &storeProvider{r: r, q: q, extra: extra}
	resolved, err := stateres.Resolve(ctx, rm.id, rm.version.ID, in, p, r.authFunc(ctx, p, rm.id))
	if err != nil {
		return nil, fmt.Errorf("resolving state of %s: %w", rm.id, err)
	}
	out := make(stateMap, len(resolved))
	for k, eid := range resolved {
		kn, ok := keyToNID[k]
		if !ok {
			// An event from the auth difference won at a key no input state had.
			if kn, err = r.keys.ensure(ctx, q, k); err != nil {
				return nil, err
			}
		}
		en, ok := idToNID[eid]
		if !ok {
			evs, err := p.load(ctx, []id.EventID{eid})
			if err != nil {
				return nil, err
			}
			if len(evs) == 0 {
				return nil, fmt.Errorf("state resolution chose unknown event %s", eid)
			}
			en = evs[0].NID
		}
		out[kn] = en
	}
	return out, nil
}

// resolveExtremities computes the state after a set of forward extremities, one of
// which (justNID, with afterState) was stored in the current transaction.
func (r *Roomserver) resolveExtremities(ctx context.Context, tx *storage.Tx, rm *room, exts []extremity, justNID int64, justAfter stateMap) (stateMap, error) {
	states := make([]stateMap, 0, len(exts))
	var nids []int64
	for _, x := range exts {
		if x.nid == justNID {
			states = append(states, justAfter)
		} else {
			nids = append(nids, x.nid)
		}
	}
	evs, err := r.eventsByNID(ctx, tx, nids)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		s, _, err := r.loadSnapshot(ctx, tx, e.StateAfter)
		if err != nil {
			return nil, err
		}
		states = append(states, s)
	}
	var extra map[id.EventID]*StoredEvent
	if je := r.events.getNID(justNID); je != nil {
		extra = map[id.EventID]*StoredEvent{je.ID(): je}
	}
	return r.resolveStates(ctx, tx, rm, states, extra)
}

// applyRedaction marks the redaction's target redacted when the redaction may apply:
// the redacter's server is the target sender's server, or the redacter has the
// "redact" power level (Client-Server API, "Redactions"; room v3+ "Handling
// redactions"). A redaction of a target not yet known waits for it in
// pending_redactions (see applyPendingRedactions).
func (r *Roomserver) applyRedaction(ctx context.Context, tx *storage.Tx, rm *room, red *StoredEvent, state stateMap) error {
	target := red.Redacts()
	if target == "" {
		return nil
	}
	evs, err := r.eventsByID(ctx, tx, []id.EventID{target})
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO pending_redactions (target_event_id, redaction_nid) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			string(target), red.NID); err != nil {
			return fmt.Errorf("recording redaction %s of unknown %s: %w", red.ID(), target, err)
		}
		return nil
	}
	t := evs[0]
	if t.RoomNID != rm.nid {
		return nil
	}
	allowed := t.Sender().Homeserver() == red.Sender().Homeserver()
	if !allowed {
		allowed, err = r.hasPower(ctx, tx, rm, state, red.Sender(), "redact", 50)
		if err != nil {
			return err
		}
	}
	if !allowed {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE events SET redacted_by = $1 WHERE event_nid = $2 AND redacted_by IS NULL`, string(red.ID()), t.NID); err != nil {
		return fmt.Errorf("applying redaction: %w", err)
	}
	r.events.drop(t)
	return nil
}

// applyPendingRedactions applies to ev, stored in this transaction as
// eventNID, a redaction that arrived before it ("Handling redactions": a
// redaction waits until both it and its target have been seen). Each waiting
// redaction of ev's room is checked as applyRedaction does, with the state
// before the redaction; the waiting rows are then dropped, as the outcome
// cannot change. It returns the ID of the redaction applied, or "".
func (r *Roomserver) applyPendingRedactions(ctx context.Context, tx *storage.Tx, rm *room, ev *events.Event, eventNID int64) (id.EventID, error) {
	rows, err := tx.Query(ctx, `SELECT redaction_nid FROM pending_redactions WHERE target_event_id = $1`, string(ev.ID()))
	if err != nil {
		return "", fmt.Errorf("looking up redactions of %s: %w", ev.ID(), err)
	}
	var nids []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return "", fmt.Errorf("looking up redactions of %s: %w", ev.ID(), err)
		}
		nids = append(nids, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("looking up redactions of %s: %w", ev.ID(), err)
	}
	if len(nids) == 0 {
		return "", nil
	}
	reds, err := r.eventsByNID(ctx, tx, nids)
	if err != nil {
		return "", err
	}
	var applied id.EventID
	for _, red := range reds {
		if red.RoomNID != rm.nid || red.Rejected || red.SoftFailed || red.Outlier {
			continue
		}
		allowed := ev.Sender().Homeserver() == red.Sender().Homeserver()
		if !allowed {
			st, _, err := r.loadSnapshot(ctx, tx, red.StateBefore)
			if err != nil {
				return "", err
			}
			if allowed, err = r.hasPower(ctx, tx, rm, st, red.Sender(), "redact", 50); err != nil {
				return "", err
			}
		}
		if allowed {
			applied = red.ID()
			break
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pending_redactions WHERE target_event_id = $1`, string(ev.ID())); err != nil {
		return "", fmt.Errorf("dropping redactions of %s: %w", ev.ID(), err)
	}
	if applied != "" {
		if _, err := tx.Exec(ctx, `UPDATE events SET redacted_by = $1 WHERE event_nid = $2`, string(applied), eventNID); err != nil {
			return "", fmt.Errorf("applying redaction %s: %w", applied, err)
		}
	}
	return applied, nil
}

// hasPower reports whether user's power level in state reaches the level named by
// field of m.room.power_levels (with default def). Room v12 creators have
// unlimited power.
func (r *Roomserver) hasPower(ctx context.Context, q storage.Conn, rm *room, state stateMap, user id.UserID, field string, def int64) (bool, error) {
	get := func(typ string) (*StoredEvent, error) {
		kn, err := r.keys.lookup(ctx, q, pdu.StateKey{Type: typ})
		if err != nil || kn == 0 {
			return nil, err
		}
		en, ok := state[kn]
		if !ok {
			return nil, nil
		}
		evs, err := r.eventsByNID(ctx, q, []int64{en})
		if err != nil {
			return nil, err
		}
		return evs[0], nil
	}
	create, err := get("m.room.create")
	if err != nil {
		return false, err
	}
	if rm.version.PrivilegedCreators && create != nil {
		if create.Sender() == user {
			return true, nil
		}
		for _, c := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
			if c.Str == string(user) {
				return true, nil
			}
		}
	}
	pl, err := get("m.room.power_levels")
	if err != nil {
		return false, err
	}
	if pl == nil {
		// No power levels: the creator has 100, everyone else 0.
		userLevel := int64(0)
		if create != nil && create.Sender() == user {
			userLevel = 100
		}
		return userLevel >= def, nil
	}
	c := pl.Content()
	need := def
	if v := gjson.GetBytes(c, field); v.Exists() {
		need = v.Int()
	}
	have := gjson.GetBytes(c, "users_default").Int()
	if v := gjson.GetBytes(c, "users."+gjsonEscape(string(user))); v.Exists() {
		have = v.Int()
	}
	return have >= need, nil
}

// gjsonEscape escapes gjson path metacharacters in a key.
func gjsonEscape(s string) string {
	b := make([]byte, 0, len(s)+4)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '.', '*', '?', '|', '#', '@', '\\', '!', '=', '<', '>', '%':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}
