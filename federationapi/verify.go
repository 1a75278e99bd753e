package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
)

// getKeyFunc is the key ring as the signature checks want it, bound to ctx.
func (a *API) getKeyFunc(ctx context.Context) pdu.GetKeyFunc {
	return func(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
		e, err := a.keyRing.Key(ctx, serverName, keyID, minValidUntil)
		if err != nil {
			return "", time.Time{}, err
		}
		return e.key, e.validUntil, nil
	}
}

// verifyPDU performs steps 1–3 of "Checks performed on receipt of a PDU": the
// event must parse in its room version (else it is dropped), carry valid
// signatures of every server that must sign it (else it is dropped), and match
// its content hash — if not, the redacted event is used in its place.
func (a *API) verifyPDU(ctx context.Context, version id.RoomVersion, raw []byte) (*events.Event, error) {
	ev, err := events.Parse(version, raw)
	if err != nil {
		return nil, err
	}
	return a.verifyParsed(ctx, ev)
}

// verifyParsed is verifyPDU after parsing: steps 2 and 3. An event that
// events.Event.FormatRejection marks passes: the room engine stores it as
// rejected, as the room may depend on it.
func (a *API) verifyParsed(ctx context.Context, ev *events.Event) (*events.Event, error) {
	if err := events.VerifySignatures(ev, a.getKeyFunc(ctx)); err != nil {
		return nil, err
	}
	if !ev.CheckContentHash() {
		ev = ev.Redacted()
	}
	return ev, nil
}

// verifiedPDU is the outcome of verifying one PDU of a batch.
type verifiedPDU struct {
	ev  *events.Event
	err error
	raw json.RawMessage
}

// verifyPDUs verifies a batch of PDUs of one room version in parallel (signature
// checks dominate the cost of a big join). The result keeps the input order.
func (a *API) verifyPDUs(ctx context.Context, version id.RoomVersion, raws []json.RawMessage) []verifiedPDU {
	out := make([]verifiedPDU, len(raws))
	workers := min(runtime.GOMAXPROCS(0), max(len(raws)/16, 1))
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(raws) {
					return
				}
				out[i].raw = raws[i]
				out[i].ev, out[i].err = a.safeVerify(ctx, version, raws[i])
			}
		}()
	}
	wg.Wait()
	return out
}

// safeVerify is verifyPDU that turns a panic in third-party code into an error.
func (a *API) safeVerify(ctx context.Context, version id.RoomVersion, raw []byte) (ev *events.Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			ev, err = nil, fmt.Errorf("panic verifying event: %v", p)
		}
	}()
	return a.verifyPDU(ctx, version, raw)
}

// sortByAuth orders events so that each comes after the events of the set it cites
// in auth_events (ties by depth, then ID), so they can be input one by one.
// Events caught in an auth cycle (impossible for valid events) come last.
func sortByAuth(evs []*events.Event) []*events.Event {
	idx := make(map[id.EventID]int, len(evs))
	for i, e := range evs {
		idx[e.ID()] = i
	}
	indeg := make([]int, len(evs))
	children := make([][]int, len(evs))
	for i, e := range evs {
		for _, a := range e.AuthEventIDs() {
			if j, ok := idx[a]; ok && j != i {
				indeg[i]++
				children[j] = append(children[j], i)
			}
		}
	}
	less := func(i, j int) bool {
		if evs[i].Depth() != evs[j].Depth() {
			return evs[i].Depth() < evs[j].Depth()
		}
		return evs[i].ID() < evs[j].ID()
	}
	var ready []int
	for i := range evs {
		if indeg[i] == 0 {
			ready = append(ready, i)
		}
	}
	out := make([]*events.Event, 0, len(evs))
	done := make([]bool, len(evs))
	for len(ready) > 0 {
		sort.Slice(ready, func(a, b int) bool { return less(ready[a], ready[b]) })
		batch := ready
		ready = nil
		for _, i := range batch {
			out = append(out, evs[i])
			done[i] = true
			for _, c := range children[i] {
				if indeg[c]--; indeg[c] == 0 {
					ready = append(ready, c)
				}
			}
		}
	}
	for i, e := range evs {
		if !done[i] {
			out = append(out, e)
		}
	}
	return out
}

// errRoomUnknown is a per-PDU error for events of rooms this server is not in.
var errRoomUnknown = errors.New("room unknown to this server")
