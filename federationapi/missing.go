package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Limits of fetching missing events (Server-Server API, "Backfilling and
// retrieving missing events").
const (
	// missingEventsLimit is how many events get_missing_events asks for before
	// falling back to fetching the state across the gap.
	missingEventsLimit = 10
	// maxEventFetches is how many unknown events are fetched one by one with
	// /event before /state is asked for all of them at once.
	maxEventFetches = 50
	// maxGapPrevs bounds how many missing prev events' states are fetched for one
	// event.
	maxGapPrevs = 10
)

// verifyNew parses PDUs of roomID and verifies those not stored yet (steps 1–3),
// leaving out events of other rooms and events that fail. It returns the new,
// verified events.
func (a *API) verifyNew(ctx context.Context, roomID id.RoomID, version id.RoomVersion, raws []json.RawMessage) ([]*events.Event, error) {
	parsed := make([]*events.Event, 0, len(raws))
	ids := make([]id.EventID, 0, len(raws))
	for _, raw := range raws {
		ev, err := events.Parse(version, raw)
		if err != nil || ev.RoomID() != roomID {
			continue
		}
		parsed = append(parsed, ev)
		ids = append(ids, ev.ID())
	}
	known, err := a.rs.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	have := make(map[id.EventID]struct{}, len(known))
	for _, k := range known {
		have[k.ID()] = struct{}{}
	}
	todo := make([]*events.Event, 0, len(parsed))
	seen := make(map[id.EventID]struct{}, len(parsed))
	for _, ev := range parsed {
		if _, ok := have[ev.ID()]; ok {
			continue
		}
		if _, dup := seen[ev.ID()]; dup {
			continue
		}
		seen[ev.ID()] = struct{}{}
		todo = append(todo, ev)
	}
	return a.verifyParsedBatch(ctx, todo), nil
}

// verifyParsedBatch runs the signature and hash checks on parsed events in
// parallel, returning those that pass (redacted where the hash did not match).
func (a *API) verifyParsedBatch(ctx context.Context, evs []*events.Event) []*events.Event {
	out := make([]*events.Event, len(evs))
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := min(8, max(len(evs)/16, 1))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(evs) {
					return
				}
				ev, err := a.safeVerifyParsed(ctx, evs[i])
				if err != nil {
					slog.Info("dropped fetched event", "event_id", evs[i].ID(), "err", err)
					continue
				}
				out[i] = ev
			}
		}()
	}
	wg.Wait()
	kept := out[:0]
	for _, ev := range out {
		if ev != nil {
			kept = append(kept, ev)
		}
	}
	return kept
}

func (a *API) safeVerifyParsed(ctx context.Context, ev *events.Event) (out *events.Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("panic verifying event: %v", p)
		}
	}()
	return a.verifyParsed(ctx, ev)
}

// inputOutliers stores events without state, each after the auth events it cites.
// Events whose auth events are nowhere to be found are skipped.
func (a *API) inputOutliers(ctx context.Context, evs []*events.Event) error {
	for _, ev := range sortByAuth(evs) {
		_, err := a.rs.InputOutlier(ctx, ev)
		var missing *roomserver.MissingEventsError
		switch {
		case errors.As(err, &missing):
			slog.Info("skipped outlier with unknown auth events", "event_id", ev.ID(), "missing", missing.AuthEvents)
		case err != nil:
			return fmt.Errorf("storing outlier %s: %w", ev.ID(), err)
		}
	}
	return nil
}

// fetchAuthChain fetches the auth chain of ev from origin and stores the events
// not yet known as outliers.
func (a *API) fetchAuthChain(ctx context.Context, origin string, ev *events.Event) error {
	resp, err := a.client.GetEventAuthChain(ctx, origin, ev.RoomID(), ev.ID())
	if err != nil {
		return err
	}
	if resp == nil {
		return errors.New("empty event_auth response")
	}
	evs, err := a.verifyNew(ctx, ev.RoomID(), ev.Version().ID, resp.AuthChain)
	if err != nil {
		return err
	}
	return a.inputOutliers(ctx, evs)
}

