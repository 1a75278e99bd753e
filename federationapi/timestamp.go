package federationapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// Jump to date across servers (Server-Server API, GET
// /_matrix/federation/v1/timestamp_to_event/{roomId}): answering other servers
// from this server's timeline, and asking other servers when this server's
// history may be missing the event closest to a timestamp.

const (
	// maxTimestampServers bounds how many servers one search asks.
	maxTimestampServers = 5
	// timestampTimeout bounds one search, which a client's request waits for;
	// timestampServerTimeout one server's answer, so that a server that is
	// down leaves time to ask the next.
	timestampTimeout       = 15 * time.Second
	timestampServerTimeout = 5 * time.Second
)

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=
//
// The answer comes from this server's timeline only, never from other
// servers. A server may ask when it has a user in the room, or when the
// room is world_readable; the room's server ACL applies.
func (a *API) getTimestampToEvent(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return httputil.InvalidParam("ts must be a timestamp in milliseconds")
	}
	var dir roomserver.Direction
	switch q.Get("dir") {
	case "f":
		dir = roomserver.Forward
	case "b":
		dir = roomserver.Backward
	case "":
		return httputil.MissingParam("dir is required (b or f)")
	default:
		return httputil.InvalidParam("dir must be b or f")
	}
	if err := a.roomOf(ctx, roomID); err != nil {
		return err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	if err := a.requireJoinedOrWorldReadable(ctx, roomID, origin); err != nil {
		return err
	}
	e, err := a.rs.EventNearTimestamp(ctx, roomID, ts, dir)
	if err != nil {
		return err
	}
	if e == nil {
		return httputil.NotFound("No event found from %d in direction %c", ts, dir)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"event_id": e.ID(), "origin_server_ts": e.OriginServerTS()})
	return nil
}

// requireJoinedOrWorldReadable refuses origin unless it has a user joined to
// roomID or the room's history is world_readable.
func (a *API) requireJoinedOrWorldReadable(ctx context.Context, roomID id.RoomID, origin string) error {
	ok, err := a.rs.ServerJoined(ctx, roomID, "", origin)
	if err != nil || ok {
		return err
	}
	hv, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.history_visibility", "")
	if err != nil {
		return err
	}
	if hv != nil && gjson.GetBytes(hv.Content(), "history_visibility").Str == "world_readable" {
		return nil
	}
	return httputil.Forbidden("Server %s is not in room %s", origin, roomID)
}

// RemoteEventNearTimestamp asks the other servers in roomID, those in the room
// the longest first, for the event closest to ts in direction dir (Server-Server
// API, GET /timestamp_to_event). The first answer closer to ts than local (this
// server's own answer; nil when it has none) is fetched with /event, checked
// and stored in the timeline as backfilled history, so that clients can page
// around it with /context and /messages; it is returned. It returns nil when
// no server knows a closer event; errors say which servers failed.
func (a *API) RemoteEventNearTimestamp(ctx context.Context, roomID id.RoomID, ts int64, dir roomserver.Direction, local *roomserver.StoredEvent) (*roomserver.StoredEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, timestampTimeout)
	defer cancel()
	servers, err := a.serversByJoinAge(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, server := range servers {
		if i == maxTimestampServers || ctx.Err() != nil {
			break
		}
		e, err := a.timestampFrom(ctx, server, roomID, ts, dir, local)
		if err != nil {
			errs = append(errs, fmt.Errorf("asking %s: %w", server, err))
			continue
		}
		if e != nil {
			return e, nil
		}
	}
	return nil, errors.Join(errs...)
}

