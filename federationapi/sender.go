package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// Back-off of a failing destination: 2 s, doubling, at most an hour, with jitter.
const (
	backoffBase = 2 * time.Second
	backoffMax  = time.Hour
	// sendTimeout bounds one transaction request.
	sendTimeout = time.Minute
)

// sender sends new events and queued EDUs to the servers in each room, through a
// persistent queue per destination. A dispatcher turns the room engine's new
// events into queue entries; a worker per destination with queued entries sends
// transactions of at most 50 PDUs and 100 EDUs, backing off exponentially while
// the destination fails. Workers are woken by new entries and by the destination
// contacting this server, never by polling.
type sender struct {
	a *API

	pendingMu sync.Mutex
	pending   []roomserver.OutputEvent
	wake      chan struct{}

	relay sync.Map // event ID → struct{}: remote events to pass on (send_join …)
	skip  sync.Map // event ID → struct{}: local events others already have

	mu      sync.Mutex
	queues  map[string]*destQueue
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	// catchUpTo is the stream position the start-up catch-up covered; the
	// listener's events at or below it were queued by the catch-up.
	catchUpTo int64

	txnPrefix string
	txnSeq    atomic.Uint64

	// roomServers caches the servers with joined users per room; the dispatcher
	// alone uses it, dropping a room's entry on each member event.
	roomServers map[id.RoomID][]string
}

// destQueue is the worker state of one destination.
type destQueue struct {
	name    string
	running bool
	wake    chan struct{} // new entries
	alive   chan struct{} // the destination contacted us: retry now
	backoff backoffState
}

func newSender(a *API) *sender {
	return &sender{
		a: a, wake: make(chan struct{}, 1), queues: make(map[string]*destQueue),
		txnPrefix: strconv.FormatInt(time.Now().UnixMilli(), 36), roomServers: make(map[id.RoomID][]string),
	}
}

func (s *sender) markRelay(eventID id.EventID)   { s.relay.Store(eventID, struct{}{}) }
func (s *sender) unmarkRelay(eventID id.EventID) { s.relay.Delete(eventID) }
func (s *sender) markSkip(eventID id.EventID)    { s.skip.Store(eventID, struct{}{}) }

// start registers the room engine listener, queues what was committed since the
// last run, and starts the workers of destinations with queued entries.
func (s *sender) start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("federation sender already started")
	}
	s.started = true
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Unlock()
	s.a.rs.AddListener(s.onEvent)

	pos, ok, err := s.a.store.senderPosition(ctx)
	if err != nil {
		return err
	}
	cur := s.a.rs.StreamPosition()
	if !ok {
		// First start: nothing before now is sent.
		if err := s.a.store.updateSenderPosition(ctx, cur); err != nil {
			return err
		}
	} else if pos < cur {
		for pos < cur {
			evs, err := s.a.rs.EventsSince(ctx, pos, cur, 500)
			if err != nil {
				return fmt.Errorf("catching up the federation sender: %w", err)
			}
			if len(evs) == 0 {
				break
			}
			for _, e := range evs {
				s.dispatch(ctx, roomserver.OutputEvent{Event: e.Event, RoomNID: e.RoomNID, StreamPos: e.StreamPos, SoftFailed: e.SoftFailed || e.Rejected})
				pos = e.StreamPos
			}
		}
		if err := s.a.store.updateSenderPosition(ctx, cur); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.catchUpTo = cur
	s.mu.Unlock()

	queued, err := s.a.store.queuedDestinations(ctx)
	if err != nil {
		return err
	}
	for d, b := range queued {
		s.mu.Lock()
		q := s.queue(d)
		q.backoff = b
		s.mu.Unlock()
		s.wakeDest(d)
	}
	s.wg.Add(1)
	go s.dispatchLoop()
	return nil
}

// stop ends the dispatcher and the workers.
func (s *sender) stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// onEvent is the room engine listener: it only records the event and wakes the
// dispatcher (it runs with the room locked).
func (s *sender) onEvent(o roomserver.OutputEvent) {
	s.pendingMu.Lock()
	s.pending = append(s.pending, o)
	s.pendingMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sender) dispatchLoop() {
	defer s.wg.Done()
	var safePos int64
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		}
		// Every event at or below the position read now was committed before this
		// batch was taken; positions are recorded one batch late so that a
		// listener call racing with the read is never skipped after a restart
		// (queueing an event twice only sends it twice, which is harmless).
		cur := s.a.rs.StreamPosition()
		s.pendingMu.Lock()
		batch := s.pending
		s.pending = nil
		s.pendingMu.Unlock()
		s.mu.Lock()
		catchUpTo := s.catchUpTo
		s.mu.Unlock()
		for _, o := range batch {
			if o.StreamPos <= catchUpTo {
				continue
			}
			s.dispatch(s.ctx, o)
		}
		if safePos > 0 {
			if err := s.a.store.updateSenderPosition(s.ctx, safePos); err != nil && s.ctx.Err() == nil {
				slog.Warn("recording federation sender position", "err", err)
			}
		}
		safePos = cur
	}
}

