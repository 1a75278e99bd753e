package stateres

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// splitV2 divides the states into the unconflicted state map and the
// conflicted keys (room version 2, "State resolution", "Unconflicted state map
// and conflicted state set"): a key is unconflicted only if every state has it
// with the same event. The unconflicted state is not copied: it is states[0]
// less the conflicted keys.
type splitV2 struct {
	ref        StateMap
	conflicted map[pdu.StateKey]struct{}
}

func newSplitV2(states []StateMap) splitV2 {
	s := splitV2{ref: states[0], conflicted: make(map[pdu.StateKey]struct{})}
	for k, v := range s.ref {
		for _, other := range states[1:] {
			if w, ok := other[k]; !ok || w != v {
				s.conflicted[k] = struct{}{}
				break
			}
		}
	}
	for _, other := range states[1:] {
		for k := range other {
			if _, ok := s.ref[k]; !ok {
				s.conflicted[k] = struct{}{}
			}
		}
	}
	return s
}

// unconflicted returns the event at key in the unconflicted state map.
func (s splitV2) unconflicted(key pdu.StateKey) (id.EventID, bool) {
	if _, c := s.conflicted[key]; c {
		return "", false
	}
	v, ok := s.ref[key]
	return v, ok
}

// resolveV2 implements state resolution v2 (room versions 2–11) and v2.1
// (room version 12; "State resolution" in rooms/v12).
func (r *resolver) resolveV2(states []StateMap) (StateMap, error) {
	split := newSplitV2(states)
	if len(split.conflicted) == 0 {
		return split.finish(nil, r), nil
	}
	v21 := r.rv.StateResVersion() == id.StateResV2_1

	fcs, err := r.fullConflictedSet(states, split, v21)
	if err != nil {
		return nil, err
	}
	if err := r.loadAuth(fcs); err != nil {
		return nil, err
	}

	// Step 1: the power events of the full conflicted set and the events of
	// their auth chains that are in it, in reverse topological power order.
	power := r.powerEventsClosure(fcs)
	sortedPower := r.reverseTopologicalPowerOrder(power)

	// Step 2: iterative auth checks, from the unconflicted state map in v2
	// and from an empty state map in v2.1.
	base := split.unconflicted
	if v21 {
		base = nil
	}
	partial := make(map[pdu.StateKey]int32, len(fcs))
	if err := r.iterativeAuthChecks(sortedPower, partial, base); err != nil {
		return nil, err
	}

	// Step 3: the other events, in mainline order of the power levels of the
	// partially resolved state.
	inPower := make(map[int32]struct{}, len(power))
	for _, ix := range power {
		inPower[ix] = struct{}{}
	}
	leftover := make([]int32, 0, len(fcs)-len(power))
	for _, ix := range fcs {
		if _, ok := inPower[ix]; !ok {
			leftover = append(leftover, ix)
		}
	}
	if len(leftover) > 0 {
		p0, err := r.partialStateEvent(keyPowerLevels, partial, base)
		if err != nil {
			return nil, err
		}
		leftover, err = r.mainlineOrder(leftover, p0)
		if err != nil {
			return nil, err
		}
		// Step 4.
		if err := r.iterativeAuthChecks(leftover, partial, base); err != nil {
			return nil, err
		}
	}

	// Step 5: the unconflicted state map wins.
	return split.finish(partial, r), nil
}

// finish builds the resolved state: the unconflicted state map, plus the
// entries of partial at the other keys.
func (s splitV2) finish(partial map[pdu.StateKey]int32, r *resolver) StateMap {
	// Cloning copies the map's tables wholesale, which is several times
	// faster than inserting 10,000 entries one by one.
	out := maps.Clone(s.ref)
	for k := range s.conflicted {
		delete(out, k)
	}
	for k, ix := range partial {
		if _, ok := s.unconflicted(k); !ok {
			out[k] = r.nodes[ix].id
		}
	}
	return out
}

