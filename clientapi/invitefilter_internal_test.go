package clientapi

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything", true},
		{"hs1", "hs1", true},
		{"hs1", "hs10", false},
		{"hs*", "hs1", true},
		{"hs*", "h", false},
		{"h?1", "hs1", true},
		{"h?1", "h1", false},
		{"?", "é", true}, // one character, two bytes
		{"??", "é", false},
		{"@user-?*", "@user-1:hs1", true},
		{"@user-?*", "@user-", false},
		{"*.example.org", "a.b.example.org", true},
		{"*.example.org", "example.org", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"ça*", "ça va", true},
	}
	for _, tc := range tests {
		if got := matchGlob(tc.pattern, tc.s); got != tc.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestStripPort(t *testing.T) {
	for in, want := range map[string]string{
		"example.org":       "example.org",
		"example.org:8448":  "example.org",
		"1.2.3.4:80":        "1.2.3.4",
		"[::1]":             "[::1]",
		"[::1]:8448":        "[::1]",
		"[2001:db8::1]":     "[2001:db8::1]",
		"host:":             "host:",
		"odd:name":          "odd:name",
		"127.0.0.1:41234":   "127.0.0.1",
		"hs1":               "hs1",
		"[2001:db8::1]:443": "[2001:db8::1]",
	} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInviteFilterAction(t *testing.T) {
	const (
		bob     = id.UserID("@bob:good.example")
		mallory = id.UserID("@mallory:good.example")
		eve     = id.UserID("@eve:evil.example:8448")
		carol   = id.UserID("@Carol:Evil.Example")
	)
	tests := []struct {
		name    string
		content string
		want    map[id.UserID]InviteAction
	}{
		{"no config", `{}`, map[id.UserID]InviteAction{bob: InviteAllow, eve: InviteAllow}},
		{"block a user", `{"blocked_users":["@bob:good.example"]}`,
			map[id.UserID]InviteAction{bob: InviteBlock, mallory: InviteAllow}},
		{"ignore a user", `{"ignored_users":["@bob:good.example"]}`,
			map[id.UserID]InviteAction{bob: InviteIgnore, mallory: InviteAllow}},
		{"block a server, port stripped, case folded", `{"blocked_servers":["evil.example"]}`,
			map[id.UserID]InviteAction{eve: InviteBlock, carol: InviteBlock, bob: InviteAllow}},
		{"glob servers", `{"blocked_servers":["*.example"]}`,
			map[id.UserID]InviteAction{eve: InviteBlock, bob: InviteBlock}},
		{"glob users", `{"ignored_users":["@?o*"]}`,
			map[id.UserID]InviteAction{bob: InviteIgnore, mallory: InviteAllow}},
		{"allowed user beats blocked server", `{"allowed_users":["@eve:*"],"blocked_servers":["*"]}`,
			map[id.UserID]InviteAction{eve: InviteAllow, bob: InviteBlock}},
		{"blocked user beats allowed server", `{"blocked_users":["@mallory:good.example"],"allowed_servers":["good.example"],"blocked_servers":["*"]}`,
			map[id.UserID]InviteAction{mallory: InviteBlock, bob: InviteAllow, eve: InviteBlock}},
		{"allow beats ignore beats block", `{"allowed_users":["@bob:*"],"ignored_users":["@bob:*","@mallory:*"],"blocked_users":["*"]}`,
			map[id.UserID]InviteAction{bob: InviteAllow, mallory: InviteIgnore, eve: InviteBlock}},
		{"ignored server beats blocked server", `{"ignored_servers":["evil.example"],"blocked_servers":["*"]}`,
			map[id.UserID]InviteAction{eve: InviteIgnore, bob: InviteBlock}},
		{"null lists are missing ones", `{"blocked_users":null,"blocked_servers":["evil.example"]}`,
			map[id.UserID]InviteAction{eve: InviteBlock, bob: InviteAllow}},
		{"disabled", `{"enabled":false,"blocked_servers":["*"]}`,
			map[id.UserID]InviteAction{eve: InviteAllow}},
		{"enabled true", `{"enabled":true,"blocked_servers":["*"]}`,
			map[id.UserID]InviteAction{eve: InviteBlock}},
		{"a list that is not an array voids the config", `{"blocked_servers":"*"}`,
			map[id.UserID]InviteAction{eve: InviteAllow}},
		{"a non-string entry voids the config", `{"blocked_servers":["*", 1]}`,
			map[id.UserID]InviteAction{eve: InviteAllow}},
		{"not JSON", `{"blocked_servers":[`, map[id.UserID]InviteAction{eve: InviteAllow}},
		{"not an object", `["*"]`, map[id.UserID]InviteAction{eve: InviteAllow}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := parseInviteFilter([]byte(tc.content))
			for sender, want := range tc.want {
				if got := f.action(sender); got != want {
					t.Errorf("action(%s) = %v, want %v", sender, got, want)
				}
				if got := f.hides(sender); got != (want != InviteAllow) {
					t.Errorf("hides(%s) = %v", sender, got)
				}
			}
		})
	}
}

func BenchmarkInviteFilterAction(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"blocked_users":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"@spammer-` + strings.Repeat("x", i%7) + `*:spam.example"`)
	}
	sb.WriteString(`],"blocked_servers":["*.spam.example"]}`)
	f := parseInviteFilter([]byte(sb.String()))
	b.ReportAllocs()
	for b.Loop() {
		if f.action("@alice:good.example") != InviteAllow {
			b.Fatal("blocked")
		}
	}
}
