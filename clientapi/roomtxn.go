package clientapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/storage"
)

// Transaction IDs of sent events (Client-Server API, "Transaction identifiers"):
// a retried PUT gets the event of the first request, and the device that sent an
// event sees its transaction ID in unsigned.transaction_id.

// txnKey identifies a request by device, endpoint and path, and transaction ID.
type txnKey struct {
	user   id.UserID
	device id.DeviceID
	scope  string
	txn    string
}

// txnRef is the device and transaction ID an event was sent with.
type txnRef struct {
	user   id.UserID
	device id.DeviceID
	txn    string
}

// txnCache makes sends idempotent per transaction ID: a retry gets the event ID
// of the first request, whether that request is still running, finished, or was
// answered before a restart (the mapping is stored in room_txns). It also
// answers which transaction ID an event was sent with, from memory for the
// events sent since startPos.
type txnCache struct {
	db  storage.Conn
	pos func() int64

	// startMS is when the cache began: rows of room_txns created up to it may come
	// from earlier runs of the server.
	startMS int64

	mu sync.Mutex
	// startPos: every event after it that was sent with a transaction ID is in
	// byEvent (raised when byEvent is emptied to bound it).
	startPos int64
	inflight map[txnKey]*txnCall
	recent   map[txnKey]id.EventID
	byEvent  map[id.EventID]txnRef
	// fresh holds the devices without transactions from earlier runs: for
	// them recent is complete and the store need not be asked (emptied when
	// recent drops entries).
	fresh map[txnDevice]bool
}

type txnDevice struct {
	user   id.UserID
	device id.DeviceID
}

type txnCall struct {
	done    chan struct{}
	eventID id.EventID
	err     error
}

// maxRecentTxns bounds the in-memory maps.
const maxRecentTxns = 20_000

// txnWaitLimit bounds how long writing an event waits for the send of the same
// device that made it to record its transaction ID.
const txnWaitLimit = 2 * time.Second

func newTxnCache(db storage.Conn, pos func() int64) *txnCache {
	return &txnCache{db: db, pos: pos, startPos: pos(), startMS: nowMS(), inflight: map[txnKey]*txnCall{},
		recent: map[txnKey]id.EventID{}, byEvent: map[id.EventID]txnRef{}, fresh: map[txnDevice]bool{}}
}

// do runs send once per key; concurrent and later requests with the same key get
// its result. Failed sends are not remembered (the client may retry them). send
// runs with a context that is not cancelled with the request: a client that
// hangs up does not abort a send half-way.
func (c *txnCache) do(ctx context.Context, key txnKey, send func(ctx context.Context) (id.EventID, error)) (id.EventID, error) {
	c.mu.Lock()
	if eid, ok := c.recent[key]; ok {
		c.mu.Unlock()
		return eid, nil
	}
	if call, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.eventID, call.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	call := &txnCall{done: make(chan struct{}), err: errTxnAborted}
	c.inflight[key] = call
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, key)
		c.mu.Unlock()
		close(call.done)
	}()

	ctx = context.WithoutCancel(ctx)
	stored, err := c.stored(ctx, key)
	switch {
	case err != nil:
		call.eventID, call.err = "", internalErr(err)
	case stored != "":
		call.eventID, call.err = stored, nil
		c.remember(key, stored)
	default:
		call.eventID, call.err = send(ctx)
		if call.err != nil {
			break
		}
		c.remember(key, call.eventID)
		if _, err := c.db.Exec(ctx, `INSERT INTO room_txns (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT DO NOTHING`, string(key.user), string(key.device), key.scope, key.txn, string(call.eventID), nowMS()); err != nil {
			// The event is sent: answer with it, losing only the idempotency of
			// a retry after a restart.
			logIfErr(ctx, "recording transaction ID", err)
		}
	}
	return call.eventID, call.err
}

// errTxnAborted is what waiters get when the first request's send panicked.
var errTxnAborted = errors.New("the request with this transaction ID failed")

// stored returns the event a transaction was answered with before ("" if none).
// Transactions of this run are all in recent, so only devices with transactions
// from earlier runs need the store.
func (c *txnCache) stored(ctx context.Context, key txnKey) (id.EventID, error) {
	dev := txnDevice{key.user, key.device}
	c.mu.Lock()
	fresh, known := c.fresh[dev]
	since := c.startMS
	c.mu.Unlock()
	if !known {
		var one int
		err := c.db.QueryRow(ctx, `SELECT 1 FROM room_txns WHERE user_id = $1 AND device_id = $2 AND created_ts <= $3 LIMIT 1`,
			string(key.user), string(key.device), since).Scan(&one)
		if err != nil && !isNoRows(err) {
			return "", err
		}
		fresh = isNoRows(err)
		c.mu.Lock()
		c.fresh[dev] = fresh
		c.mu.Unlock()
	}
	if fresh {
		return "", nil
	}
	var eid string
	err := c.db.QueryRow(ctx, `SELECT event_id FROM room_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
		string(key.user), string(key.device), key.scope, key.txn).Scan(&eid)
	if isNoRows(err) {
		return "", nil
	}
	return id.EventID(eid), err
}

// remember records an answered transaction in memory.
func (c *txnCache) remember(key txnKey, eventID id.EventID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recent) >= maxRecentTxns {
		n := maxRecentTxns / 4
		for k := range c.recent {
			delete(c.recent, k)
			if n--; n <= 0 {
				break
			}
		}
		// recent is no longer complete for any device.
		clear(c.fresh)
		c.startMS = nowMS()
	}
	c.recent[key] = eventID
	if len(c.byEvent) >= maxRecentTxns {
		// Forget the reverse map; older events are looked up in the store.
		clear(c.byEvent)
		c.startPos = c.pos()
	}
	c.byEvent[eventID] = txnRef{user: key.user, device: key.device, txn: key.txn}
}

// lookupEvents fills out with the transaction IDs the device of user sent evs
// with, as far as memory knows, and returns the events only the store knows
// about (sent before startPos). An event of the user's may be written before the
// send that made it has returned (a /sync woken by it): then it waits, once, for
// the user's sends in flight.
func (c *txnCache) lookupEvents(ctx context.Context, userID id.UserID, deviceID id.DeviceID, evs []*roomserver.StoredEvent, out map[id.EventID]string) []id.EventID {
	for attempt := 0; ; attempt++ {
		var unknown []id.EventID
		var wait []chan struct{}
		c.mu.Lock()
		for _, e := range evs {
			if ref, ok := c.byEvent[e.ID()]; ok {
				if ref.device == deviceID && ref.user == userID {
					out[e.ID()] = ref.txn
				}
				continue
			}
			if e.StreamPos <= c.startPos {
				unknown = append(unknown, e.ID())
			} else if wait == nil && attempt == 0 {
				for k, call := range c.inflight {
					if k.user == userID {
						wait = append(wait, call.done)
					}
				}
			}
		}
		c.mu.Unlock()
		if len(wait) == 0 {
			return unknown
		}
		timer := time.NewTimer(txnWaitLimit)
	waiting:
		for _, ch := range wait {
			select {
			case <-ch:
			case <-ctx.Done():
				break waiting
			case <-timer.C:
				break waiting
			}
		}
		timer.Stop()
	}
}
