package appservice

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/roomserver/events"
)

// The transaction sender (Application Service API, "Pushing events"): one
// worker per service reads the event stream after its stored position, picks
// the events the service is interested in, stores them as the next transaction
// together with the new position, and PUTs the stored transactions one at a
// time, oldest first, retrying the same transaction with exponential backoff
// until the service acknowledges it. Events are therefore sent in stream order,
// none is lost across restarts, and a retry never changes a transaction's
// events.

const (
	// maxTxnEvents caps the events in one transaction (as Synapse).
	maxTxnEvents = 100
	// scanBatch is how many stream events are read at once.
	scanBatch = 500
)

// worker is the sender of one application service. Only its own goroutine
// touches its fields after start.
type worker struct {
	s       *Service
	as      *AppService
	aliases RoomAliases
	wake    chan struct{}

	// pos is how far the stream has been read; savedPos how far the database
	// knows (pos runs ahead over events of no interest, saved when idle).
	pos, savedPos int64
	lastTxn       int64
	rooms         *roomInterestCache
}

func (s *Service) newWorker(ctx context.Context, as *AppService, aliases RoomAliases) (*worker, error) {
	pos, last, err := loadStream(ctx, s.db, as.ID, s.rooms.StreamPosition())
	if err != nil {
		return nil, err
	}
	return &worker{
		s: s, as: as, aliases: aliases, wake: make(chan struct{}, 1),
		pos: pos, savedPos: pos, lastTxn: last, rooms: newRoomInterestCache(),
	}, nil
}

// poke wakes the worker (new events); it never blocks.
func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run sends until stop is closed.
func (w *worker) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer w.flushPos()
	var backoff time.Duration
	for ctx.Err() == nil {
		progressed, err := w.step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, w.s.opts.MinBackoff), w.s.opts.MaxBackoff)
			slog.Warn("application service transaction failed; retrying", "appservice", w.as.ID, "retry_in", backoff, "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		if backoff > 0 {
			slog.Info("application service reachable again", "appservice", w.as.ID)
			backoff = 0
		}
		if progressed {
			continue
		}
		w.flushPos()
		select {
		case <-w.wake:
		case <-ctx.Done():
		}
	}
}

// flushPos saves a stream position that ran ahead over events of no interest.
func (w *worker) flushPos() {
	if w.pos <= w.savedPos {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := saveStreamPos(ctx, w.s.db, w.as.ID, w.pos); err != nil {
		slog.Warn("saving application service stream position", "appservice", w.as.ID, "err", err)
		return
	}
	w.savedPos = w.pos
}

// step delivers the oldest queued transaction, or else queues the next one from
// the stream. It reports whether there may be more to do at once.
func (w *worker) step(ctx context.Context) (bool, error) {
	txn, err := oldestTxn(ctx, w.s.db, w.as.ID)
	if err != nil {
		return false, err
	}
	if txn != nil {
		if err := w.deliver(ctx, txn); err != nil {
			return false, err
		}
		return true, deleteTxn(ctx, w.s.db, w.as.ID, txn.ID)
	}
	return w.fill(ctx)
}

// fill reads the stream after pos and queues the events of interest as the next
// transaction. It reports whether it moved forward.
func (w *worker) fill(ctx context.Context) (bool, error) {
	cur := w.s.rooms.StreamPosition()
	if w.pos >= cur {
		return false, nil
	}
	evs, err := w.s.rooms.EventsSince(ctx, w.pos, cur, scanBatch)
	if err != nil {
		return false, err
	}
	newPos := cur // everything up to cur is covered unless a batch limit stops us
	if len(evs) == scanBatch {
		newPos = evs[len(evs)-1].StreamPos
	}
	var picked []id.EventID
	for _, e := range evs {
		if e.SoftFailed {
			continue
		}
		ok, err := w.interested(ctx, e)
		if err != nil {
			return false, err
		}
		if ok {
			picked = append(picked, e.ID())
			if len(picked) == maxTxnEvents {
				newPos = e.StreamPos
				break
			}
		}
	}
	if len(picked) == 0 {
		w.pos = newPos
		return true, nil
	}
	txnID := w.lastTxn + 1
	if err := enqueueTxn(ctx, w.s.db, w.as.ID, txnID, picked, newPos, time.Now().UnixMilli()); err != nil {
		return false, err
	}
	w.lastTxn, w.pos, w.savedPos = txnID, newPos, newPos
	return true, nil
}

// deliver builds the transaction's body from its stored events and PUTs it.
func (w *worker) deliver(ctx context.Context, txn *pendingTxn) error {
	found, err := w.s.rooms.Events(ctx, txn.EventIDs)
	if err != nil {
		return err
	}
	byID := make(map[id.EventID]*roomserver.StoredEvent, len(found))
	for _, e := range found {
		byID[e.ID()] = e
	}
	ordered := make([]*roomserver.StoredEvent, 0, len(txn.EventIDs))
	for _, eid := range txn.EventIDs {
		if e := byID[eid]; e != nil {
			ordered = append(ordered, e)
		}
	}
	prev, err := w.s.rooms.ReplacedStateEvents(ctx, ordered)
	if err != nil {
		return err
	}
	body := appendTransaction(make([]byte, 0, 1024*len(ordered)+16), ordered, prev, time.Now().UnixMilli())
	return w.s.sendTransaction(ctx, w.as, txn.ID, body)
}

// appendTransaction writes {"events":[…]}: the events in the Client-Server
// API's format, with unsigned age and, for state events, prev_content,
// prev_sender and replaces_state (as /sync gives them). Redacted events are
// sent redacted.
func appendTransaction(dst []byte, evs []*roomserver.StoredEvent, prev map[int64]*roomserver.StoredEvent, now int64) []byte {
	dst = append(dst, `{"events":[`...)
	var u []byte
	for i, e := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		u = append(u[:0], `{"age":`...)
		u = strconv.AppendInt(u, now-e.OriginServerTS(), 10)
		if p := prev[e.NID]; p != nil {
			pe := p.Event
			if p.RedactedBy != "" {
				pe = pe.Redacted()
			}
			u = append(u, `,"prev_content":`...)
			u = append(u, pe.Content()...)
			u = append(u, `,"prev_sender":`...)
			u = appendString(u, string(p.Sender()))
			u = append(u, `,"replaces_state":`...)
			u = appendString(u, string(p.ID()))
		}
		u = append(u, '}')
		ev := e.Event
		if e.RedactedBy != "" {
			ev = ev.Redacted()
		}
		dst = ev.AppendClientEvent(dst, events.ClientOptions{Unsigned: u})
	}
	return append(dst, "]}"...)
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}
