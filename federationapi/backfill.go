package federationapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
)

// Client-side backfill: fetching a room's older history from another server when
// a client pages back past the oldest event this server has (Server-Server API,
// "Backfilling and retrieving missing events").

const (
	// maxBackfillPoints bounds the events a /backfill request starts from.
	maxBackfillPoints = 20
	// maxBackfillServers bounds how many servers one backfill tries.
	maxBackfillServers = 5
	// maxBackfillAuthFetches bounds the /event_auth requests one backfill makes
	// for events citing auth events nobody here has.
	maxBackfillAuthFetches = 5
	// backfillRetryAfter is how long a backfill that found nothing is not retried
	// for the room (clients paging at the start of a room ask again and again).
	backfillRetryAfter = 30 * time.Second
	// backfillTimeout bounds one backfill, which a client's /messages waits for.
	backfillTimeout = 20 * time.Second
	// maxBackfillRounds bounds the /backfill requests one backfill makes to
	// gather limit events (a server answers at most maxBackfillLimit a time,
	// Synapse 100).
	maxBackfillRounds = 5
)

// backfillMisses remembers, per API and room, when a backfill last found nothing.
var backfillMisses sync.Map // backfillKey → time.Time

type backfillKey struct {
	a    *API
	room id.RoomID
}

// BackfillRoom fetches up to limit events of roomID's history older than what
// this server has (or missing from the middle of it) from a server in the room,
// checks them (signatures and content hashes here, the auth rules in the room
// engine) and stores them as historical events. It asks again, up to
// maxBackfillRounds times, while the server answers and limit is not reached.
// It returns how many events joined the timeline; 0 when the timeline already
// reaches the create event or no server had anything.
func (a *API) BackfillRoom(ctx context.Context, roomID id.RoomID, limit int) (int, error) {
	key := backfillKey{a, roomID}
	if t, ok := backfillMisses.Load(key); ok && time.Since(t.(time.Time)) < backfillRetryAfter {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, backfillTimeout)
	defer cancel()
	points, err := a.rs.BackfillPoints(ctx, roomID, maxBackfillPoints)
	if err != nil || len(points) == 0 {
		return 0, err
	}
	v, err := a.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	servers, err := a.serversInRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	limit = max(1, min(limit, maxBackfillRounds*maxBackfillLimit))
	var errs []error
	tried := 0
	for _, server := range servers {
		if server == a.serverName {
			continue
		}
		if tried++; tried > maxBackfillServers {
			break
		}
		n, err := a.backfillFrom(ctx, server, roomID, v.ID, points, min(limit, maxBackfillLimit))
		if err != nil {
			errs = append(errs, fmt.Errorf("backfilling %s from %s: %w", roomID, server, err))
			continue
		}
		if n > 0 {
			backfillMisses.Delete(key)
			return n + a.backfillMore(ctx, server, roomID, v.ID, limit-n), nil
		}
	}
	backfillMisses.Store(key, time.Now())
	return 0, errors.Join(errs...)
}

// backfillMore goes on backfilling from server, which had history, until want
// more events are stored, the server has none left or maxBackfillRounds is
// reached. Failures end it quietly: what arrived is kept.
func (a *API) backfillMore(ctx context.Context, server string, roomID id.RoomID, version id.RoomVersion, want int) int {
	total := 0
	for round := 1; total < want && round < maxBackfillRounds && ctx.Err() == nil; round++ {
		points, err := a.rs.BackfillPoints(ctx, roomID, maxBackfillPoints)
		if err != nil || len(points) == 0 {
			break
		}
		n, err := a.backfillFrom(ctx, server, roomID, version, points, min(want-total, maxBackfillLimit))
		if err != nil {
			slog.Info("backfilling more history failed", "room_id", roomID, "server", server, "err", err)
			break
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total
}

// backfillFrom asks one server for the events before points and stores them.
func (a *API) backfillFrom(ctx context.Context, server string, roomID id.RoomID, version id.RoomVersion, points []id.EventID, limit int) (int, error) {
	resp, err := a.client.Backfill(ctx, &federation.ReqBackfill{ServerName: server, RoomID: roomID, Limit: limit, BackfillFrom: points})
	if err != nil {
		return 0, err
	}
	if resp == nil || len(resp.PDUs) == 0 {
		return 0, nil
	}
	parsed := make([]*events.Event, 0, len(resp.PDUs))
	ids := make([]id.EventID, 0, len(resp.PDUs))
	for _, raw := range resp.PDUs {
		ev, err := events.Parse(version, raw)
		if err != nil || ev.RoomID() != roomID {
			continue
		}
		parsed = append(parsed, ev)
		ids = append(ids, ev.ID())
	}
	known, err := a.rs.Events(ctx, ids)
	if err != nil {
		return 0, err
	}
	stored := make(map[id.EventID]bool, len(known)) // ID → in the timeline
	for _, k := range known {
		stored[k.ID()] = !k.Outlier
	}
	// Outliers were checked when they were stored; new events are checked now.
	batch := make([]*events.Event, 0, len(parsed))
	fresh := make([]*events.Event, 0, len(parsed))
	for _, ev := range parsed {
		inTimeline, ok := stored[ev.ID()]
		switch {
		case inTimeline:
		case ok:
			batch = append(batch, ev)
		default:
			fresh = append(fresh, ev)
		}
	}
	batch = append(batch, a.verifyParsedBatch(ctx, fresh)...)
	if len(batch) == 0 {
		return 0, nil
	}
	if err := a.fetchBackfillAuth(ctx, server, batch); err != nil {
		slog.Info("fetching auth events of backfilled events", "room_id", roomID, "server", server, "err", err)
	}
	res, err := a.rs.InputBackfilledEvents(ctx, roomID, batch)
	if err != nil {
		return 0, err
	}
	slog.Info("backfilled", "room_id", roomID, "server", server, "received", len(resp.PDUs), "stored", len(res.Stored),
		"rejected", res.Rejected, "missing_auth", len(res.MissingAuth))
	return len(res.Stored), nil
}

// fetchBackfillAuth stores, as outliers, the auth chains of batch events citing
// auth events that are neither in the batch nor stored here.
func (a *API) fetchBackfillAuth(ctx context.Context, server string, batch []*events.Event) error {
	inBatch := make(map[id.EventID]struct{}, len(batch))
	for _, ev := range batch {
		inBatch[ev.ID()] = struct{}{}
	}
	var cited []id.EventID
	citedBy := map[id.EventID]*events.Event{}
	for _, ev := range batch {
		for _, x := range ev.AuthEventIDs() {
			if _, ok := inBatch[x]; ok {
				continue
			}
			if _, ok := citedBy[x]; !ok {
				citedBy[x] = ev
				cited = append(cited, x)
			}
		}
	}
	if len(cited) == 0 {
		return nil
	}
	have, err := a.rs.Events(ctx, cited)
	if err != nil {
		return err
	}
	for _, h := range have {
		delete(citedBy, h.ID())
	}
	done := map[id.EventID]struct{}{}
	var errs []error
	for _, x := range cited {
		ev, ok := citedBy[x]
		if !ok {
			continue
		}
		if _, ok := done[ev.ID()]; ok {
			continue
		}
		if len(done) == maxBackfillAuthFetches {
			break
		}
		done[ev.ID()] = struct{}{}
		if err := a.fetchAuthChain(ctx, server, ev); err != nil {
			errs = append(errs, fmt.Errorf("auth chain of %s: %w", ev.ID(), err))
		}
	}
	return errors.Join(errs...)
}
