package clientapi

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/storage"
)

// Delayed events (MSC4140, under its unstable names): PUT /send and PUT
// /state with ?org.matrix.msc4140.delay=<ms> schedule the event instead of
// sending it and answer with a delay_id. The server sends it when the delay
// has passed (the auth rules are applied then, not when it is scheduled);
// until then it can be listed (GET …/delayed_events), cancelled, sent at once
// or restarted (its delay counted again from now). The management actions
// take the delay_id as their only credential (POST
// …/delayed_events/{delay_id}/{action}, no access token), so that a service
// such as a call's SFU can keep a user's "hang up" event from being sent while
// the user is connected; the older authenticated form with the action in the
// body is served too.
//
// Scheduled events live in the delayed_events table: a restart loses none, and
// those due while the server was down are sent at start in order of their send
// time. One goroutine sends due events; every send first claims the row (a
// conditional UPDATE), so with several processes on one database each event
// is sent once. A state change by another user cancels the delayed state
// events of the same type and state key (MSC4140, "Delayed state events are
// cancelled by a more recent state event").

// delayedPrefix is the unstable path prefix of the management endpoints.
var delayedPrefix = []string{"unstable/org.matrix.msc4140"}

const (
	// delayQueryParam is the query parameter of PUT /send and /state.
	delayQueryParam = "org.matrix.msc4140.delay"
	// delayedRetention is how long finalised delayed events are kept.
	delayedRetention = 7 * 24 * time.Hour
	// delayedBatch bounds the due events read at once.
	delayedBatch = 100
)

// The outcomes and reasons of finalised delayed events.
const (
	outcomeSend   = "send"
	outcomeCancel = "cancel"
	reasonAction  = "action"
	reasonDelay   = "delay"
	reasonError   = "error"
)

// delayedEvents schedules and sends delayed events.
type delayedEvents struct {
	a          *API
	db         *storage.DB
	maxDelay   int64
	maxPerUser int

	wake chan struct{} // a schedule or restart may have moved the next send time
	stop chan struct{}
	done sync.WaitGroup
	once sync.Once

	// locks serialises work on one delayed event (the timer, send, cancel).
	locks keyedMutex

	// stateChanges queues room state changes for the canceller.
	stateMu      sync.Mutex
	stateChanges []stateChange
	stateWake    chan struct{}
}

// stateChange is a room state change that may cancel delayed state events.
type stateChange struct {
	roomID         id.RoomID
	evType, key    string
	sender         id.UserID
	changedAtMilli int64
}

// delayedEvent is one row of delayed_events.
type delayedEvent struct {
	delayID      string
	userID       id.UserID
	deviceID     id.DeviceID
	roomID       id.RoomID
	evType       string
	stateKey     *string
	content      []byte
	delayMS      int64
	runningSince int64
	sendTS       int64
	finalisedTS  sql.NullInt64
	outcome      sql.NullString
}

// registerDelayedEventRoutes serves the management endpoints and starts the
// scheduler, when delayed events are on (delayed_events.max_delay_ms > 0).
func (a *API) registerDelayedEventRoutes(r *mux.Router) {
	if a.opts.Roomserver == nil || a.cfg.DelayedEvents.MaxDelayMS <= 0 {
		return
	}
	de := &delayedEvents{
		a: a, db: a.db, maxDelay: a.cfg.DelayedEvents.MaxDelayMS, maxPerUser: a.cfg.DelayedEvents.MaxPerUser,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stateWake: make(chan struct{}, 1),
	}
	a.delayed = de
	handle(r, delayedPrefix, "/delayed_events", a.authed(a.listDelayedEvents, allowGuests), http.MethodGet)
	handle(r, delayedPrefix, "/delayed_events/{delayId}", a.authed(a.updateDelayedEvent, allowGuests), http.MethodPost)
	handle(r, delayedPrefix, "/delayed_events/{delayId}/{action:cancel|restart|send}", a.public(a.delayedEventAction), http.MethodPost)
	a.opts.Roomserver.AddListener(de.onEvent)
	de.done.Add(2)
	go de.run()
	go de.cancelOnStateChanges()
}

// Close stops the client API's background work (the delayed-event
// scheduler, letting a send in progress finish; push delivery, whose queued
// notifications are dropped).
func (a *API) Close() {
	if a.delayed != nil {
		a.delayed.close()
	}
	a.push.close()
}