// timestampFrom asks one server for the event closest to ts and, when it is
// closer than local, pulls it into the timeline. nil when the server has no
// closer event.
func (a *API) timestampFrom(ctx context.Context, server string, roomID id.RoomID, ts int64, dir roomserver.Direction, local *roomserver.StoredEvent) (*roomserver.StoredEvent, error) {
	askCtx, cancel := context.WithTimeout(ctx, timestampServerTimeout)
	resp, err := a.client.TimestampToEvent(askCtx, server, roomID, time.UnixMilli(ts), mautrix.Direction(dir))
	cancel()
	if httpStatus(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if resp == nil || !strings.HasPrefix(string(resp.EventID), "$") || resp.Timestamp.IsZero() {
		return nil, errors.New("malformed timestamp_to_event response")
	}
	// The Server-Server API: whether the answer is closer than the local one is
	// decided by the origin_server_ts it reports, before fetching it.
	if !closerToTimestamp(resp.Timestamp.UnixMilli(), ts, dir, local) {
		return nil, nil
	}
	e, err := a.pullEvent(ctx, server, roomID, resp.EventID)
	if err != nil {
		return nil, err
	}
	if e.OriginServerTS() != resp.Timestamp.UnixMilli() {
		slog.Info("timestamp_to_event answer misreported the event's timestamp", "server", server, "event_id", e.ID(),
			"reported", resp.Timestamp.UnixMilli(), "actual", e.OriginServerTS())
		if !closerToTimestamp(e.OriginServerTS(), ts, dir, local) {
			return nil, nil
		}
	}
	return e, nil
}

// closerToTimestamp reports whether an event sent at eventTS lies in direction
// dir from ts and closer to it than local (nil: any such event is closer).
func closerToTimestamp(eventTS, ts int64, dir roomserver.Direction, local *roomserver.StoredEvent) bool {
	if dir == roomserver.Forward && eventTS < ts || dir == roomserver.Backward && eventTS > ts {
		return false
	}
	if local == nil {
		return true
	}
	return absDiff(eventTS, ts) < absDiff(local.OriginServerTS(), ts)
}

func absDiff(x, y int64) int64 {
	if x > y {
		return x - y
	}
	return y - x
}

// pullEvent makes eventID of roomID a timeline event here: fetched from server
// with /event when unknown, checked (signatures and hashes here; the auth rules,
// and the state before it when known, in the room engine) and stored as
// backfilled history (roomserver.InputBackfilledEvents). An outlier joins the
// timeline the same way. Auth events this server lacks are fetched first.
func (a *API) pullEvent(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) (*roomserver.StoredEvent, error) {
	var ev *events.Event
	have, err := a.rs.Event(ctx, eventID)
	switch {
	case err == nil && have.RoomID() != roomID:
		return nil, fmt.Errorf("event %s is not in room %s", eventID, roomID)
	case err == nil && !have.Outlier:
		if have.Rejected || have.SoftFailed {
			return nil, fmt.Errorf("event %s was not accepted here", eventID)
		}
		return have, nil
	case err == nil:
		ev = have.Event
	case errors.Is(err, roomserver.ErrEventNotFound):
		if ev, err = a.fetchRoomEvent(ctx, server, roomID, eventID); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	res, err := a.rs.InputBackfilledEvents(ctx, roomID, []*events.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(res.MissingAuth) > 0 {
		return nil, fmt.Errorf("event %s: auth events not to be had: %v", eventID, res.MissingAuth)
	}
	stored, err := a.rs.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if stored.Outlier || stored.Rejected {
		return nil, fmt.Errorf("event %s was not accepted here", eventID)
	}
	return stored, nil
}

// fetchRoomEvent fetches eventID from server, verifies it (steps 1–3 of
// "Checks performed on receipt of a PDU") and stores the auth events it cites
// that this server lacks, as outliers.
func (a *API) fetchRoomEvent(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) (*events.Event, error) {
	v, err := a.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	raw, err := a.fetchEvent(ctx, server, eventID)
	if err != nil {
		return nil, err
	}
	ev, err := a.safeVerify(ctx, v.ID, raw)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	if ev.ID() != eventID || ev.RoomID() != roomID {
		return nil, fmt.Errorf("asked for event %s of %s, got %s of %s", eventID, roomID, ev.ID(), ev.RoomID())
	}
	authIDs := ev.AuthEventIDs()
	known, err := a.rs.Events(ctx, authIDs)
	if err != nil {
		return nil, err
	}
	if len(known) < len(authIDs) {
		missing := make([]id.EventID, 0, len(authIDs)-len(known))
		for _, x := range authIDs {
			if !containsID(known, x) {
				missing = append(missing, x)
			}
		}
		a.fetchAuthEvents(ctx, server, ev, missing)
	}
	return ev, nil
}

// serversByJoinAge returns the servers, other than this one, with users joined
// to roomID, those in the room the longest first: whom the Server-Server API
// suggests asking about history first.
func (a *API) serversByJoinAge(ctx context.Context, roomID id.RoomID) ([]string, error) {
	servers, err := a.rs.JoinedServersByAge(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(servers, func(s string) bool { return s == a.serverName }), nil
}