// fullConflictedSet returns the known state events of the full conflicted set:
// the conflicted state set, the auth difference and, in v2.1, the conflicted
// state subgraph (room version 12, "Definitions").
//
// The full auth chain C_i of state S_i is taken to contain S_i's events
// themselves, as the reference implementation does. Every S_i is U ∪ K_i,
// where U is the unconflicted events and K_i the events of S_i at conflicted
// keys, so the auth difference ∪C_i − ∩C_i equals
// ∪chain*(K_i) − ∩chain*(K_i) − chain*(U), with chain*(X) = X ∪ chain(X).
// That needs the large auth chain of U only for membership tests, and only
// when there is a candidate to test.
func (r *resolver) fullConflictedSet(states []StateMap, split splitV2, v21 bool) ([]int32, error) {
	keyed := make([][]id.EventID, len(states))
	conflicted := make(map[id.EventID]struct{}, 2*len(split.conflicted))
	for k := range split.conflicted {
		for i, s := range states {
			if v, ok := s[k]; ok {
				keyed[i] = append(keyed[i], v)
				conflicted[v] = struct{}{}
			}
		}
	}
	chains := make([]map[id.EventID]struct{}, len(states))
	keyedSets := make([]map[id.EventID]struct{}, len(states))
	for i, ids := range keyed {
		keyedSets[i] = make(map[id.EventID]struct{}, len(ids))
		for _, v := range ids {
			keyedSets[i][v] = struct{}{}
		}
		if len(ids) == 0 {
			continue
		}
		chain, err := r.p.AuthChain(r.ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("loading auth chain of %d conflicted events: %w", len(ids), err)
		}
		chains[i] = chain
	}
	inAll := func(eid id.EventID) bool {
		for i := range states {
			if _, ok := keyedSets[i][eid]; ok {
				continue
			}
			if _, ok := chains[i][eid]; !ok {
				return false
			}
		}
		return true
	}
	seen := make(map[id.EventID]struct{}, len(conflicted)*2)
	var candidates []id.EventID
	consider := func(eid id.EventID) {
		if _, ok := seen[eid]; ok {
			return
		}
		seen[eid] = struct{}{}
		if !inAll(eid) {
			candidates = append(candidates, eid)
		}
	}
	for i := range states {
		for eid := range keyedSets[i] {
			consider(eid)
		}
		for eid := range chains[i] {
			consider(eid)
		}
	}
	// Conflicted events are in the full conflicted set anyway.
	diff := candidates[:0]
	for _, eid := range candidates {
		if _, ok := conflicted[eid]; !ok {
			diff = append(diff, eid)
		}
	}

	want := make([]id.EventID, 0, len(conflicted)+len(diff)+1)
	for eid := range conflicted {
		want = append(want, eid)
	}
	want = append(want, diff...)
	if r.createID != "" {
		want = append(want, r.createID)
	}
	// The conflicted state subgraph lies within the auth chains of the
	// conflicted events, which are therefore loaded in the same batch.
	if v21 {
		for i := range chains {
			for eid := range chains[i] {
				want = append(want, eid)
			}
		}
	}
	if err := r.load(want); err != nil {
		return nil, err
	}
	if r.createID != "" {
		ix, ok := r.known(r.createID)
		if !ok {
			return nil, fmt.Errorf("create event %s is unknown", r.createID)
		}
		r.createIx = ix
		r.loadCreators()
	}

	// The other candidates are in the auth difference unless U holds them
	// or U's auth chain does. The first is a cheap test by key; only the
	// candidates that pass it need the auth chain of U.
	kept := diff[:0]
	for _, eid := range diff {
		if ix, ok := r.known(eid); ok && !r.inUnconflicted(split, ix) {
			kept = append(kept, eid)
		}
	}
	diff = kept
	if len(diff) > 0 {
		unconflictedIDs := make([]id.EventID, 0, len(split.ref))
		for k, v := range split.ref {
			if _, c := split.conflicted[k]; !c {
				unconflictedIDs = append(unconflictedIDs, v)
			}
		}
		if len(unconflictedIDs) > 0 {
			chainU, err := r.p.AuthChain(r.ctx, unconflictedIDs)
			if err != nil {
				return nil, fmt.Errorf("loading auth chain of %d unconflicted events: %w", len(unconflictedIDs), err)
			}
			kept := diff[:0]
			for _, eid := range diff {
				if _, ok := chainU[eid]; !ok {
					kept = append(kept, eid)
				}
			}
			diff = kept
		}
	}

	member := make(map[int32]struct{}, len(conflicted)+len(diff))
	var fcs []int32
	add := func(ix int32) {
		if _, ok := member[ix]; ok || r.nodes[ix].evt.StateKey == nil {
			return
		}
		member[ix] = struct{}{}
		fcs = append(fcs, ix)
	}
	for eid := range conflicted {
		if ix, ok := r.known(eid); ok {
			add(ix)
		}
	}
	for _, eid := range diff {
		ix, _ := r.known(eid)
		add(ix)
	}
	if v21 {
		sub, err := r.conflictedSubgraph(conflicted, chains)
		if err != nil {
			return nil, err
		}
		for _, ix := range sub {
			add(ix)
		}
	}
	return fcs, nil
}

