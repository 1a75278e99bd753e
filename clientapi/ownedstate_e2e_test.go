package clientapi_test

import (
	"fmt"
	"testing"

	"hearth/internal/testserver"
)

// TestOwnedStateRoomVersions checks MSC3757 (restricting who can overwrite a
// state event) over HTTP in its unstable room versions, and that room v10
// keeps the spec's rule, with the requests Complement's tests/msc3757 makes.
func TestOwnedStateRoomVersions(t *testing.T) {
	const evType = "com.example.test"
	const suffix = "_state_key_suffix:!@#$123"
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		creator := registerUser(t, s, "creator")
		user1 := registerUser(t, s, "user1")
		user2 := registerUser(t, s, "user2")
		c, u1, u2 := creator.id.String(), user1.id.String(), user2.id.String()
		type step struct {
			name     string
			sender   *user
			stateKey string
			status   int
			errcode  string
		}
		for _, tc := range []struct {
			version string
			steps   []step
		}{
			{"10", []step{
				{"own user ID", user1, u1, 200, ""},
				{"own suffixed user ID", creator, c + suffix, 403, "M_FORBIDDEN"},
				{"another user ID", creator, u1, 403, "M_FORBIDDEN"},
				{"another suffixed user ID", creator, u1 + suffix, 403, "M_FORBIDDEN"},
				{"non-member user ID", creator, "@notinroom:other.test", 403, "M_FORBIDDEN"},
				{"malformed user ID", creator, "@oops", 403, "M_FORBIDDEN"},
			}},
			{"org.matrix.msc3757.10", []step{
				{"own suffixed user ID", user1, u1 + suffix, 200, ""},
				{"creator over another user ID", creator, u1, 200, ""},
				{"creator over another suffixed user ID", creator, u1 + suffix, 200, ""},
				{"another user ID", user1, u2, 403, "M_FORBIDDEN"},
				{"another suffixed user ID", user1, u2 + suffix, 403, "M_FORBIDDEN"},
				{"creator's user ID", user1, c + "_x", 403, "M_FORBIDDEN"},
				{"unseparated suffix", user1, u1 + suffix[1:], 403, "M_FORBIDDEN"},
				{"misplaced user ID", user1, "@prefix_" + u1 + suffix, 403, "M_FORBIDDEN"},
				{"creator over non-member user ID", creator, "@notinroom:other.test", 200, ""},
				{"malformed user ID", creator, "@oops", 400, "M_BAD_JSON"},
				{"improperly suffixed", creator, c + "@" + suffix[1:], 400, "M_BAD_JSON"},
			}},
			{"org.matrix.msc3757.11", []step{
				{"own suffixed user ID", user2, u2 + suffix, 200, ""},
				{"creator over another suffixed user ID", creator, u2 + "_device", 200, ""},
				{"another suffixed user ID", user2, u1 + suffix, 403, "M_FORBIDDEN"},
				{"malformed user ID", user2, "@oops", 400, "M_BAD_JSON"},
			}},
		} {
			t.Run(tc.version, func(t *testing.T) {
				roomID := rtCreateRoom(t, creator, map[string]any{
					"room_version": tc.version,
					"preset":       "public_chat",
					"power_level_content_override": map[string]any{
						"events": map[string]int{evType: 0},
					},
				})
				rtJoin(t, user1, string(roomID)).expect(t, 200, "")
				rtJoin(t, user2, string(roomID)).expect(t, 200, "")
				// The create event has the format of the base version: v10
				// and before keep content.creator, v11 drops it.
				create := creator.api.do("GET", fmt.Sprintf("%s/rooms/%s/state/m.room.create/", v3, esc(string(roomID))), nil).expect(t, 200, "")
				if got := create.str("room_version"); got != tc.version {
					t.Fatalf("create room_version = %q, want %q", got, tc.version)
				}
				if hasCreator := create.str("creator") != ""; hasCreator != (tc.version != "org.matrix.msc3757.11") {
					t.Errorf("create content %s: creator present = %v", create, hasCreator)
				}
				for _, st := range tc.steps {
					r := rtState(t, st.sender, roomID, evType, st.stateKey, map[string]any{"n": st.name})
					r.expect(t, st.status, st.errcode)
					if st.status != 200 {
						continue
					}
					got := creator.api.do("GET", fmt.Sprintf("%s/rooms/%s/state/%s/%s", v3, esc(string(roomID)), esc(evType), esc(st.stateKey)), nil).expect(t, 200, "")
					if got.str("n") != st.name {
						t.Errorf("%s: state is %s", st.name, got)
					}
				}
			})
		}
	})
}
