package accounts

import (
	"context"
	"errors"
	"testing"

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
