package clientapi

import (
	"context"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
)

// historyGap returns the index of the first of evs (a page of a room's
// timeline) one of whose prev_events this server does not hold in the
// timeline, or -1. Below such an event the room's history has a hole this
// server can fill only from other servers (Server-Server API, "Backfilling and
// retrieving missing events"): a room rejoined after a while, say, where the
// new join cites events sent while the server was away. Prev events inside evs
// are not looked up; the others are, in one query.
func (a *API) historyGap(ctx context.Context, evs []*roomserver.StoredEvent) (int, error) {
	if len(evs) == 0 {
		return -1, nil
	}
	inPage := make(map[id.EventID]struct{}, len(evs))
	for _, e := range evs {
		inPage[e.ID()] = struct{}{}
	}
	var outside []id.EventID
	for _, e := range evs {
		for _, p := range e.PrevEventIDs() {
			if _, ok := inPage[p]; !ok {
				outside = append(outside, p)
			}
		}
	}
	if len(outside) == 0 {
		return -1, nil
	}
	known, err := a.opts.Roomserver.Events(ctx, outside)
	if err != nil {
		return -1, err
	}
	held := make(map[id.EventID]struct{}, len(known))
	for _, k := range known {
		if !k.Outlier {
			held[k.ID()] = struct{}{}
		}
	}
	for i, e := range evs {
		for _, p := range e.PrevEventIDs() {
			_, here := inPage[p]
			_, stored := held[p]
			if !here && !stored {
				return i, nil
			}
		}
	}
	return -1, nil
}
