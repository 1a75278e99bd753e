package clientapi

import (
	"math"
	"net/http"
	"sync"
	"time"

	"hearth/httputil"
)

// rateLimiter is an in-memory token bucket per client address (Client-Server
// API, "Rate limiting"): each address may make burst requests at once and
// perSecond on average.
type rateLimiter struct {
	perSecond float64
	burst     float64

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the limiter's memory; beyond it, idle buckets are swept at
// once and, failing that, arbitrary ones dropped.
const maxBuckets = 100_000

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{perSecond: perSecond, burst: float64(burst), buckets: map[string]*bucket{}, lastSweep: time.Now()}
}

// allow takes a token for key, or reports how long until one is available.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute || len(l.buckets) >= maxBuckets {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.perSecond)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.perSecond * float64(time.Second))
	return false, wait
}

// sweep drops buckets that have refilled completely (they are equivalent to no
// bucket at all).
func (l *rateLimiter) sweep(now time.Time) {
	l.lastSweep = now
	full := time.Duration(l.burst / l.perSecond * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < maxBuckets {
			break
		}
		delete(l.buckets, k)
	}
}

// check applies the limiter (nil when rate limits are off) to a request.
func (l *rateLimiter) check(r *http.Request) error {
	if l == nil {
		return nil
	}
	ok, wait := l.allow(clientIP(r), time.Now())
	if ok {
		return nil
	}
	ms := wait.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return httputil.LimitExceeded(ms)
}