// inUnconflicted reports whether the event is the unconflicted state at its
// key.
func (r *resolver) inUnconflicted(split splitV2, ix int32) bool {
	evt := r.nodes[ix].evt
	if evt.StateKey == nil {
		return false
	}
	v, ok := split.unconflicted(stateKeyOf(evt))
	return ok && v == r.nodes[ix].id
}

// conflictedSubgraph returns the conflicted state subgraph (room version 12,
// "Definitions"): the events on auth_events paths from one conflicted event to
// another, endpoints included. These are the events of the conflicted events'
// auth chains from which a conflicted event can be reached.
func (r *resolver) conflictedSubgraph(conflicted map[id.EventID]struct{}, chains []map[id.EventID]struct{}) ([]int32, error) {
	var area []int32
	inArea := make(map[int32]struct{})
	addArea := func(eid id.EventID) {
		if ix, ok := r.known(eid); ok {
			if _, dup := inArea[ix]; !dup {
				inArea[ix] = struct{}{}
				area = append(area, ix)
			}
		}
	}
	for eid := range conflicted {
		addArea(eid)
	}
	for _, chain := range chains {
		for eid := range chain {
			addArea(eid)
		}
	}
	if err := r.loadAuth(area); err != nil {
		return nil, err
	}
	const (
		unvisited = iota
		visiting
		unreaching
		reaching
	)
	mark := make([]uint8, len(r.nodes))
	isConflicted := make([]bool, len(r.nodes))
	for eid := range conflicted {
		if ix, ok := r.known(eid); ok {
			isConflicted[ix] = true
		}
	}
	type frame struct {
		ix   int32
		next int
	}
	var stack []frame
	var out []int32
	for _, start := range area {
		if mark[start] != unvisited {
			continue
		}
		mark[start] = visiting
		stack = append(stack[:0], frame{ix: start})
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			auth := r.nodes[top.ix].auth
			if top.next < len(auth) {
				a := auth[top.next]
				top.next++
				if _, ok := inArea[a]; ok && mark[a] == unvisited {
					mark[a] = visiting
					stack = append(stack, frame{ix: a})
				}
				continue
			}
			ix := top.ix
			stack = stack[:len(stack)-1]
			reach := isConflicted[ix]
			for _, a := range auth {
				if mark[a] == reaching {
					reach = true
					break
				}
			}
			if reach {
				mark[ix] = reaching
				out = append(out, ix)
			} else {
				mark[ix] = unreaching
			}
		}
	}
	return out, nil
}

// powerEventsClosure returns the power events of the full conflicted set
// together with the events of the full conflicted set that they reach through
// auth events. As in the reference implementations the walk only passes
// through events of the full conflicted set.
func (r *resolver) powerEventsClosure(fcs []int32) []int32 {
	inFCS := make(map[int32]struct{}, len(fcs))
	for _, ix := range fcs {
		inFCS[ix] = struct{}{}
	}
	inX := make(map[int32]struct{})
	var x, stack []int32
	for _, ix := range fcs {
		if _, ok := inX[ix]; ok || !isPowerEvent(r.nodes[ix].evt) {
			continue
		}
		inX[ix] = struct{}{}
		x = append(x, ix)
		stack = append(stack[:0], ix)
		for len(stack) > 0 {
			cur := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, a := range r.nodes[cur].auth {
				if _, ok := inFCS[a]; !ok {
					continue
				}
				if _, ok := inX[a]; ok {
					continue
				}
				inX[a] = struct{}{}
				x = append(x, a)
				stack = append(stack, a)
			}
		}
	}
	return x
}

