package clientapi_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

const invitePermissionType = "org.matrix.msc4155.invite_permission_config"

// syncInvites returns the rooms in the invite section of an initial /sync,
// and whether the section was present at all.
func syncInvites(t *testing.T, u *user) (map[string]any, bool) {
	t.Helper()
	r := u.api.do("GET", v3+"/sync?timeout=0", nil).expect(t, http.StatusOK, "")
	inv, ok := rtField(r.body, "rooms", "invite").(map[string]any)
	return inv, ok
}

// TestInviteFiltering: MSC4155 invite permission configs, applied to invites
// from the same server and from another one. Blocked invites are refused
// with 403 ORG.MATRIX.MSC4155.M_INVITE_BLOCKED; ignored ones succeed for the
// inviter but never reach the invitee's /sync (which then has no invite
// section at all) until the config stops ignoring them.
func TestInviteFiltering(t *testing.T) {
	for kind := range storagetest.DSNs(t) {
		t.Run(kind, func(t *testing.T) {
			a := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			b := testserver.Start(t, storagetest.DSNs(t)[kind], testserver.Federated)
			a.ClientAPI.Accounts().SetBcryptCost(4)
			b.ClientAPI.Accounts().SetBcryptCost(4)
			local := registerUser(t, a, "carol") // inviter on the invitee's server
			remote := registerUser(t, b, "bob")  // inviter on another server
			serverB := b.Config().ServerName

			type outcome int
			const (
				allowed outcome = iota
				ignored
				blocked
			)
			tests := []struct {
				name           string
				config         map[string]any
				local, remoteO outcome
			}{
				{"no rules", map[string]any{}, allowed, allowed},
				{"block a user", map[string]any{"blocked_users": []string{string(remote.id)}}, allowed, blocked},
				{"ignore a user", map[string]any{"ignored_users": []string{string(local.id)}}, ignored, allowed},
				{"block a server", map[string]any{"blocked_servers": []string{"127.0.0.1"}}, blocked, blocked},
				// Server globs match server names without their port.
				{"a server glob with a port", map[string]any{"blocked_servers": []string{serverB}}, allowed, allowed},
				{"ignore every server", map[string]any{"ignored_servers": []string{"*"}}, ignored, ignored},
				{"glob users", map[string]any{"blocked_users": []string{"@?o*", "@c*"}}, blocked, blocked},
				{"allowed user on a blocked server", map[string]any{"allowed_users": []string{string(remote.id)}, "blocked_servers": []string{"*"}}, blocked, allowed},
				{"blocked user on an allowed server", map[string]any{"blocked_users": []string{string(local.id)}, "allowed_servers": []string{"127.0.0.1"}}, blocked, allowed},
				{"null fields", map[string]any{"blocked_users": nil, "ignored_servers": nil}, allowed, allowed},
				{"disabled", map[string]any{"enabled": false, "blocked_servers": []string{"*"}}, allowed, allowed},
			}
			var n atomic.Int64
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					invitee := registerUser(t, a, fmt.Sprintf("invitee%d", n.Add(1)))
					invitee.api.do("PUT", fmt.Sprintf("%s/user/%s/account_data/%s", v3, esc(string(invitee.id)), invitePermissionType), tc.config).
						expect(t, http.StatusOK, "")
					for _, inv := range []struct {
						who  *user
						want outcome
					}{{local, tc.local}, {remote, tc.remoteO}} {
						room := rtCreateRoom(t, inv.who, map[string]any{"preset": "private_chat"})
						r := inv.who.api.do("POST", v3+"/rooms/"+esc(string(room))+"/invite", map[string]any{"user_id": invitee.id})
						switch inv.want {
						case blocked:
							r.expect(t, http.StatusForbidden, "ORG.MATRIX.MSC4155.M_INVITE_BLOCKED")
							if rooms, _ := syncInvites(t, invitee); rooms[string(room)] != nil {
								t.Fatalf("blocked invite from %s in sync", inv.who.id)
							}
						case ignored:
							r.expect(t, http.StatusOK, "")
							if rooms, _ := syncInvites(t, invitee); rooms[string(room)] != nil {
								t.Fatalf("ignored invite from %s in sync", inv.who.id)
							}
						case allowed:
							r.expect(t, http.StatusOK, "")
							waitInvite(t, invitee, room)
						}
					}
				})
			}

			t.Run("invites are checked against the config at sync time", func(t *testing.T) {
				invitee := registerUser(t, a, "latecomer")
				cfgPath := fmt.Sprintf("%s/user/%s/account_data/%s", v3, esc(string(invitee.id)), invitePermissionType)
				invitee.api.do("PUT", cfgPath, map[string]any{"ignored_users": []string{string(local.id)}}).expect(t, http.StatusOK, "")
				room := rtCreateRoom(t, local, map[string]any{"preset": "private_chat"})
				local.api.do("POST", v3+"/rooms/"+esc(string(room))+"/invite", map[string]any{"user_id": invitee.id}).expect(t, http.StatusOK, "")
				if _, present := syncInvites(t, invitee); present {
					t.Fatal("the invite section is present with only an ignored invite in it")
				}
				invitee.api.do("PUT", cfgPath, map[string]any{}).expect(t, http.StatusOK, "")
				waitInvite(t, invitee, room)
			})

			t.Run("createRoom leaves out an invitee who blocks the creator", func(t *testing.T) {
				invitee := registerUser(t, a, "picky")
				invitee.api.do("PUT", fmt.Sprintf("%s/user/%s/account_data/%s", v3, esc(string(invitee.id)), invitePermissionType),
					map[string]any{"blocked_users": []string{string(local.id)}}).expect(t, http.StatusOK, "")
				other := registerUser(t, a, "easygoing")
				room := rtCreateRoom(t, local, map[string]any{"preset": "private_chat", "invite": []id.UserID{invitee.id, other.id}})
				waitInvite(t, other, room)
				if rooms, _ := syncInvites(t, invitee); rooms[string(room)] != nil {
					t.Fatal("the blocking user was invited")
				}
				// Inviting through PUT /state/m.room.member is refused too.
				rtState(t, local, room, "m.room.member", string(invitee.id), map[string]any{"membership": "invite"}).
					expect(t, http.StatusForbidden, "ORG.MATRIX.MSC4155.M_INVITE_BLOCKED")
			})
		})
	}
}

// waitInvite waits until u's initial /sync shows an invite to room.
func waitInvite(t *testing.T, u *user, room id.RoomID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rooms, _ := syncInvites(t, u); rooms[string(room)] != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("invite to %s never reached %s's sync", room, u.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