func (de *delayedEvents) close() {
	de.once.Do(func() { close(de.stop) })
	de.done.Wait()
}

// poke wakes the scheduler to look at the next send time again.
func (de *delayedEvents) poke() {
	select {
	case de.wake <- struct{}{}:
	default:
	}
}

// delayedSend answers PUT /send and PUT /state when they carry the delay
// parameter: it schedules the event and reports true; without the parameter
// it reports false and the caller sends the event at once.
func (a *API) delayedSend(w http.ResponseWriter, r *http.Request, d *Device, state bool) (bool, error) {
	q := r.URL.Query()
	if !q.Has(delayQueryParam) {
		return false, nil
	}
	de := a.delayed
	if de == nil {
		return true, httputil.InvalidParam("Delayed events are not enabled on this server")
	}
	delay, err := strconv.ParseInt(q.Get(delayQueryParam), 10, 64)
	if err != nil || delay < 0 {
		return true, httputil.InvalidParam("%s must be a non-negative number of milliseconds", delayQueryParam)
	}
	if delay > de.maxDelay {
		// MSC4140, "Unstable prefix": M_MAX_DELAY_EXCEEDED travels in M_UNKNOWN.
		return true, httputil.Unknown("The requested delay exceeds the allowed maximum").
			With("org.matrix.msc4140.errcode", "M_MAX_DELAY_EXCEEDED").With("org.matrix.msc4140.max_delay", de.maxDelay)
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return true, err
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		return true, err
	}
	ctx := r.Context()
	var stateKey *string
	var txnKey sql.NullString
	if state {
		sk := mux.Vars(r)["stateKey"]
		if len(sk) > 255 {
			return true, httputil.InvalidParam("State keys must be at most 255 bytes")
		}
		stateKey = &sk
	} else {
		txn, err := txnParam(r)
		if err != nil {
			return true, err
		}
		txnKey = sql.NullString{String: string(roomID) + "\x1f" + evType + "\x1f" + txn, Valid: true}
		// A retry gets the first request's answer, whatever its body.
		if delayID, err := de.byTxn(ctx, d, txnKey.String); err != nil {
			return true, internalErr(err)
		} else if delayID != "" {
			return true, respondDelayID(w, delayID)
		}
	}
	content, err := readContent(r)
	if err != nil {
		return true, err
	}
	if stateKey == nil || evType != "m.room.member" {
		if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
			return true, err
		}
	}
	delayID, err := de.schedule(ctx, d, roomID, evType, stateKey, content, delay, txnKey)
	if err != nil {
		return true, err
	}
	return true, respondDelayID(w, delayID)
}

func respondDelayID(w http.ResponseWriter, delayID string) error {
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"delay_id": delayID})
	return nil
}

// byTxn returns the delay ID a device's transaction was answered with ("" if
// none).
func (de *delayedEvents) byTxn(ctx context.Context, d *Device, txnKey string) (string, error) {
	var delayID string
	err := de.db.QueryRow(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND device_id = $2 AND txn_key = $3`,
		string(d.UserID), string(d.DeviceID), txnKey).Scan(&delayID)
	if isNoRows(err) {
		return "", nil
	}
	return delayID, err
}

// schedule stores a new delayed event and wakes the scheduler.
func (de *delayedEvents) schedule(ctx context.Context, d *Device, roomID id.RoomID, evType string, stateKey *string, content []byte, delay int64, txnKey sql.NullString) (string, error) {
	var n int
	if err := de.db.QueryRow(ctx, `SELECT COUNT(*) FROM delayed_events WHERE user_id = $1 AND finalised_ts IS NULL`, string(d.UserID)).Scan(&n); err != nil {
		return "", internalErr(err)
	}
	if n >= de.maxPerUser {
		return "", httputil.Unknown("The maximum number of delayed events has been reached").
			With("org.matrix.msc4140.errcode", "M_MAX_DELAYED_EVENTS_EXCEEDED")
	}
	delayID := newDelayID()
	now := nowMS()
	_, err := de.db.Exec(ctx, `INSERT INTO delayed_events (delay_id, user_id, device_id, txn_key, room_id, event_type, state_key, content, delay_ms, running_since, send_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		delayID, string(d.UserID), string(d.DeviceID), txnKey, string(roomID), evType, stateKey, content, delay, now, now+delay)
	if storage.IsUniqueViolation(err) && txnKey.Valid {
		// The same transaction, scheduled concurrently.
		if existing, err := de.byTxn(ctx, d, txnKey.String); err == nil && existing != "" {
			return existing, nil
		}
	}
	if err != nil {
		return "", internalErr(fmt.Errorf("scheduling a delayed event: %w", err))
	}
	de.poke()
	return delayID, nil
}

// delayIDAlphabet is what delay IDs are made of.
const delayIDAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// newDelayID returns a random delay ID. It is the only credential of the
// unauthenticated management endpoints: 24 characters of 62 (about 143 bits).
func newDelayID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = delayIDAlphabet[int(b[i])%len(delayIDAlphabet)]
	}
	return "syd_" + string(b[:])
}