// reverseTopologicalPowerOrder sorts events by the reverse topological power
// ordering (room version 2, "Definitions"): Kahn's algorithm on the auth
// event DAG, taking at each step the candidate whose sender has the greatest
// power level, then the smallest origin_server_ts, then the smallest event ID.
func (r *resolver) reverseTopologicalPowerOrder(events []int32) []int32 {
	m := len(events)
	if m == 0 {
		return nil
	}
	local := make(map[int32]int32, m)
	for i, ix := range events {
		local[ix] = int32(i)
	}
	power := make([]int64, m)
	ts := make([]int64, m)
	ids := make([]id.EventID, m)
	outdeg := make([]int32, m)
	indeg := make([]int32, m+1)
	for i, ix := range events {
		n := &r.nodes[ix]
		power[i] = r.senderPower(ix)
		ts[i] = n.evt.OriginServerTS
		ids[i] = n.id
		for _, a := range n.auth {
			if t, ok := local[a]; ok {
				outdeg[i]++
				indeg[t+1]++
			}
		}
	}
	// Reverse edges in compressed rows: the events citing event t are
	// parents[start[t]:start[t+1]].
	start := indeg
	for i := 1; i <= m; i++ {
		start[i] += start[i-1]
	}
	parents := make([]int32, start[m])
	fill := slices.Clone(start[:m])
	for i, ix := range events {
		for _, a := range r.nodes[ix].auth {
			if t, ok := local[a]; ok {
				parents[fill[t]] = int32(i)
				fill[t]++
			}
		}
	}
	h := eventHeap{less: func(a, b int32) bool {
		if power[a] != power[b] {
			return power[a] > power[b]
		}
		if ts[a] != ts[b] {
			return ts[a] < ts[b]
		}
		return ids[a] < ids[b]
	}}
	for i := range m {
		if outdeg[i] == 0 {
			h.push(int32(i))
		}
	}
	out := make([]int32, 0, m)
	for h.len() > 0 {
		i := h.pop()
		out = append(out, events[i])
		for _, p := range parents[start[i]:start[i+1]] {
			outdeg[p]--
			if outdeg[p] == 0 {
				h.push(p)
			}
		}
	}
	// Events on an auth cycle never become candidates; a DAG has none, but
	// a malformed one must not make events vanish silently, so they follow in
	// tie-break order.
	if len(out) < m {
		var rest []int32
		for i := range m {
			if outdeg[i] > 0 {
				rest = append(rest, int32(i))
			}
		}
		slices.SortFunc(rest, func(a, b int32) int {
			if h.less(a, b) {
				return -1
			}
			return 1
		})
		for _, i := range rest {
			out = append(out, events[i])
		}
	}
	return out
}

// eventHeap is a binary min-heap of local event indices.
type eventHeap struct {
	items []int32
	less  func(a, b int32) bool
}

func (h *eventHeap) len() int { return len(h.items) }

func (h *eventHeap) push(v int32) {
	h.items = append(h.items, v)
	i := len(h.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			break
		}
		h.items[i], h.items[p] = h.items[p], h.items[i]
		i = p
	}
}

func (h *eventHeap) pop() int32 {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items = h.items[:last]
	i := 0
	for {
		l, rgt, small := 2*i+1, 2*i+2, i
		if l < last && h.less(h.items[l], h.items[small]) {
			small = l
		}
		if rgt < last && h.less(h.items[rgt], h.items[small]) {
			small = rgt
		}
		if small == i {
			return top
		}
		h.items[i], h.items[small] = h.items[small], h.items[i]
		i = small
	}
}

// partialStateEvent returns the event at key in the partially resolved state,
// or -1 if there is none.
func (r *resolver) partialStateEvent(key pdu.StateKey, partial map[pdu.StateKey]int32, base func(pdu.StateKey) (id.EventID, bool)) (int32, error) {
	if ix, ok := partial[key]; ok {
		return ix, nil
	}
	if base == nil {
		return -1, nil
	}
	eid, ok := base(key)
	if !ok {
		return -1, nil
	}
	if err := r.load([]id.EventID{eid}); err != nil {
		return -1, err
	}
	ix, ok := r.known(eid)
	if !ok {
		return -1, fmt.Errorf("state event %s is unknown", eid)
	}
	return ix, nil
}

