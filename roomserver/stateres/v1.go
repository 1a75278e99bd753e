package stateres

import (
	"bytes"
	"cmp"
	"crypto/sha1"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// v1Event is a conflicted event with its v1 sort key.
type v1Event struct {
	ix    int32
	depth int64
	sha   [sha1.Size]byte
}

// resolveV1 implements the original state resolution algorithm (room version
// 1, "State resolution"). Conflicts are settled a key at a time, power levels
// first, then join rules, then memberships, then the rest, each phase checking
// events against the state R resolved by the phases before it.
func (r *resolver) resolveV1(states []StateMap) (StateMap, error) {
	// A key is conflicted when two states hold different events for it; a
	// key missing from some states is not a conflict.
	unconflicted := make(StateMap, len(states[0]))
	conflicted := make(map[pdu.StateKey][]id.EventID)
	for _, s := range states {
		for k, v := range s {
			if c, ok := conflicted[k]; ok {
				if !slices.Contains(c, v) {
					conflicted[k] = append(c, v)
				}
				continue
			}
			if u, ok := unconflicted[k]; ok {
				if u != v {
					conflicted[k] = []id.EventID{u, v}
					delete(unconflicted, k)
				}
				continue
			}
			unconflicted[k] = v
		}
	}
	if len(conflicted) == 0 {
		return unconflicted, nil
	}

	var want []id.EventID
	for _, ids := range conflicted {
		want = append(want, ids...)
	}
	if err := r.load(want); err != nil {
		return nil, err
	}
	// Unknown events drop out; a key left with one event is unconflicted.
	lists := make(map[pdu.StateKey][]v1Event, len(conflicted))
	for k, ids := range conflicted {
		var evs []v1Event
		for _, eid := range ids {
			if ix, ok := r.known(eid); ok {
				evs = append(evs, v1Event{ix: ix, depth: r.nodes[ix].evt.Depth, sha: sha1.Sum([]byte(eid))})
			}
		}
		switch len(evs) {
		case 0:
		case 1:
			unconflicted[k] = r.nodes[evs[0].ix].id
		default:
			// Descending depth, then ascending SHA-1 of the event ID.
			slices.SortFunc(evs, func(a, b v1Event) int {
				if a.depth != b.depth {
					return cmp.Compare(b.depth, a.depth)
				}
				return bytes.Compare(a.sha[:], b.sha[:])
			})
			lists[k] = evs
		}
	}

	// Load the unconflicted events that the conflicted ones may need as auth
	// events.
	want = want[:0]
	for _, evs := range lists {
		for _, e := range evs {
			for _, k := range r.selection(e.ix) {
				if v, ok := unconflicted[k]; ok {
					want = append(want, v)
				}
			}
		}
	}
	if err := r.load(want); err != nil {
		return nil, err
	}

	keys := make([]pdu.StateKey, 0, len(lists))
	for k := range lists {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pdu.StateKey) int {
		if c := cmp.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return cmp.Compare(a.StateKey, b.StateKey)
	})

	v := v1State{r: r, unconflicted: unconflicted, resolved: make(map[pdu.StateKey]int32, len(lists))}
	phases := []func(pdu.StateKey) bool{
		func(k pdu.StateKey) bool { return k == keyPowerLevels },
		func(k pdu.StateKey) bool { return k.Type == "m.room.join_rules" },
		func(k pdu.StateKey) bool { return k.Type == "m.room.member" },
		func(pdu.StateKey) bool { return true },
	}
	for phase, match := range phases {
		// Every key of a phase is resolved against the same R; the results
		// join R once the phase is over.
		results := make(map[pdu.StateKey]int32)
		for _, k := range keys {
			if _, done := v.resolved[k]; done || !match(k) {
				continue
			}
			if err := r.ctx.Err(); err != nil {
				return nil, err
			}
			var (
				ix  int32
				err error
			)
			if phase < len(phases)-1 {
				ix, err = v.resolveAuthEvents(k, lists[k])
			} else {
				ix, err = v.resolveNormalEvents(lists[k])
			}
			if err != nil {
				return nil, err
			}
			results[k] = ix
		}
		for k, ix := range results {
			v.resolved[k] = ix
		}
	}

	out := unconflicted
	for k, ix := range v.resolved {
		out[k] = r.nodes[ix].id
	}
	return out, nil
}

// v1State is the state R of the v1 algorithm: the events resolved so far
// over the unconflicted state.
type v1State struct {
	r            *resolver
	unconflicted StateMap
	resolved     map[pdu.StateKey]int32
}

// authEvents selects the auth events of an event from R, with the event at
// key override (if not -1) taking the place of R's.
func (v *v1State) authEvents(ix int32, key pdu.StateKey, override int32) []*pdu.PDU {
	r := v.r
	buf := r.authBuf[:0]
	for _, k := range r.selection(ix) {
		if override >= 0 && k == key {
			buf = append(buf, r.nodes[override].evt)
		} else if j, ok := v.resolved[k]; ok {
			buf = append(buf, r.nodes[j].evt)
		} else if eid, ok := v.unconflicted[k]; ok {
			if j, ok := r.known(eid); ok {
				buf = append(buf, r.nodes[j].evt)
			}
		}
	}
	r.authBuf = buf
	return buf
}

// resolveAuthEvents settles a conflict over an auth-related key: in order of
// ascending depth and descending SHA-1, the first event is taken, and each
// next one replaces it while it passes the auth rules in R.
func (v *v1State) resolveAuthEvents(key pdu.StateKey, desc []v1Event) (int32, error) {
	prev := desc[len(desc)-1].ix
	for i := len(desc) - 2; i >= 0; i-- {
		ix := desc[i].ix
		allowed, err := v.r.authorise(v.r.nodes[ix].evt, v.authEvents(ix, key, prev))
		if err != nil {
			return -1, err
		}
		if !allowed {
			break
		}
		prev = ix
	}
	return prev, nil
}

// resolveNormalEvents settles a conflict over any other key: the event of
// greatest depth and smallest SHA-1 that passes the auth rules in R, or the
// last one if none does.
func (v *v1State) resolveNormalEvents(desc []v1Event) (int32, error) {
	for _, e := range desc {
		allowed, err := v.r.authorise(v.r.nodes[e.ix].evt, v.authEvents(e.ix, pdu.StateKey{}, -1))
		if err != nil {
			return -1, err
		}
		if allowed {
			return e.ix, nil
		}
	}
	return desc[len(desc)-1].ix, nil
}