// fetchMissingPrevs asks origin for the events between this server's forward
// extremities and ev with get_missing_events, and inputs them oldest first (each
// bridging any further gap with state, never with another get_missing_events).
func (a *API) fetchMissingPrevs(ctx context.Context, origin string, ev *events.Event) error {
	exts, err := a.rs.ForwardExtremities(ctx, ev.RoomID())
	if err != nil {
		return err
	}
	extEvs, err := a.rs.Events(ctx, exts)
	if err != nil {
		return err
	}
	minDepth := int64(0)
	for i, e := range extEvs {
		if i == 0 || e.Depth() < minDepth {
			minDepth = e.Depth()
		}
	}
	resp, err := a.client.GetMissingEvents(ctx, &federation.ReqGetMissingEvents{
		ServerName: origin, RoomID: ev.RoomID(), EarliestEvents: exts, LatestEvents: []id.EventID{ev.ID()},
		Limit: missingEventsLimit, MinDepth: int(minDepth),
	})
	if err != nil {
		return err
	}
	if resp == nil {
		return errors.New("empty get_missing_events response")
	}
	evs, err := a.verifyNew(ctx, ev.RoomID(), ev.Version().ID, resp.Events)
	if err != nil {
		return err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	for _, e := range evs {
		if e.ID() == ev.ID() {
			continue
		}
		if err := a.handlePDU(ctx, origin, e, false); err != nil {
			slog.Info("missing event not accepted", "event_id", e.ID(), "err", err)
		}
	}
	return nil
}

// statesAcrossGap returns, for each prev event of ev that cannot be had with
// its state, the state after it as origin tells it (/state_ids, then the events
// not known, by /event or all at once by /state), stored as outliers; the
// engine resolves the state before ev from them (InputEventWithState).
func (a *API) statesAcrossGap(ctx context.Context, origin string, ev *events.Event, prevs []id.EventID) (map[id.EventID][]id.EventID, error) {
	if len(prevs) > maxGapPrevs {
		return nil, fmt.Errorf("event %s has %d missing prev events, more than %d", ev.ID(), len(prevs), maxGapPrevs)
	}
	prevStates := make(map[id.EventID][]id.EventID, len(prevs))
	for _, p := range prevs {
		st, err := a.stateAfter(ctx, origin, ev.RoomID(), ev.Version().ID, p)
		if err != nil {
			return nil, fmt.Errorf("fetching the state after %s: %w", p, err)
		}
		prevStates[p] = st
	}
	return prevStates, nil
}

// stateAfter fetches the state after event p from origin, storing what is missing
// as outliers, and returns it as event IDs. State events that cannot be had (not
// served, or not storable because their own auth events are missing) are left
// out of the state: they are a reason to distrust it, not to stop, and an event
// that needed them fails the auth rules against it.
func (a *API) stateAfter(ctx context.Context, origin string, roomID id.RoomID, version id.RoomVersion, p id.EventID) ([]id.EventID, error) {
	ids, err := a.client.GetStateIDs(ctx, origin, roomID, p)
	if err != nil {
		return nil, err
	}
	if ids == nil {
		return nil, errors.New("empty state_ids response")
	}
	need := make([]id.EventID, 0, len(ids.PDUs)+len(ids.AuthChain)+1)
	need = append(need, p)
	need = append(need, ids.PDUs...)
	need = append(need, ids.AuthChain...)
	known, err := a.rs.Events(ctx, need)
	if err != nil {
		return nil, err
	}
	have := make(map[id.EventID]struct{}, len(known))
	for _, k := range known {
		have[k.ID()] = struct{}{}
	}
	var unknown []id.EventID
	for _, x := range need {
		if _, ok := have[x]; !ok {
			have[x] = struct{}{}
			unknown = append(unknown, x)
		}
	}
	var raws []json.RawMessage
	switch {
	case len(unknown) > maxEventFetches:
		full, err := a.client.GetState(ctx, origin, roomID, p)
		if err != nil {
			return nil, err
		}
		if full != nil {
			raws = append(append(raws, full.PDUs...), full.AuthChain...)
		}
		if !containsID(known, p) {
			if r, err := a.fetchEvent(ctx, origin, p); err == nil {
				raws = append(raws, r)
			}
		}
	default:
		raws = a.fetchEvents(ctx, origin, unknown)
	}
	evs, err := a.verifyNew(ctx, roomID, version, raws)
	if err != nil {
		return nil, err
	}
	if err := a.inputOutliers(ctx, evs); err != nil {
		return nil, err
	}
	// The state after p is the state before it with p applied.
	pe, err := a.rs.Event(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("prev event %s: %w", p, err)
	}
	stateEvs, err := a.rs.Events(ctx, ids.PDUs)
	if err != nil {
		return nil, err
	}
	if len(stateEvs) < len(ids.PDUs) {
		slog.Info("state events not to be had", "origin", origin, "room_id", roomID, "at", p, "missing", len(ids.PDUs)-len(stateEvs))
	}
	out := make([]id.EventID, 0, len(stateEvs)+1)
	replace := pe.IsState() && !pe.Rejected
	if replace {
		out = append(out, p)
	}
	for _, se := range stateEvs {
		if replace && se.IsState() && se.Type() == pe.Type() && *se.StateKey() == *pe.StateKey() {
			continue
		}
		out = append(out, se.ID())
	}
	return out, nil
}

// fetchAuthEvents fetches the auth events of ev that are not stored (missingIDs)
// and stores them as outliers: ev's auth chain by /event_auth, then any still
// missing one by one by /event. What cannot be had is logged; the caller sees it
// when it inputs ev again.
func (a *API) fetchAuthEvents(ctx context.Context, origin string, ev *events.Event, missingIDs []id.EventID) {
	if err := a.fetchAuthChain(ctx, origin, ev); err != nil {
		slog.Info("fetching auth chain failed", "origin", origin, "event_id", ev.ID(), "err", err)
	}
	known, err := a.rs.Events(ctx, missingIDs)
	if err != nil {
		slog.Warn("looking up fetched auth events", "event_id", ev.ID(), "err", err)
		return
	}
	still := make([]id.EventID, 0, len(missingIDs))
	for _, x := range missingIDs {
		if !containsID(known, x) {
			still = append(still, x)
		}
	}
	if len(still) == 0 {
		return
	}
	if len(still) > maxEventFetches {
		still = still[:maxEventFetches]
	}
	evs, err := a.verifyNew(ctx, ev.RoomID(), ev.Version().ID, a.fetchEvents(ctx, origin, still))
	if err == nil {
		err = a.inputOutliers(ctx, evs)
	}
	if err != nil {
		slog.Warn("storing fetched auth events", "event_id", ev.ID(), "err", err)
	}
}

// fetchEvents gets events from origin with /event, several at a time, leaving
// out those it cannot get.
func (a *API) fetchEvents(ctx context.Context, origin string, ids []id.EventID) []json.RawMessage {
	raws := make([]json.RawMessage, 0, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, x := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r, err := a.fetchEvent(ctx, origin, x)
			if err != nil {
				slog.Info("fetching event failed", "origin", origin, "event_id", x, "err", err)
				return
			}
			mu.Lock()
			raws = append(raws, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return raws
}

// fetchEvent gets one event from origin with /event.
func (a *API) fetchEvent(ctx context.Context, origin string, eventID id.EventID) (json.RawMessage, error) {
	resp, err := a.client.GetEvent(ctx, origin, eventID)
	if err != nil {
		return nil, err
	}
	if resp == nil || len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("event %s: expected one PDU", eventID)
	}
	return resp.PDUs[0], nil
}

func containsID(evs []*roomserver.StoredEvent, x id.EventID) bool {
	for _, e := range evs {
		if e.ID() == x {
			return true
		}
	}
	return false
}
