package roomversion

import (
	"strconv"
	"testing"

	"maunium.net/go/mautrix/id"
)

// TestTableMatchesMautrix cross-checks every flag against mautrix's
// id.RoomVersion methods, an independent reading of the same spec pages.
func TestTableMatchesMautrix(t *testing.T) {
	for _, v := range All() {
		rv := v.SpecVersion()
		checks := []struct {
			name         string
			ours, theirs bool
		}{
			{"EnforceKeyValidity", v.EnforceKeyValidity, rv.EnforceSigningKeyValidity()},
			{"SpecialCasedAliasesAuth", v.SpecialCasedAliasesAuth, rv.SpecialCasedAliasesAuth()},
			{"StrictCanonicalJSON", v.StrictCanonicalJSON, rv.ForbidFloatsAndBigInts()},
			{"NotificationsPowerLevels", v.NotificationsPowerLevels, rv.NotificationsPowerLevels()},
			{"Knocking", v.Knocking, rv.Knocks()},
			{"RestrictedJoins", v.RestrictedJoins, rv.RestrictedJoins()},
			{"RestrictedJoinsFix", v.RestrictedJoinsFix, rv.RestrictedJoinsFix()},
			{"KnockRestricted", v.KnockRestricted, rv.KnockRestricted()},
			{"IntegerPowerLevels", v.IntegerPowerLevels, rv.ValidatePowerLevelInts()},
			{"CreatorInContent", v.CreatorInContent, rv.CreatorInContent()},
			{"RedactsInContent", v.RedactsInContent, rv.RedactsInContent()},
			{"UpdatedRedactionRules", v.UpdatedRedactionRules, rv.UpdatedRedactionRules()},
			{"PrivilegedCreators", v.PrivilegedCreators, rv.PrivilegedRoomCreators()},
			{"RoomIDIsCreateEventID", v.RoomIDIsCreateEventID, rv.RoomIDIsCreateEventID()},
		}
		for _, c := range checks {
			if c.ours != c.theirs {
				t.Errorf("v%s %s: table says %v, mautrix says %v", rv, c.name, c.ours, c.theirs)
			}
		}
		wantFormat := map[id.EventIDFormat]EventIDFormat{
			id.EventIDFormatCustom:        EventIDOriginBased,
			id.EventIDFormatBase64:        EventIDBase64,
			id.EventIDFormatURLSafeBase64: EventIDURLSafeBase64,
		}[rv.EventIDFormat()]
		if v.EventIDFormat != wantFormat {
			t.Errorf("v%s EventIDFormat = %v, want %v", rv, v.EventIDFormat, wantFormat)
		}
		wantStateRes := map[id.StateResVersion]StateResAlgorithm{
			id.StateResV1:   StateResV1,
			id.StateResV2:   StateResV2,
			id.StateResV2_1: StateResV2_1,
		}[rv.StateResVersion()]
		if v.StateRes != wantStateRes {
			t.Errorf("v%s StateRes = %v, want %v", rv, v.StateRes, wantStateRes)
		}
	}
}

// TestRedactionVariantAgreesWithFlags checks that the redaction variant and the
// flags that also describe redaction (aliases, allow, join_authorised, v11)
// say the same thing, so the two cannot drift apart.
func TestRedactionVariantAgreesWithFlags(t *testing.T) {
	for _, v := range All() {
		var want RedactionAlgorithm
		switch {
		case v.UpdatedRedactionRules:
			want = RedactionV11
		case v.RestrictedJoinsFix:
			want = RedactionV9
		case v.RestrictedJoins:
			want = RedactionV8
		case !v.SpecialCasedAliasesAuth:
			want = RedactionV6
		default:
			want = RedactionV1
		}
		if v.Redaction != want {
			t.Errorf("v%s: Redaction = %v, flags imply %v", v.ID, v.Redaction, want)
		}
	}
}