// dispatch queues one new event for the servers that must get it: local events
// (and remote ones this server relays, such as joins through send_join) go to
// every server with joined users, plus the target's server of a member event.
func (s *sender) dispatch(ctx context.Context, o roomserver.OutputEvent) {
	ev := o.Event
	if ev == nil {
		return
	}
	roomID := ev.RoomID()
	if ev.Type() == "m.room.member" || o.StateChanged {
		delete(s.roomServers, roomID) // membership may have changed
	}
	_, relayed := s.relay.LoadAndDelete(ev.ID())
	_, skipped := s.skip.LoadAndDelete(ev.ID())
	local := ev.Sender().Homeserver() == s.a.serverName
	if o.SoftFailed || skipped || !local && !relayed {
		return
	}
	servers, ok := s.roomServers[roomID]
	if !ok {
		members, err := s.a.rs.Members(ctx, roomID, "join")
		if err != nil {
			slog.Error("listing servers in room", "room_id", roomID, "err", err)
			return
		}
		seen := map[string]struct{}{}
		for _, m := range members {
			if h := m.Homeserver(); h != "" {
				if _, dup := seen[h]; !dup {
					seen[h] = struct{}{}
					servers = append(servers, h)
				}
			}
		}
		s.roomServers[roomID] = servers
	}
	dests := make([]string, 0, len(servers)+1)
	seen := make(map[string]struct{}, len(servers)+1)
	add := func(d string) {
		if d == "" || d == s.a.serverName || relayed && d == ev.Sender().Homeserver() {
			return
		}
		if _, dup := seen[d]; !dup {
			seen[d] = struct{}{}
			dests = append(dests, d)
		}
	}
	for _, d := range servers {
		add(d)
	}
	if ev.Type() == "m.room.member" && ev.StateKey() != nil {
		add(id.UserID(*ev.StateKey()).Homeserver())
	}
	if len(dests) == 0 {
		return
	}
	if err := s.a.store.enqueuePDU(ctx, dests, string(ev.ID()), o.StreamPos); err != nil {
		slog.Error("queueing event for federation", "event_id", ev.ID(), "err", err)
		return
	}
	for _, d := range dests {
		s.wakeDest(d)
	}
}

// SendEDU queues an EDU of eduType for each destination (typing, receipts,
// presence, to-device messages and device list updates use it).
func (a *API) SendEDU(ctx context.Context, destinations []string, eduType string, content any) error {
	edu, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return fmt.Errorf("encoding %s EDU: %w", eduType, err)
	}
	dests := make([]string, 0, len(destinations))
	seen := map[string]struct{}{}
	for _, d := range destinations {
		if _, dup := seen[d]; d != a.serverName && d != "" && !dup {
			seen[d] = struct{}{}
			dests = append(dests, d)
		}
	}
	if len(dests) == 0 {
		return nil
	}
	if err := a.store.enqueueEDU(ctx, dests, edu); err != nil {
		return err
	}
	for _, d := range dests {
		a.sender.wakeDest(d)
	}
	return nil
}

// queue returns the state of a destination; s.mu must be held.
func (s *sender) queue(name string) *destQueue {
	q := s.queues[name]
	if q == nil {
		q = &destQueue{name: name, wake: make(chan struct{}, 1), alive: make(chan struct{}, 1)}
		s.queues[name] = q
	}
	return q
}

