package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// Thread subscriptions (MSC4306, under its unstable prefix
// io.element.msc4306): a user subscribes to a thread by the ID of its root
// event, manually or automatically (a client that saw a mention in the
// thread, naming that "cause" event). Unsubscribing records the event stream
// position at that moment, and an automatic subscription whose cause event is
// not newer than it is refused with 409 (MSC4306, "Server-side automatic
// subscription ordering"), so a stale device cannot undo the user's choice.

// threadSubsPrefix is the unstable path prefix of the endpoints.
var threadSubsPrefix = []string{"unstable/io.element.msc4306"}

// The MSC's error codes, under their unstable names.
const (
	errcodeNotInThread             = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"
	errcodeConflictingUnsubscribed = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION"
)

func (a *API) registerThreadSubscriptionRoutes(r *mux.Router) {
	if a.opts.Roomserver == nil {
		return
	}
	// {eventId:.+}: event IDs of room versions 3+ may hold '/'.
	const path = "/rooms/{roomId}/thread/{eventId:.+}/subscription"
	handle(r, threadSubsPrefix, path, a.authed(a.getThreadSubscription, 0), http.MethodGet)
	handle(r, threadSubsPrefix, path, a.authed(a.putThreadSubscription, 0), http.MethodPut)
	handle(r, threadSubsPrefix, path, a.authed(a.deleteThreadSubscription, 0), http.MethodDelete)
}

// threadRoot resolves the {roomId} and {eventId} of a request to a thread
// root the requester may see (404 M_NOT_FOUND otherwise).
func (a *API) threadRoot(ctx context.Context, d *Device, r *http.Request) (*roomserver.StoredEvent, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	root, err := a.visibleEvent(ctx, d, roomID, r)
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) && me.ErrCode == "M_NOT_FOUND" {
			return nil, httputil.NotFound("Unknown thread")
		}
		return nil, err
	}
	return root, nil
}

// GET …/rooms/{roomId}/thread/{eventId}/subscription
func (a *API) getThreadSubscription(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	root, err := a.threadRoot(ctx, d, r)
	if err != nil {
		return err
	}
	var subscribed, automatic bool
	err = a.db.QueryRow(ctx, `SELECT subscribed, automatic FROM thread_subscriptions
		WHERE user_id = $1 AND room_id = $2 AND thread_root_id = $3`,
		string(d.UserID), string(root.RoomID()), string(root.ID())).Scan(&subscribed, &automatic)
	if isNoRows(err) || (err == nil && !subscribed) {
		return httputil.NotFound("You are not subscribed to this thread")
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]bool{"automatic": automatic})
	return nil
}

// PUT …/rooms/{roomId}/thread/{eventId}/subscription
func (a *API) putThreadSubscription(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	var body struct {
		// Automatic is the cause event of an automatic subscription.
		Automatic *string `json:"automatic"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	root, err := a.threadRoot(ctx, d, r)
	if err != nil {
		return err
	}
	user, room, rootID := string(d.UserID), string(root.RoomID()), string(root.ID())
	if body.Automatic == nil {
		// Manual subscriptions take precedence over automatic ones.
		_, err := a.db.Exec(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, thread_root_id, subscribed, automatic, unsubscribed_pos, updated_ts)
			VALUES ($1, $2, $3, TRUE, FALSE, NULL, $4)
			ON CONFLICT (user_id, room_id, thread_root_id) DO UPDATE SET subscribed = TRUE, automatic = FALSE, unsubscribed_pos = NULL, updated_ts = excluded.updated_ts`,
			user, room, rootID, nowMS())
		if err != nil {
			return internalErr(err)
		}
		httputil.RespondJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	cause, err := a.threadCause(ctx, d, root, *body.Automatic)
	if err != nil {
		return err
	}
	// Subscribe unless subscribed already (an existing subscription stays as
	// it is) or unsubscribed at or after the cause event.
	res, err := a.db.Exec(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, thread_root_id, subscribed, automatic, unsubscribed_pos, updated_ts)
		VALUES ($1, $2, $3, TRUE, TRUE, NULL, $5)
		ON CONFLICT (user_id, room_id, thread_root_id) DO UPDATE SET subscribed = TRUE, automatic = TRUE, unsubscribed_pos = NULL, updated_ts = excluded.updated_ts
		WHERE thread_subscriptions.subscribed = FALSE AND (thread_subscriptions.unsubscribed_pos IS NULL OR thread_subscriptions.unsubscribed_pos < $4)`,
		user, room, rootID, cause.StreamPos, nowMS())
	if err != nil {
		return internalErr(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return internalErr(err)
	} else if n == 0 {
		var subscribed bool
		if err := a.db.QueryRow(ctx, `SELECT subscribed FROM thread_subscriptions WHERE user_id = $1 AND room_id = $2 AND thread_root_id = $3`,
			user, room, rootID).Scan(&subscribed); err != nil && !isNoRows(err) {
			return internalErr(err)
		}
		if !subscribed {
			return &httputil.Error{Status: http.StatusConflict, ErrCode: errcodeConflictingUnsubscribed,
				Message: "You unsubscribed from this thread after the event that would subscribe you"}
		}
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// threadCause loads the cause event of an automatic subscription: an event of
// the thread (not its root) the requester may see.
func (a *API) threadCause(ctx context.Context, d *Device, root *roomserver.StoredEvent, causeID string) (*roomserver.StoredEvent, error) {
	if len(causeID) < 2 || len(causeID) > 255 || causeID[0] != '$' {
		return nil, httputil.InvalidParam("automatic must be an event ID")
	}
	cause, err := a.opts.Roomserver.Event(ctx, id.EventID(causeID))
	if errors.Is(err, roomserver.ErrEventNotFound) {
		return nil, httputil.NotFound("Unknown event %s", causeID)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	if vis, err := a.visibleToDevice(ctx, d, []*roomserver.StoredEvent{cause}); err != nil {
		return nil, internalErr(err)
	} else if len(vis) == 0 {
		return nil, httputil.NotFound("Unknown event %s", causeID)
	}
	rel := gjson.GetBytes(cause.Content(), "m\\.relates_to")
	if cause.RoomID() != root.RoomID() || rel.Get("rel_type").Str != "m.thread" || rel.Get("event_id").Str != string(root.ID()) {
		return nil, &httputil.Error{Status: http.StatusBadRequest, ErrCode: errcodeNotInThread,
			Message: "The automatic subscription's cause event is not in this thread"}
	}
	return cause, nil
}

// DELETE …/rooms/{roomId}/thread/{eventId}/subscription
func (a *API) deleteThreadSubscription(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	root, err := a.threadRoot(ctx, d, r)
	if err != nil {
		return err
	}
	// Every event stored so far is at or before this position; automatic
	// subscriptions caused by them are refused from now on.
	pos := a.opts.Roomserver.StreamPosition()
	if _, err := a.db.Exec(ctx, `UPDATE thread_subscriptions SET subscribed = FALSE, automatic = FALSE, unsubscribed_pos = $4, updated_ts = $5
		WHERE user_id = $1 AND room_id = $2 AND thread_root_id = $3`,
		string(d.UserID), string(root.RoomID()), string(root.ID()), pos, nowMS()); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}
