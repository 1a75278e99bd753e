// Package stateres implements the Matrix state resolution algorithms as pure
// functions: v1 (room version 1), v2 (room versions 2–11) and v2.1 (room
// version 12). It does no I/O of its own; events and auth chains come from a
// Provider and the authorisation rules from an AuthFunc, so the package can be
// tested with in-memory rooms and no database.
//
// Where the spec leaves room for reading, the package does what the
// reference implementations (Synapse, Ruma) do, so that servers converge:
//   - the full auth chain of a state contains the state's events themselves;
//   - power events include the create event, and power levels and join rules
//     only with an empty state key;
//   - the power events' auth chains are followed only through events of the
//     full conflicted set;
//   - in room version 12 every event implicitly cites the create event.
//
// It follows the spec rather than Synapse on rejected events: they are
// re-checked like any other, and only kept out of use as fallback auth events.
//
// The resolved state may hold events that are in none of the input states:
// events of the auth difference take part in the iterative auth checks and can
// end up in the result.
package stateres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/roomversion"
)

// StateMap maps a (type, state_key) pair to the ID of the state event at that
// key.
type StateMap map[pdu.StateKey]id.EventID

// Provider supplies the events and auth chains that a resolution needs. It is
// called with batches of IDs, a handful of times per resolution.
type Provider interface {
	// Events returns the events with the given IDs, in any order, each with
	// InternalMeta.EventID set and InternalMeta.Rejected set if the event was
	// rejected. IDs that are unknown are left out of the result; an error means
	// the lookup itself failed.
	Events(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error)
	// AuthChain returns the auth chain of the given events: every event
	// reachable from them through auth_events. Whether the given events
	// themselves are included does not matter. Resolve does not modify the map.
	AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error)
}

// AuthFunc applies the authorisation rules of room version rv to evt, using
// authEvents as the room state instead of the events listed in evt's
// auth_events (Server-Server API, "Authorisation rules"). It returns nil if the
// event is allowed. authEvents holds at most one event per (type, state_key),
// chosen by the auth events selection of evt; it is never nil and is only valid
// during the call. For room versions whose room ID is the create event's ID,
// the create event is not in authEvents and the function must look it up by
// room ID itself.
type AuthFunc func(rv id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU) error

// ErrAuthUnavailable may be wrapped by an AuthFunc's error to say that it
// could not decide, for example because a lookup failed. Resolve then returns
// the error instead of treating the event as rejected, since a transient
// failure must not change the resolved state.
var ErrAuthUnavailable = errors.New("auth check could not be completed")

var (
	keyCreate      = pdu.StateKey{Type: "m.room.create"}
	keyPowerLevels = pdu.StateKey{Type: "m.room.power_levels"}
)

// Resolve resolves the given room states of roomID, a room of version rv,
// into one, using the state resolution algorithm of that room version. The
// result does not depend on the order of states. Every event the provider
// returns must belong to roomID.
func Resolve(ctx context.Context, roomID id.RoomID, rv id.RoomVersion, states []StateMap, p Provider, auth AuthFunc) (StateMap, error) {
	if !roomversion.SpecVersion(rv).IsKnown() {
		return nil, fmt.Errorf("resolving state of %s: %w %q", roomID, id.ErrUnknownRoomVersion, rv)
	}
	if p == nil || auth == nil {
		return nil, fmt.Errorf("resolving state of %s: provider and auth function are required", roomID)
	}
	switch len(states) {
	case 0:
		return StateMap{}, nil
	case 1:
		out := make(StateMap, len(states[0]))
		for k, v := range states[0] {
			out[k] = v
		}
		return out, nil
	}
	r := newResolver(ctx, roomID, rv, p, auth)
	var (
		out StateMap
		err error
	)
	if r.rv.StateResVersion() == id.StateResV1 {
		out, err = r.resolveV1(states)
	} else {
		out, err = r.resolveV2(states)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving state of %s: %w", roomID, err)
	}
	return out, nil
}

// node is an event taking part in a resolution, addressed by its index in
// resolver.nodes so that inner loops work on integers rather than string maps.
type node struct {
	evt *pdu.PDU // nil if the provider does not know the event
	id  id.EventID
	// auth holds the indices of the known auth events, without duplicates. In
	// room versions whose room ID is the create event's ID, the create event
	// is added as an implicit auth event.
	auth     []int32
	authDone bool
	sel      pdu.AuthEventSelection
	selDone  bool
}

// resolver holds the events loaded for one resolution.
type resolver struct {
	ctx    context.Context
	roomID id.RoomID
	// rv is the spec version whose rules the room follows, the one mautrix
	// knows; version is the room's own (unstable versions differ), which
	// the auth function is given.
	rv      id.RoomVersion
	version id.RoomVersion
	p       Provider
	auth    AuthFunc

	index map[id.EventID]int32
	nodes []node

	// createID is the create event's ID in room versions where it is implied
	// by the room ID, else empty.
	createID id.EventID
	createIx int32

	powerLevels map[int32]*powerLevels
	creators    []id.UserID
	authBuf     []*pdu.PDU
}