// wakeDest starts the destination's worker, or wakes it.
func (s *sender) wakeDest(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	q := s.queue(name)
	if !q.running {
		q.running = true
		s.wg.Add(1)
		go s.run(q)
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// serverAlive is called when a server authenticated a request to us: a destination
// backing off is retried now.
func (a *API) serverAlive(server string) {
	a.keyRing.resetBackoff(server)
	s := a.sender
	s.mu.Lock()
	q := s.queues[server]
	backingOff := q != nil && q.backoff.failures > 0
	s.mu.Unlock()
	if !backingOff {
		return
	}
	select {
	case q.alive <- struct{}{}:
	default:
	}
	s.wakeDest(server)
}

// run is the worker of one destination: it sends transactions while entries are
// queued, waiting out back-off after failures, and exits when the queue is empty.
func (s *sender) run(q *destQueue) {
	defer s.wg.Done()
	ctx := s.ctx
	for {
		s.mu.Lock()
		b := q.backoff
		s.mu.Unlock()
		if wait := time.Until(time.UnixMilli(b.retryAtTS)); b.failures > 0 && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				s.exit(q)
				return
			case <-q.alive:
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			s.exit(q)
			return
		}
		pdus, edus, err := s.a.store.pending(ctx, q.name, maxTxnPDUs, maxTxnEDUs)
		if err != nil {
			slog.Error("reading federation queue", "destination", q.name, "err", err)
			s.fail(ctx, q, err)
			continue
		}
		if len(pdus) == 0 && len(edus) == 0 {
			// Exit unless new entries arrived while reading.
			s.mu.Lock()
			select {
			case <-q.wake:
				s.mu.Unlock()
				continue
			default:
			}
			q.running = false
			s.mu.Unlock()
			return
		}
		if err := s.send(ctx, q.name, pdus, edus); err != nil {
			if ctx.Err() != nil {
				s.exit(q)
				return
			}
			s.fail(ctx, q, err)
			continue
		}
		var lastPDU, lastEDU int64
		if len(pdus) > 0 {
			lastPDU = pdus[len(pdus)-1].nid
		}
		if len(edus) > 0 {
			lastEDU = edus[len(edus)-1].nid
		}
		if err := s.a.store.dequeue(ctx, q.name, lastPDU, lastEDU); err != nil {
			slog.Error("dequeueing sent federation entries", "destination", q.name, "err", err)
			s.fail(ctx, q, err)
			continue
		}
		s.mu.Lock()
		if q.backoff.failures > 0 {
			slog.Info("destination is reachable again", "destination", q.name)
		}
		q.backoff = backoffState{}
		s.mu.Unlock()
	}
}

func (s *sender) exit(q *destQueue) {
	s.mu.Lock()
	q.running = false
	s.mu.Unlock()
}

// fail records a failed attempt and schedules the next one.
func (s *sender) fail(ctx context.Context, q *destQueue, err error) {
	s.mu.Lock()
	q.backoff.failures++
	d := min(backoffBase<<min(q.backoff.failures-1, 20), backoffMax)
	d = d*4/5 + time.Duration(rand.Int64N(int64(d*2/5)+1)) // ±20%
	q.backoff.retryAtTS = time.Now().Add(d).UnixMilli()
	b := q.backoff
	s.mu.Unlock()
	slog.Info("federation send failed, backing off", "destination", q.name, "failures", b.failures, "retry_in", d.Round(time.Millisecond), "err", err)
	if err := s.a.store.setBackoff(ctx, q.name, b); err != nil && ctx.Err() == nil {
		slog.Warn("recording back-off", "destination", q.name, "err", err)
	}
}

// send sends one transaction.
func (s *sender) send(ctx context.Context, dest string, pdus []queuedPDU, edus []queuedEDU) error {
	ids := make([]id.EventID, len(pdus))
	for i, p := range pdus {
		ids[i] = id.EventID(p.eventID)
	}
	evs, err := s.a.rs.Events(ctx, ids)
	if err != nil {
		return err
	}
	byID := make(map[id.EventID]*roomserver.StoredEvent, len(evs))
	for _, e := range evs {
		byID[e.ID()] = e
	}
	req := &federation.ReqSendTransaction{
		Destination: dest, Origin: s.a.serverName, OriginServerTS: jsontime.UM(time.Now()),
		TxnID: s.txnPrefix + "." + strconv.FormatUint(s.txnSeq.Add(1), 10),
		PDUs:  make([]federation.PDU, 0, len(pdus)),
	}
	for _, x := range ids {
		if e, ok := byID[x]; ok {
			req.PDUs = append(req.PDUs, s.a.storedJSON(e))
		}
	}
	for _, e := range edus {
		req.EDUs = append(req.EDUs, e.edu)
	}
	if len(req.PDUs) == 0 && len(req.EDUs) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	resp, err := s.a.client.SendTransaction(sctx, req)
	if err != nil {
		return fmt.Errorf("sending transaction %s to %s: %w", req.TxnID, dest, err)
	}
	if resp != nil {
		for eid, r := range resp.PDUs {
			if r.Error != "" {
				slog.Info("destination did not accept event", "destination", dest, "event_id", eid, "error", r.Error)
			}
		}
	}
	return nil
}