// GET /unstable/org.matrix.msc4140/delayed_events
func (a *API) listDelayedEvents(w http.ResponseWriter, r *http.Request, d *Device) error {
	rows, err := a.db.Query(r.Context(), `SELECT delay_id, room_id, event_type, state_key, content, delay_ms, running_since
		FROM delayed_events WHERE user_id = $1 AND finalised_ts IS NULL ORDER BY send_ts, delay_id`, string(d.UserID))
	if err != nil {
		return internalErr(err)
	}
	defer rows.Close()
	type item struct {
		DelayID      string          `json:"delay_id"`
		RoomID       string          `json:"room_id"`
		Type         string          `json:"type"`
		StateKey     *string         `json:"state_key,omitempty"`
		Delay        int64           `json:"delay"`
		RunningSince int64           `json:"running_since"`
		Content      json.RawMessage `json:"content"`
	}
	out := []item{}
	for rows.Next() {
		var it item
		var content []byte
		if err := rows.Scan(&it.DelayID, &it.RoomID, &it.Type, &it.StateKey, &content, &it.Delay, &it.RunningSince); err != nil {
			return internalErr(err)
		}
		it.Content = content
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"delayed_events": out})
	return nil
}

// POST /unstable/org.matrix.msc4140/delayed_events/{delayId} with
// {"action": …}: the authenticated form, for the owner only.
func (a *API) updateDelayedEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	var body struct {
		Action *string `json:"action"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.Action == nil {
		return httputil.MissingParam("Missing action")
	}
	switch *body.Action {
	case "cancel", "restart", "send":
	default:
		return httputil.InvalidParam("action must be cancel, restart or send")
	}
	if err := a.delayed.act(r.Context(), mux.Vars(r)["delayId"], *body.Action, d.UserID); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}: no
// access token; the delay ID is the credential.
func (a *API) delayedEventAction(w http.ResponseWriter, r *http.Request) error {
	if err := decodeOptionalJSON(r, &struct{}{}); err != nil {
		return err
	}
	v := mux.Vars(r)
	if err := a.delayed.act(r.Context(), v["delayId"], v["action"], ""); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// errUnknownDelay answers actions on delay IDs that do not exist (or belong to
// someone else).
var errUnknownDelay = httputil.NotFound("Unknown delayed event")

// act cancels, restarts or sends a scheduled delayed event. owner, when set,
// must be the event's owner. Repeating an action that already took effect
// succeeds; one that conflicts with how the event was finalised gets 409.
func (de *delayedEvents) act(ctx context.Context, delayID, action string, owner id.UserID) error {
	if delayID == "" || len(delayID) > 255 {
		return errUnknownDelay
	}
	unlock := de.locks.lock(delayID)
	defer unlock()
	ev, err := de.load(ctx, delayID)
	if err != nil {
		return internalErr(err)
	}
	if ev == nil || (owner != "" && ev.userID != owner) {
		return errUnknownDelay
	}
	if ev.finalisedTS.Valid {
		if ev.outcome.String == action {
			return nil
		}
		return &httputil.Error{Status: http.StatusConflict, ErrCode: "M_UNKNOWN", Message: "The delayed event was already " + finalisedWord(ev.outcome.String)}
	}
	now := nowMS()
	switch action {
	case "cancel":
		if _, err := de.db.Exec(ctx, `UPDATE delayed_events SET finalised_ts = $2, outcome = $3, reason = $4 WHERE delay_id = $1 AND finalised_ts IS NULL`,
			delayID, now, outcomeCancel, reasonAction); err != nil {
			return internalErr(err)
		}
	case "restart":
		if _, err := de.db.Exec(ctx, `UPDATE delayed_events SET running_since = $2, send_ts = $2 + delay_ms WHERE delay_id = $1 AND finalised_ts IS NULL`,
			delayID, now); err != nil {
			return internalErr(err)
		}
		de.poke()
	case "send":
		claimed, err := de.claim(ctx, ev, reasonAction, false)
		if err != nil {
			return internalErr(err)
		}
		if !claimed {
			// The timer sent it, or a state change cancelled it, meanwhile.
			if ev, err = de.load(ctx, delayID); err != nil {
				return internalErr(err)
			}
			if ev != nil && ev.outcome.String == outcomeSend {
				return nil
			}
			return &httputil.Error{Status: http.StatusConflict, ErrCode: "M_UNKNOWN", Message: "The delayed event was already cancelled"}
		}
		eventID, err := de.send(context.WithoutCancel(ctx), ev)
		if err != nil {
			// MSC4140: the event stays scheduled, so the send can be retried.
			if _, uerr := de.db.Exec(context.WithoutCancel(ctx), `UPDATE delayed_events SET finalised_ts = NULL, outcome = NULL, reason = NULL WHERE delay_id = $1`, delayID); uerr != nil {
				logIfErr(ctx, "rescheduling a delayed event after a failed send", uerr)
			}
			return err
		}
		de.recordSent(context.WithoutCancel(ctx), delayID, eventID)
	}
	return nil
}

// isAppServiceSender reports whether userID is an application service's own
// user.
func isAppServiceSender(a *API, userID id.UserID) bool {
	for _, as := range a.opts.AppServices.All() {
		if as.Sender() == userID {
			return true
		}
	}
	return false
}

func finalisedWord(outcome string) string {
	if outcome == outcomeSend {
		return "sent"
	}
	return "cancelled"
}

// load reads a delayed event (nil if there is none).
func (de *delayedEvents) load(ctx context.Context, delayID string) (*delayedEvent, error) {
	ev := &delayedEvent{delayID: delayID}
	var user, device, room string
	err := de.db.QueryRow(ctx, `SELECT user_id, device_id, room_id, event_type, state_key, content, delay_ms, running_since, send_ts, finalised_ts, outcome
		FROM delayed_events WHERE delay_id = $1`, delayID).
		Scan(&user, &device, &room, &ev.evType, &ev.stateKey, &ev.content, &ev.delayMS, &ev.runningSince, &ev.sendTS, &ev.finalisedTS, &ev.outcome)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading delayed event %s: %w", delayID, err)
	}
	ev.userID, ev.deviceID, ev.roomID = id.UserID(user), id.DeviceID(device), id.RoomID(room)
	return ev, nil
}

// claim marks a scheduled event as being sent, reporting whether this call
// did so (and so must send it). With onTime, only an event still due at the
// send time read with it is claimed (a restart in between moves it).
func (de *delayedEvents) claim(ctx context.Context, ev *delayedEvent, reason string, onTime bool) (bool, error) {
	q := `UPDATE delayed_events SET finalised_ts = $2, outcome = $3, reason = $4 WHERE delay_id = $1 AND finalised_ts IS NULL`
	args := []any{ev.delayID, nowMS(), outcomeSend, reason}
	if onTime {
		q += ` AND send_ts = $5`
		args = append(args, ev.sendTS)
	}
	res, err := de.db.Exec(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("claiming delayed event %s: %w", ev.delayID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (de *delayedEvents) recordSent(ctx context.Context, delayID string, eventID id.EventID) {
	_, err := de.db.Exec(ctx, `UPDATE delayed_events SET event_id = $2 WHERE delay_id = $1`, delayID, string(eventID))
	logIfErr(ctx, "recording a sent delayed event", err)
}

// send sends a delayed event as its owner, with the checks PUT /send and PUT
// /state make at that moment.
func (de *delayedEvents) send(ctx context.Context, ev *delayedEvent) (id.EventID, error) {
	a := de.a
	lp, _, _ := ev.userID.ParseAndValidateRelaxed()
	d := &Device{UserID: ev.userID, Localpart: lp, DeviceID: ev.deviceID}
	// The account as it is now: a user deactivated since scheduling sends
	// nothing, and a guest stays held to the guest rules.
	switch acct, err := a.accounts.Get(ctx, lp); {
	case err == nil:
		if acct.Deactivated {
			return "", httputil.UserDeactivated("%s has been deactivated", ev.userID)
		}
		d.IsGuest = acct.IsGuest
	case accounts.IsNotFound(err):
		// Only an application service's sender acts without an account.
		if !isAppServiceSender(a, ev.userID) {
			return "", httputil.Forbidden("%s does not exist", ev.userID)
		}
	default:
		return "", internalErr(err)
	}
	if ev.stateKey == nil {
		return a.sendEvent(ctx, d, ev.roomID, ev.evType, nil, ev.content)
	}
	content := ev.content
	switch ev.evType {
	case "m.room.canonical_alias":
		if err := a.checkCanonicalAlias(ctx, ev.roomID, content); err != nil {
			return "", err
		}
	case "m.room.member":
		// The checks of PUT /state (messages.go putState), made now.
		if d.IsGuest && gjson.GetBytes(content, "membership").Str == "join" {
			if err := a.checkGuestJoin(ctx, ev.roomID); err != nil {
				return "", err
			}
		}
		if invitee := id.UserID(*ev.stateKey); gjson.GetBytes(content, "membership").Str == "invite" && invitee.Homeserver() == a.cfg.ServerName {
			if err := a.checkInvitePermission(ctx, invitee, ev.userID); err != nil {
				return "", err
			}
		}
		// join_authorised_via_users_server is the server's to choose: a
		// client-chosen one would let anyone join a restricted room by naming
		// a local user with invite power.
		var err error
		if content, err = a.memberStateContent(ctx, ev.roomID, ev.userID, *ev.stateKey, content); err != nil {
			return "", err
		}
	}
	eventID, err := a.sendEvent(ctx, d, ev.roomID, ev.evType, ev.stateKey, content)
	if err == nil && ev.evType == "m.room.guest_access" && *ev.stateKey == "" && gjson.GetBytes(content, "guest_access").Str != "can_join" {
		a.removeGuests(ctx, ev.roomID)
	}
	return eventID, err
}

// run sends due events until close, sleeping until the next send time or a
// poke; it also drops finalised events past their retention.
func (de *delayedEvents) run() {
	defer de.done.Done()
	ctx := context.Background()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastPrune time.Time
	for {
		wait := time.Hour
		next, err := de.sendDue(ctx)
		switch {
		case err != nil:
			slog.Error("sending delayed events", "err", err)
			wait = time.Second
		case next > 0:
			wait = min(wait, max(time.Until(time.UnixMilli(next)), 0))
		}
		if time.Since(lastPrune) > time.Hour {
			_, err := de.db.Exec(ctx, `DELETE FROM delayed_events WHERE finalised_ts IS NOT NULL AND finalised_ts < $1`,
				time.Now().Add(-delayedRetention).UnixMilli())
			logIfErr(ctx, "dropping old delayed events", err)
			lastPrune = time.Now()
		}
		timer.Reset(wait)
		select {
		case <-de.stop:
			return
		case <-de.wake: // Reset above discards a pending fire (Go 1.23 timers)
		case <-timer.C:
		}
	}
}

// sendDue sends every event whose send time has come, oldest first, and
// returns the next send time (0: none).
func (de *delayedEvents) sendDue(ctx context.Context) (int64, error) {
	for {
		select {
		case <-de.stop:
			return 0, nil
		default:
		}
		now := nowMS()
		rows, err := de.db.Query(ctx, `SELECT delay_id, send_ts FROM delayed_events WHERE finalised_ts IS NULL AND send_ts <= $1
			ORDER BY send_ts, delay_id LIMIT $2`, now, delayedBatch)
		if err != nil {
			return 0, fmt.Errorf("listing due delayed events: %w", err)
		}
		type due struct {
			id string
			ts int64
		}
		var batch []due
		for rows.Next() {
			var d due
			if err := rows.Scan(&d.id, &d.ts); err != nil {
				rows.Close()
				return 0, err
			}
			batch = append(batch, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		progress := false
		for _, d := range batch {
			progress = de.fire(ctx, d.id) || progress
		}
		if len(batch) < delayedBatch || !progress {
			break
		}
	}
	var next sql.NullInt64
	if err := de.db.QueryRow(ctx, `SELECT MIN(send_ts) FROM delayed_events WHERE finalised_ts IS NULL`).Scan(&next); err != nil {
		return 0, fmt.Errorf("reading the next delayed event: %w", err)
	}
	return next.Int64, nil
}

// fire sends one due event. A failure cancels it with the error recorded; it
// is not retried (MSC4140, "Rate-limiting at the point of sending"). It
// reports false when the event could not be looked at (a database error).
func (de *delayedEvents) fire(ctx context.Context, delayID string) bool {
	unlock := de.locks.lock(delayID)
	defer unlock()
	ev, err := de.load(ctx, delayID)
	if err != nil || ev == nil || ev.finalisedTS.Valid || ev.sendTS > nowMS() {
		logIfErr(ctx, "loading a due delayed event", err)
		return err == nil // gone, finalised or restarted meanwhile
	}
	claimed, err := de.claim(ctx, ev, reasonDelay, true)
	if err != nil || !claimed {
		logIfErr(ctx, "claiming a due delayed event", err)
		return err == nil
	}
	eventID, err := de.send(ctx, ev)
	if err != nil {
		slog.InfoContext(ctx, "delayed event not sent", "delay_id", delayID, "room_id", ev.roomID, "user_id", ev.userID, "err", err)
		_, uerr := de.db.Exec(ctx, `UPDATE delayed_events SET outcome = $2, reason = $3, error = $4 WHERE delay_id = $1`,
			delayID, outcomeCancel, reasonError, matrixErrorJSON(err))
		logIfErr(ctx, "recording a failed delayed event", uerr)
		return true
	}
	de.recordSent(ctx, delayID, eventID)
	return true
}

// matrixErrorJSON is err as a standard error response body.
func matrixErrorJSON(err error) string {
	var me *httputil.Error
	if !errors.As(err, &me) {
		me = httputil.Unknown("%v", err)
	}
	b, _ := json.Marshal(me)
	return string(b)
}

// onEvent notes state changes for the canceller (a room engine listener: it
// must not block).
func (de *delayedEvents) onEvent(o roomserver.OutputEvent) {
	ev := o.Event
	if !o.StateChanged || o.SoftFailed || ev == nil || ev.StateKey() == nil {
		return
	}
	de.stateMu.Lock()
	de.stateChanges = append(de.stateChanges, stateChange{roomID: ev.RoomID(), evType: ev.Type(), key: *ev.StateKey(), sender: ev.Sender(), changedAtMilli: nowMS()})
	de.stateMu.Unlock()
	select {
	case de.stateWake <- struct{}{}:
	default:
	}
}

// cancelOnStateChanges cancels delayed state events whose type and state key
// another user has just set.
func (de *delayedEvents) cancelOnStateChanges() {
	defer de.done.Done()
	ctx := context.Background()
	errJSON := matrixErrorJSON(&httputil.Error{Status: http.StatusConflict, ErrCode: "M_CANCELLED_BY_STATE_UPDATE",
		Message: "Another user changed the same state before the delayed event was sent"})
	for {
		select {
		case <-de.stop:
			return
		case <-de.stateWake:
		}
		de.stateMu.Lock()
		changes := de.stateChanges
		de.stateChanges = nil
		de.stateMu.Unlock()
		for _, c := range changes {
			// A read first: most state changes have no delayed event to cancel,
			// and reads do not take SQLite's writer lock.
			var one int
			err := de.db.QueryRow(ctx, `SELECT 1 FROM delayed_events WHERE room_id = $1 AND event_type = $2 AND state_key = $3
				AND finalised_ts IS NULL AND user_id <> $4 LIMIT 1`, string(c.roomID), c.evType, c.key, string(c.sender)).Scan(&one)
			if isNoRows(err) {
				continue
			}
			if err == nil {
				_, err = de.db.Exec(ctx, `UPDATE delayed_events SET finalised_ts = $5, outcome = $6, reason = $7, error = $8
					WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND finalised_ts IS NULL AND user_id <> $4`,
					string(c.roomID), c.evType, c.key, string(c.sender), c.changedAtMilli, outcomeCancel, reasonError, errJSON)
			}
			logIfErr(ctx, "cancelling delayed state events after a state change", err)
		}
	}
}