func TestAllOrderedAndComplete(t *testing.T) {
	vs := All()
	wantUnstable := []id.RoomVersion{"org.matrix.msc3757.10", "org.matrix.msc3757.11"}
	if len(vs) != 12+len(wantUnstable) {
		t.Fatalf("All() has %d versions, want %d", len(vs), 12+len(wantUnstable))
	}
	for i, v := range vs {
		want := id.RoomVersion(strconv.Itoa(i + 1))
		if i >= 12 {
			want = wantUnstable[i-12]
		}
		if v.ID != want {
			t.Errorf("All()[%d].ID = %q, want %q", i, v.ID, want)
		}
		if v.Stable != (i < 12) {
			t.Errorf("v%s Stable = %v", v.ID, v.Stable)
		}
		if v.Stable != (v.Base == "") {
			t.Errorf("v%s: Stable = %v but Base = %q", v.ID, v.Stable, v.Base)
		}
		if v.EventIDFormat == 0 || v.Redaction == 0 || v.StateRes == 0 {
			t.Errorf("v%s has an unset enum field", v.ID)
		}
	}
	// All hands out a copy of the slice.
	vs[0] = nil
	if All()[0] == nil {
		t.Error("All() returned a shared slice")
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		in   id.RoomVersion
		want id.RoomVersion
		ok   bool
	}{
		{"1", "1", true},
		{"2", "2", true},
		{"9", "9", true},
		{"10", "10", true},
		{"11", "11", true},
		{"12", "12", true},
		{"", "", false},
		{"0", "", false},
		{"13", "", false},
		{"19", "", false},
		{"01", "", false},
		{"1a", "", false},
		{"20", "", false},
		{"100", "", false},
		{"org.matrix.msc2176", "", false},
		{" 1", "", false},
		{"org.matrix.msc3757.10", "org.matrix.msc3757.10", true},
		{"org.matrix.msc3757.11", "org.matrix.msc3757.11", true},
		{"org.matrix.msc3757.12", "", false},
		{"org.matrix.msc3757.1", "", false},
		{"org.matrix.msc3757", "", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.in), func(t *testing.T) {
			v, ok := Lookup(tt.in)
			if ok != tt.ok {
				t.Fatalf("Lookup(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if ok && v.ID != tt.want {
				t.Errorf("Lookup(%q).ID = %q, want %q", tt.in, v.ID, tt.want)
			}
			if Known(tt.in) != tt.ok {
				t.Errorf("Known(%q) disagrees with Lookup", tt.in)
			}
		})
	}
}

func TestDefaultAndAvailable(t *testing.T) {
	if !Known(Default) {
		t.Fatalf("Default %q is not a known version", Default)
	}
	if Default != "10" {
		t.Errorf("Default = %q, want \"10\"", Default)
	}
	av := Available()
	if len(av) != len(All()) {
		t.Fatalf("Available() has %d entries, want %d", len(av), len(All()))
	}
	for _, v := range All() {
		want := "stable"
		if _, err := strconv.Atoi(string(v.ID)); err != nil {
			want = "unstable"
		}
		if av[v.ID] != want {
			t.Errorf("Available()[%q] = %q, want %s", v.ID, av[v.ID], want)
		}
	}
	av["1"] = "unstable"
	if Available()["1"] != "stable" {
		t.Error("Available() returned a shared map")
	}
}

func TestMaxDepth(t *testing.T) {
	if got := MustLookup("5").MaxDepth(); got != 1<<63-1 {
		t.Errorf("v5 MaxDepth = %d", got)
	}
	if got := MustLookup("6").MaxDepth(); got != 1<<53-1 {
		t.Errorf("v6 MaxDepth = %d", got)
	}
}

func TestStrictByteLimits(t *testing.T) {
	for _, v := range All() {
		want := v.SpecVersion() == "11" || v.SpecVersion() == "12"
		if v.StrictByteLimits != want {
			t.Errorf("v%s StrictByteLimits = %v, want %v", v.ID, v.StrictByteLimits, want)
		}
	}
}

func TestStringers(t *testing.T) {
	if MustLookup("12").StateRes.String() != "v2.1" || MustLookup("3").EventIDFormat.String() != "base64" ||
		MustLookup("8").Redaction.String() != "v8" || MustLookup("4").String() != "4" {
		t.Error("unexpected String() output")
	}
	if !MustLookup("2").IsOriginBasedEventIDs() || MustLookup("3").IsOriginBasedEventIDs() {
		t.Error("IsOriginBasedEventIDs wrong")
	}
}

// TestUnstableVersionsFollowTheirBase checks that each unstable version has
// every rule of its spec version except its MSC's flag, so that the event
// format, redaction, event IDs and state resolution are the base version's.
func TestUnstableVersionsFollowTheirBase(t *testing.T) {
	tests := []struct {
		id   id.RoomVersion
		base id.RoomVersion
		set  func(*Version)
	}{
		{"org.matrix.msc3757.10", "10", func(v *Version) { v.OwnedState = true }},
		{"org.matrix.msc3757.11", "11", func(v *Version) { v.OwnedState = true }},
	}
	for _, tt := range tests {
		t.Run(string(tt.id), func(t *testing.T) {
			v := MustLookup(tt.id)
			if v.SpecVersion() != tt.base || SpecVersion(tt.id) != tt.base {
				t.Fatalf("SpecVersion = %q / %q, want %q", v.SpecVersion(), SpecVersion(tt.id), tt.base)
			}
			want := *MustLookup(tt.base)
			want.ID, want.Stable, want.Base = tt.id, false, tt.base
			tt.set(&want)
			if *v != want {
				t.Errorf("entry = %+v\nwant    %+v", *v, want)
			}
		})
	}
	for _, v := range All() {
		if v.Stable && v.OwnedState {
			t.Errorf("spec version %s has the MSC3757 OwnedState flag", v.ID)
		}
		if v.Stable && v.SpecVersion() != v.ID {
			t.Errorf("v%s SpecVersion = %q", v.ID, v.SpecVersion())
		}
	}
	if SpecVersion("org.example.unknown") != "org.example.unknown" || SpecVersion("7") != "7" {
		t.Error("SpecVersion changed a spec or unknown version")
	}
}