// iterativeAuthChecks applies the iterative auth checks algorithm (room
// version 2, "Definitions") to events in order, updating partial, which is
// layered over base (nil for none). Auth events are selected from that state;
// keys it lacks are filled from the event's own auth events unless those were
// rejected.
func (r *resolver) iterativeAuthChecks(events []int32, partial map[pdu.StateKey]int32, base func(pdu.StateKey) (id.EventID, bool)) error {
	if base != nil {
		var want []id.EventID
		for _, ix := range events {
			for _, k := range r.selection(ix) {
				if _, ok := partial[k]; ok {
					continue
				}
				if eid, ok := base(k); ok {
					want = append(want, eid)
				}
			}
		}
		if err := r.load(want); err != nil {
			return err
		}
	}
	for i, ix := range events {
		if i%256 == 0 {
			if err := r.ctx.Err(); err != nil {
				return err
			}
		}
		buf := r.authBuf[:0]
		for _, k := range r.selection(ix) {
			if j, ok := partial[k]; ok {
				buf = append(buf, r.nodes[j].evt)
				continue
			}
			if base != nil {
				if eid, ok := base(k); ok {
					j, ok := r.known(eid)
					if !ok {
						return fmt.Errorf("state event %s is unknown", eid)
					}
					buf = append(buf, r.nodes[j].evt)
					continue
				}
			}
			for _, a := range r.nodes[ix].auth {
				if ae := r.nodes[a].evt; isKey(ae, k) && !ae.InternalMeta.Rejected {
					buf = append(buf, ae)
					break
				}
			}
		}
		r.authBuf = buf
		evt := r.nodes[ix].evt
		allowed, err := r.authorise(evt, buf)
		clear(buf)
		if err != nil {
			return err
		}
		if allowed {
			partial[stateKeyOf(evt)] = ix
		}
	}
	return nil
}

// plParent returns the first m.room.power_levels event among the auth events
// of an event, or -1.
func (r *resolver) plParent(ix int32) (int32, error) {
	if !r.nodes[ix].authDone {
		if err := r.loadAuth([]int32{ix}); err != nil {
			return -1, err
		}
	}
	for _, a := range r.nodes[ix].auth {
		if isKey(r.nodes[a].evt, keyPowerLevels) {
			return a, nil
		}
	}
	return -1, nil
}

// mainlineOrder sorts events by the mainline ordering based on the power
// levels event p0 (room version 2, "Definitions"): events whose power levels
// chain meets the mainline of p0 further from p0 come first, those that never
// meet it first of all; ties go by origin_server_ts and then event ID.
func (r *resolver) mainlineOrder(events []int32, p0 int32) ([]int32, error) {
	const never = math.MaxInt
	position := make(map[int32]int)
	for p, i := p0, 0; p >= 0; i++ {
		if _, seen := position[p]; seen {
			break
		}
		position[p] = i
		next, err := r.plParent(p)
		if err != nil {
			return nil, err
		}
		p = next
	}
	memo := make(map[int32]int)
	type sortKey struct {
		ix  int32
		pos int
		ts  int64
		id  id.EventID
	}
	keys := make([]sortKey, len(events))
	var path []int32
	for i, ix := range events {
		pos := never
		path = path[:0]
		q, err := r.plParent(ix)
		if err != nil {
			return nil, err
		}
		for steps := 0; q >= 0 && steps <= len(r.nodes); steps++ {
			if v, ok := position[q]; ok {
				pos = v
				break
			}
			if v, ok := memo[q]; ok {
				pos = v
				break
			}
			path = append(path, q)
			if q, err = r.plParent(q); err != nil {
				return nil, err
			}
		}
		for _, p := range path {
			memo[p] = pos
		}
		n := &r.nodes[ix]
		keys[i] = sortKey{ix: ix, pos: pos, ts: n.evt.OriginServerTS, id: n.id}
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if a.pos != b.pos {
			return cmp.Compare(b.pos, a.pos)
		}
		if a.ts != b.ts {
			return cmp.Compare(a.ts, b.ts)
		}
		return cmp.Compare(a.id, b.id)
	})
	out := events[:0]
	for _, k := range keys {
		out = append(out, k.ix)
	}
	return out, nil
}
