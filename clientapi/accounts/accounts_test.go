package accounts

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"hearth/storage"
	"hearth/storage/storagetest"
)

func TestCreateAccounts(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := NewStore(db, "example.org")
		s.SetBcryptCost(bcrypt.MinCost)
		if err := s.Create(ctx, "alice", "pw", false); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, "bob", "pw", false); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, "alice", "pw", false); !errors.Is(err, ErrUserInUse) {
			t.Fatalf("duplicate: %v", err)
		}
		for _, bad := range []string{"", "Alice", "al ice", "al:ice", "élan"} {
			if err := s.Create(ctx, bad, "pw", false); !errors.Is(err, ErrInvalidUsername) {
				t.Errorf("%q: %v", bad, err)
			}
		}
		a, _ := s.Get(ctx, "alice")
		b, _ := s.Get(ctx, "bob")
		if a == nil || !a.IsAdmin || b == nil || b.IsAdmin {
			t.Fatalf("first user must be admin, second not: %+v %+v", a, b)
		}
	})
}

// TestFirstUserAdminConcurrent: however many accounts are created at once on
// an empty server, exactly one becomes admin; guests never do.
func TestFirstUserAdminConcurrent(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := NewStore(db, "example.org")
		s.SetBcryptCost(bcrypt.MinCost)
		if err := s.CreateAccount(ctx, NewAccount{Localpart: "guest1", Guest: true}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Create(ctx, fmt.Sprintf("user%d", i), "pw", false)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		var admins int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM accounts WHERE is_admin = TRUE`).Scan(&admins); err != nil || admins != 1 {
			t.Fatalf("admins = %d, %v", admins, err)
		}
		if g, _ := s.Get(ctx, "guest1"); g == nil || g.IsAdmin || !g.IsGuest {
			t.Fatalf("guest: %+v", g)
		}
	})
}

// TestAccountDataPositions: concurrent writes get distinct, increasing
// positions per user, and "since" queries see each change once.
func TestAccountDataPositions(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := NewStore(db, "example.org")
		s.SetBcryptCost(bcrypt.MinCost)
		for _, u := range []string{"alice", "bob"} {
			if err := s.Create(ctx, u, "", false); err != nil {
				t.Fatal(err)
			}
		}
		const n = 20
		var wg sync.WaitGroup
		positions := make(chan int64, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pos, err := s.SetAccountData(ctx, "alice", "", fmt.Sprintf("t.%d", i), []byte(`{}`))
				if err != nil {
					t.Error(err)
				}
				positions <- pos
			}()
		}
		wg.Wait()
		close(positions)
		seen := map[int64]bool{}
		for p := range positions {
			if seen[p] || p < 1 || p > n {
				t.Fatalf("position %d repeated or out of range", p)
			}
			seen[p] = true
		}
		if _, err := s.SetAccountData(ctx, "bob", "!r:x", "t", []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.AccountDataPos(ctx, "bob"); p != 1 {
			t.Fatalf("bob's position is his own: %d", p)
		}
		since, err := s.AccountDataSince(ctx, "alice", 15)
		if err != nil || len(since) != 5 || since[0].StreamPos != 16 {
			t.Fatalf("since 15: %+v %v", since, err)
		}
		if _, err := s.SetAccountData(ctx, "alice", "", "t.0", []byte(`{"v":2}`)); err != nil {
			t.Fatal(err)
		}
		since, _ = s.AccountDataSince(ctx, "alice", n)
		if len(since) != 1 || since[0].Type != "t.0" || string(since[0].Content) != `{"v":2}` {
			t.Fatalf("overwrite: %+v", since)
		}
		if _, err := s.SetAccountData(ctx, "nobody", "", "t", []byte(`{}`)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
	})
}

// TestUIAExpiryReleasesToken: an abandoned registration session gives its
// pending registration-token use back when it expires.
func TestUIAExpiryReleasesToken(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := NewStore(db, "example.org")
		one := int64(1)
		if _, err := s.CreateRegistrationToken(ctx, &RegistrationToken{Token: "tok", UsesAllowed: &one}, 0); err != nil {
			t.Fatal(err)
		}
		sess, err := s.CreateUIASession(ctx, "register", "")
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := s.ReserveRegistrationToken(ctx, sess, "tok", "m.login.registration_token"); !ok || err != nil {
			t.Fatalf("reserve: %v %v", ok, err)
		}
		other, _ := s.CreateUIASession(ctx, "register", "")
		if ok, _ := s.ReserveRegistrationToken(ctx, other, "tok", "m.login.registration_token"); ok {
			t.Fatal("a one-use token was reserved twice")
		}
		old := time.Now().Add(-2 * UIASessionLifetime).UnixMilli()
		if _, err := db.Exec(ctx, `UPDATE uia_sessions SET created_ts = $1 WHERE session_id = $2`, old, sess.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UIASession(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session still usable: %v", err)
		}
		third, err := s.CreateUIASession(ctx, "register", "") // sweeps expired sessions
		if err != nil {
			t.Fatal(err)
		}
		if tok, _ := s.RegistrationToken(ctx, "tok"); tok.Pending != 0 {
			t.Fatalf("pending after expiry: %+v", tok)
		}
		if ok, _ := s.ReserveRegistrationToken(ctx, third, "tok", "m.login.registration_token"); !ok {
			t.Fatal("released use not reusable")
		}
		if err := s.CreateAccount(ctx, NewAccount{Localpart: "new", Password: "pw", UIASession: third.ID}); err != nil {
			t.Fatal(err)
		}
		if tok, _ := s.RegistrationToken(ctx, "tok"); tok.Pending != 0 || tok.Completed != 1 {
			t.Fatalf("after registration: %+v", tok)
		}
	})
}

// BenchmarkLookupAccessToken measures the database half of authentication (a
// cache miss): one indexed query joining the token to its account.
func BenchmarkLookupAccessToken(b *testing.B) {
	for name, dsn := range storagetest.DSNs(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			db, err := storage.Open(ctx, dsn)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			s := NewStore(db, "example.org")
			s.SetBcryptCost(bcrypt.MinCost)
			var hashes []TokenHash
			for i := range 1000 {
				lp := fmt.Sprintf("u%d", i)
				if err := s.Create(ctx, lp, "", false); err != nil {
					b.Fatal(err)
				}
				tk, err := s.Login(ctx, NewLogin{Localpart: lp})
				if err != nil {
					b.Fatal(err)
				}
				hashes = append(hashes, tk.Hash)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.LookupAccessToken(ctx, hashes[i%len(hashes)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
