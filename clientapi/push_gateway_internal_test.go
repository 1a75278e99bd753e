package clientapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestPushGatewayBackoff: a gateway that keeps failing is left alone for a
// while after one round of retries, so that a dead gateway cannot hold the
// few delivery workers (and every other user's notifications) for a minute
// per notification; a gateway that answers again is used at once.
func TestPushGatewayBackoff(t *testing.T) {
	var hits atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	defer gw.Close()
	url := gw.URL + pushNotifyPath
	p := &pushSender{client: newPushClient(nil, nil), retryBase: time.Millisecond}
	ctx := context.Background()

	if _, err := p.post(ctx, url, []byte(`{}`)); err == nil {
		t.Fatal("a failing gateway was reported as reached")
	}
	if n := hits.Load(); n != pushAttempts {
		t.Fatalf("first notification: %d attempts, want %d", n, pushAttempts)
	}
	// More notifications while the gateway is backed off cost no request.
	for range 5 {
		if _, err := p.post(ctx, url, []byte(`{}`)); err == nil {
			t.Fatal("a backed-off gateway was reported as reached")
		}
	}
	if n := hits.Load(); n != pushAttempts {
		t.Fatalf("backed-off gateway got %d requests, want %d", n, pushAttempts)
	}
	// Once the backoff has passed, the gateway is tried again; an answer
	// clears its record.
	failing.Store(false)
	p.gateways.mu.Lock()
	p.gateways.down[gatewayKey(url)] = gatewayDown{failures: 1} // the backoff has passed
	p.gateways.mu.Unlock()
	if _, err := p.post(ctx, url, []byte(`{}`)); err != nil {
		t.Fatalf("recovered gateway: %v", err)
	}
	if _, err := p.post(ctx, url, []byte(`{}`)); err != nil {
		t.Fatalf("recovered gateway, again: %v", err)
	}
	if n := hits.Load(); n != pushAttempts+2 {
		t.Fatalf("recovered gateway got %d requests in all, want %d", n, pushAttempts+2)
	}
}

func TestGatewayHealthBackoffGrowsAndIsBounded(t *testing.T) {
	var h gatewayHealth
	now := time.Unix(1000, 0)
	const u = "https://push.example.org/_matrix/push/v1/notify"
	var last time.Duration
	for i := range 12 {
		h.failed(u, now)
		d := h.down[gatewayKey(u)].until.Sub(now)
		if d < last || d > gatewayBackoffMax || d < gatewayBackoffMin {
			t.Fatalf("failure %d: backoff %v after %v", i, d, last)
		}
		last = d
	}
	if last != gatewayBackoffMax {
		t.Fatalf("backoff capped at %v, want %v", last, gatewayBackoffMax)
	}
	if !h.isDown(u, now) || h.isDown(u, now.Add(gatewayBackoffMax+time.Second)) {
		t.Fatal("isDown does not follow the backoff")
	}
	// The same host under another path or query is the same gateway.
	if !h.isDown("https://PUSH.example.org/_matrix/push/v1/notify?x=1", now) {
		t.Fatal("gateway keyed by more than its host")
	}
	h.ok(u)
	if h.isDown(u, now) {
		t.Fatal("a gateway that answered is still down")
	}
	for i := range maxTrackedGateways + 10 {
		h.failed("https://gw"+strconv.Itoa(i)+".example.org/_matrix/push/v1/notify", now)
	}
	if len(h.down) > maxTrackedGateways {
		t.Fatalf("%d gateways tracked, bound %d", len(h.down), maxTrackedGateways)
	}
}
