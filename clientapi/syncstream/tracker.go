package syncstream

import "sync"

// Tracker hands out positions of one stream and knows the highest position
// below which every allocated position has finished (committed or abandoned),
// so readers never skip a write that commits late.
type Tracker struct {
	mu      sync.Mutex
	next    int64
	cur     int64
	pending map[int64]struct{}
}

// NewTracker returns a tracker whose positions continue after max.
func NewTracker(max int64) *Tracker {
	return &Tracker{next: max + 1, cur: max, pending: make(map[int64]struct{})}
}

// Allocate reserves the next position. Every allocated position must be
// finished, whether its write succeeded or not.
func (t *Tracker) Allocate() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.next
	t.next++
	t.pending[p] = struct{}{}
	return p
}

// Finish marks p done and returns the new current position.
func (t *Tracker) Finish(p int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, p)
	for t.cur+1 < t.next {
		if _, busy := t.pending[t.cur+1]; busy {
			break
		}
		t.cur++
	}
	return t.cur
}

// Current is the highest position at and below which every write has finished.
func (t *Tracker) Current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}
