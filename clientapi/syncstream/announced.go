package syncstream

import (
	"sync"
	"time"
)

// Announced follows a stream written by someone else (the room event stream)
// from the announcements it receives, in any order. Its current position is
// the highest one at and below which every position has been handled or
// resolved, so a reader that stops there has seen, through the announcements,
// everything it will ever be told about.
//
// An announcement is handled in two steps: Claim (exactly one claimant wins a
// position), then Done once the claimant's work is visible. Positions whose
// write failed or whose event was rejected are never announced; a reader finds
// them with Gaps and closes them with Resolve after checking the store.
type Announced struct {
	mu      sync.Mutex
	cur     int64
	seen    map[int64]bool // claimed positions above cur; true once done
	advance chan struct{}
}

// NewAnnounced starts following the stream after position start.
func NewAnnounced(start int64) *Announced {
	return &Announced{cur: start, seen: make(map[int64]bool), advance: make(chan struct{})}
}

// Claim takes position p for handling. It reports false when p was claimed or
// resolved already (the caller must then ignore it).
func (a *Announced) Claim(p int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p <= a.cur {
		return false
	}
	if _, dup := a.seen[p]; dup {
		return false
	}
	a.seen[p] = false
	return true
}

// Done marks a claimed position handled.
func (a *Announced) Done(p int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p > a.cur {
		a.seen[p] = true
		a.advanceLocked()
	}
}

func (a *Announced) advanceLocked() {
	moved := false
	for a.seen[a.cur+1] {
		delete(a.seen, a.cur+1)
		a.cur++
		moved = true
	}
	if moved {
		close(a.advance)
		a.advance = make(chan struct{})
	}
}

// Current is the highest position at and below which everything is handled.
func (a *Announced) Current() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// WaitFor waits up to d for the current position to reach p and returns the
// current position.
func (a *Announced) WaitFor(p int64, d time.Duration) int64 {
	var timer *time.Timer
	for {
		a.mu.Lock()
		cur, ch := a.cur, a.advance
		a.mu.Unlock()
		if cur >= p {
			return cur
		}
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return a.Current()
		}
	}
}

// maxGapScan bounds one Gaps call; a reader resolves larger gaps in steps.
const maxGapScan = 4096

// Gaps returns the positions in (current, upTo] nobody has claimed, oldest
// first (at most maxGapScan of the range is looked at).
func (a *Announced) Gaps(upTo int64) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if upTo-a.cur > maxGapScan {
		upTo = a.cur + maxGapScan
	}
	var out []int64
	for p := a.cur + 1; p <= upTo; p++ {
		if _, ok := a.seen[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// Resolve marks unclaimed positions as handled without an announcement (the
// store has no event for them, or the caller handled it).
func (a *Announced) Resolve(ps []int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range ps {
		if _, claimed := a.seen[p]; p > a.cur && !claimed {
			a.seen[p] = true
		}
	}
	a.advanceLocked()
}
