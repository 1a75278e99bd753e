package clientapi

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"hearth/clientapi/accounts"
	"hearth/config"
	"hearth/storage"
)

func newTestAPI(tb testing.TB) *API {
	tb.Helper()
	db, err := storage.Open(context.Background(), filepath.Join(tb.TempDir(), "h.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	cfg := config.Default()
	cfg.ServerName = "hs.test"
	a, err := New(cfg, db, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// TestTokenCacheInvalidation: revoking tokens through the API drops them from
// the cache at once, and expired tokens are soft logouts.
func TestTokenCacheInvalidation(t *testing.T) {
	a := newTestAPI(t)
	ctx := context.Background()
	if err := a.accounts.Create(ctx, "alice", "", false); err != nil {
		t.Fatal(err)
	}
	t1, _ := a.accounts.Login(ctx, accounts.NewLogin{Localpart: "alice"})
	t2, _ := a.accounts.Login(ctx, accounts.NewLogin{Localpart: "alice"})
	req := func(tok string) error {
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.authenticate(r)
		return err
	}
	for _, tok := range []string{t1.AccessToken, t2.AccessToken} {
		if err := req(tok); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.tokens.byHash) != 2 {
		t.Fatalf("cache holds %d tokens", len(a.tokens.byHash))
	}
	if err := a.deleteDevices(ctx, "alice", []string{t1.DeviceID}); err != nil {
		t.Fatal(err)
	}
	if err := req(t1.AccessToken); err == nil {
		t.Fatal("deleted device's token still accepted")
	}
	if err := req(t2.AccessToken); err != nil {
		t.Fatalf("other device's token rejected: %v", err)
	}
	a.SetAccessTokenLifetime(time.Millisecond)
	t3, _ := a.accounts.Login(ctx, accounts.NewLogin{Localpart: "alice", Lifetime: a.accessTokenLifetime()})
	time.Sleep(5 * time.Millisecond)
	err := req(t3.AccessToken)
	if err == nil || err.Error() != "M_UNKNOWN_TOKEN (401): Access token has expired" {
		t.Fatalf("expired token: %v", err)
	}
}

// BenchmarkAuthenticate measures access-token authentication as every request
// pays it: a cache hit (hash + map lookup) and, for comparison, a miss.
func BenchmarkAuthenticate(b *testing.B) {
	a := newTestAPI(b)
	ctx := context.Background()
	if err := a.accounts.Create(ctx, "alice", "", false); err != nil {
		b.Fatal(err)
	}
	tk, err := a.accounts.Login(ctx, accounts.NewLogin{Localpart: "alice"})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/x", nil)
	r.Header.Set("Authorization", "Bearer "+tk.AccessToken)
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.authenticate(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.tokens.invalidate("alice", nil)
			if _, err := a.authenticate(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
