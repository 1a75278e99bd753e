package clientapi

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver"
	"hearth/storage"
	"hearth/storage/storagetest"
)

// TestPresenceHookBatches: local presence changes reach the presence hook in
// one batch per PresenceFederationDelay, with each user once at their latest
// presence, and syncs that change nothing send nothing.
func TestPresenceHookBatches(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		key, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		rs, err := roomserver.New(ctx, db, "hs.test", key)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSyncer(ctx, db, rs, SyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		batches := make(chan []PresenceUpdate, 16)
		s.SetPresenceHook(func(_ context.Context, ups []PresenceUpdate) { batches <- ups })
		alice, bob := id.UserID("@alice:hs.test"), id.UserID("@bob:hs.test")
		msg := "baking"

		for _, step := range []struct {
			name string
			do   func() error
			want string // "user state msg" per update, sorted; "" for no batch
		}{
			{"syncs of two users", func() error {
				for range 3 {
					for _, u := range []id.UserID{alice, bob} {
						if err := s.presence.touch(ctx, u, presenceOnline, nil); err != nil {
							return err
						}
					}
				}
				return nil
			}, "@alice:hs.test online ,@bob:hs.test online "},
			{"syncs that change nothing", func() error {
				for range 3 {
					if err := s.presence.touch(ctx, alice, presenceOnline, nil); err != nil {
						return err
					}
				}
				return nil
			}, ""},
			{"a status set, then changed again", func() error {
				if _, err := s.presence.set(ctx, alice, presenceOnline, &msg, false, true, false, nil); err != nil {
					return err
				}
				_, err := s.presence.set(ctx, alice, presenceUnavailable, &msg, false, true, false, nil)
				return err
			}, "@alice:hs.test unavailable baking"},
			{"a remote user's presence", func() error {
				return s.PutRemotePresence(ctx, PresenceUpdate{UserID: "@carol:other.test", Presence: presenceOnline, LastActiveAgo: -1})
			}, ""},
		} {
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			select {
			case ups := <-batches:
				for _, u := range ups {
					m := ""
					if u.StatusMsg != nil {
						m = *u.StatusMsg
					}
					got = append(got, string(u.UserID)+" "+u.Presence+" "+m)
				}
				slices.Sort(got)
			case <-time.After(3 * PresenceFederationDelay):
			}
			if g := strings.Join(got, ","); g != step.want {
				t.Fatalf("%s: batch %q, want %q", step.name, g, step.want)
			}
		}
	})
}