func newResolver(ctx context.Context, roomID id.RoomID, rv id.RoomVersion, p Provider, auth AuthFunc) *resolver {
	r := &resolver{
		ctx:         ctx,
		roomID:      roomID,
		rv:          roomversion.SpecVersion(rv),
		version:     rv,
		p:           p,
		auth:        auth,
		index:       make(map[id.EventID]int32, 256),
		nodes:       make([]node, 0, 256),
		createIx:    -1,
		powerLevels: make(map[int32]*powerLevels),
		authBuf:     make([]*pdu.PDU, 0, 8),
	}
	if r.rv.RoomIDIsCreateEventID() && strings.HasPrefix(string(roomID), "!") {
		r.createID = id.EventID("$" + string(roomID)[1:])
	}
	return r
}

// load fetches the given events from the provider in one batch, skipping those
// already loaded (or already known to be unknown).
func (r *resolver) load(ids []id.EventID) error {
	var want []id.EventID
	r.nodes = slices.Grow(r.nodes, len(ids))
	for _, eid := range ids {
		if _, ok := r.index[eid]; ok {
			continue
		}
		r.index[eid] = int32(len(r.nodes))
		r.nodes = append(r.nodes, node{id: eid})
		want = append(want, eid)
	}
	if len(want) == 0 {
		return nil
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	evts, err := r.p.Events(r.ctx, want)
	if err != nil {
		return fmt.Errorf("loading %d events: %w", len(want), err)
	}
	for _, evt := range evts {
		if evt == nil {
			continue
		}
		ix, ok := r.index[evt.InternalMeta.EventID]
		if !ok || r.nodes[ix].evt != nil {
			continue // not asked for, or a duplicate
		}
		if err := r.checkRoom(evt); err != nil {
			return err
		}
		r.nodes[ix].evt = evt
	}
	return nil
}

// checkRoom makes sure that evt belongs to the room being resolved.
func (r *resolver) checkRoom(evt *pdu.PDU) error {
	if evt.RoomID == r.roomID {
		return nil
	}
	if evt.RoomID == "" && r.createID != "" && evt.InternalMeta.EventID == r.createID {
		return nil // a v12 create event has no room_id, its ID implies it
	}
	return fmt.Errorf("event %s belongs to room %q, not %s", evt.InternalMeta.EventID, evt.RoomID, r.roomID)
}

// known returns the index of a loaded, known event.
func (r *resolver) known(eid id.EventID) (int32, bool) {
	ix, ok := r.index[eid]
	if !ok || r.nodes[ix].evt == nil {
		return -1, false
	}
	return ix, true
}

// loadAuth makes sure that the auth events of the given nodes are loaded and
// that their auth index lists are filled in.
func (r *resolver) loadAuth(ixs []int32) error {
	var want []id.EventID
	for _, ix := range ixs {
		n := &r.nodes[ix]
		if n.authDone || n.evt == nil {
			continue
		}
		for _, aid := range n.evt.AuthEvents {
			if _, ok := r.index[aid]; !ok {
				want = append(want, aid)
			}
		}
	}
	if len(want) > 0 {
		if err := r.load(want); err != nil {
			return err
		}
	}
	for _, ix := range ixs {
		r.fillAuth(ix)
	}
	return nil
}

// fillAuth fills in the auth index list of a node whose auth events were
// loaded.
func (r *resolver) fillAuth(ix int32) {
	n := &r.nodes[ix]
	if n.authDone || n.evt == nil {
		return
	}
	auth := make([]int32, 0, len(n.evt.AuthEvents)+1)
	for _, aid := range n.evt.AuthEvents {
		if a, ok := r.known(aid); ok && a != ix && !slices.Contains(auth, a) {
			auth = append(auth, a)
		}
	}
	if r.createIx >= 0 && ix != r.createIx && !slices.Contains(auth, r.createIx) {
		auth = append(auth, r.createIx)
	}
	n = &r.nodes[ix]
	n.auth = auth
	n.authDone = true
}

// selection returns the auth events selection of a node, computed once.
func (r *resolver) selection(ix int32) pdu.AuthEventSelection {
	n := &r.nodes[ix]
	if !n.selDone {
		n.sel = n.evt.AuthEventSelection(r.rv)
		n.selDone = true
	}
	return n.sel
}

// authorise runs the auth function on evt. A panic in it counts as a
// rejection so that a malformed event cannot make every resolution that
// involves it fail.
func (r *resolver) authorise(evt *pdu.PDU, authEvents []*pdu.PDU) (allowed bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			allowed, err = false, nil
		}
	}()
	authErr := r.auth(r.version, evt, authEvents)
	if authErr == nil {
		return true, nil
	}
	if errors.Is(authErr, ErrAuthUnavailable) {
		return false, fmt.Errorf("checking %s: %w", evt.InternalMeta.EventID, authErr)
	}
	return false, nil
}

// stateKeyOf returns the state key of a state event.
func stateKeyOf(evt *pdu.PDU) pdu.StateKey {
	return pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}
}

// isKey reports whether evt is a state event at key.
func isKey(evt *pdu.PDU, key pdu.StateKey) bool {
	return evt.StateKey != nil && evt.Type == key.Type && *evt.StateKey == key.StateKey
}
