package clientapi

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseSearchQuery(t *testing.T) {
	tests := []struct {
		in         string
		fts4       string
		tsquery    string
		highlights []string
	}{
		{"hello", `"hello*"`, `'hello':*`, []string{"hello"}},
		{"Message 4", `"message*" "4*"`, `'message':* & '4':*`, []string{"message", "4"}},
		{"hello, world!", `"hello*" "world*"`, `'hello':* & 'world':*`, []string{"hello", "world"}},
		{`"martians and men"`, `"martians and men"`, `('martians' <-> 'and' <-> 'men')`, []string{"martians", "and", "men"}},
		{"cats -dogs", `"cats*" NOT "dogs*"`, `'cats':* & !'dogs':*`, []string{"cats"}},
		{`-dogs cats`, `"cats*" NOT "dogs*"`, `'cats':* & !'dogs':*`, []string{"cats"}},
		{"tea OR coffee cake", `("tea*" OR "coffee*") "cake*"`, `('tea':* | 'coffee':*) & 'cake':*`, []string{"tea", "coffee", "cake"}},
		{"or tea", `"tea*"`, `'tea':*`, []string{"tea"}},
		{"e-mail", `"e mail"`, `('e' <-> 'mail')`, []string{"e", "mail"}},
		{"ÉCOLE Straße", `"école*" "straße*"`, `'école':* & 'straße':*`, []string{"école", "straße"}},
		{`hello hello`, `"hello*" "hello*"`, `'hello':* & 'hello':*`, []string{"hello"}},
		// Query syntax in the input is only punctuation.
		{`a' OR 1=1; -- "x`, `("a*" OR "1 1") "x"`, `('a':* | ('1' <-> '1')) & 'x'`, []string{"a", "1", "x"}},
		{`NEAR AND*`, `"near*" "and*"`, `'near':* & 'and':*`, []string{"near", "and"}},
		{`"unterminated phrase`, `"unterminated phrase"`, `('unterminated' <-> 'phrase')`, []string{"unterminated", "phrase"}},
		{"", ``, ``, []string{}},
		{"!!! ...", ``, ``, []string{}},
		{"-only", ``, ``, []string{}},
	}
	for _, tc := range tests {
		q := parseSearchQuery(tc.in)
		if got := q.fts4(); got != tc.fts4 && !q.empty() {
			t.Errorf("%q: fts4 = %s, want %s", tc.in, got, tc.fts4)
		}
		if got := q.tsquery(); got != tc.tsquery && !q.empty() {
			t.Errorf("%q: tsquery = %s, want %s", tc.in, got, tc.tsquery)
		}
		if q.empty() != (tc.fts4 == "") {
			t.Errorf("%q: empty = %v", tc.in, q.empty())
		}
		if got := q.highlights(); !slices.Equal(got, tc.highlights) {
			t.Errorf("%q: highlights = %q, want %q", tc.in, got, tc.highlights)
		}
	}
}

func TestParseSearchQueryBounds(t *testing.T) {
	long := ""
	for range 200 {
		long += "word "
	}
	q := parseSearchQuery(long)
	n := 0
	for _, g := range q.groups {
		n += len(g)
	}
	if n != maxSearchTerms {
		t.Fatalf("%d terms kept, want %d", n, maxSearchTerms)
	}
	w := parseSearchQuery("ü" + strings.Repeat("é", 100))
	if got := w.groups[0][0].words[0]; len(got) > maxSearchWordLen || !utf8.ValidString(got) {
		t.Fatalf("long word kept as %q (%d bytes)", got, len(got))
	}
}

func TestFTS4Rank(t *testing.T) {
	info := func(vals ...uint32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.NativeEndian.PutUint32(b[4*i:], v)
		}
		return b
	}
	// p=1 c=1: x = (hits here, hits everywhere, rows with hits), l = length.
	one := fts4Rank(info(1, 1, 1, 50, 20, 10))
	two := fts4Rank(info(1, 1, 2, 50, 20, 10))
	long := fts4Rank(info(1, 1, 1, 50, 20, 100))
	both := fts4Rank(info(2, 1, 1, 50, 20, 1, 9, 9, 10))
	if !(two > one && one > long && both > one) {
		t.Fatalf("ranks: one %v two %v long %v both %v", one, two, long, both)
	}
	// Corpus-wide numbers do not change a row's rank.
	if fts4Rank(info(1, 1, 1, 5000, 2000, 10)) != one {
		t.Fatal("rank depends on other rows")
	}
	for _, bad := range [][]byte{nil, {1, 2}, info(1), info(5, 5, 1), info(0, 1)} {
		if r := fts4Rank(bad); r != 0 || math.IsNaN(r) {
			t.Fatalf("fts4Rank(%v) = %v", bad, r)
		}
	}
}

func TestSearchBatchToken(t *testing.T) {
	good := searchBatch{Order: "rank", Pos: 42, Rank: 0.1 + 0.2, Group: "room_id", Value: "!r:x"}
	got, err := parseSearchBatch(good.String(), "rank")
	if err != nil || got != good {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	bad := []struct{ tok, order string }{
		{good.String(), "recent"},
		{"", "rank"},
		{"!!!", "rank"},
		{searchBatch{Order: "rank", Pos: 0}.String(), "rank"},
		{searchBatch{Order: "rank", Pos: 1, Group: "type", Value: "x"}.String(), "rank"},
		{searchBatch{Order: "rank", Pos: 1, Group: "room_id", Value: "nope"}.String(), "rank"},
		{searchBatch{Order: "rank", Pos: 1, Group: "sender", Value: "nope"}.String(), "rank"},
	}
	for _, tc := range bad {
		if _, err := parseSearchBatch(tc.tok, tc.order); err == nil {
			t.Errorf("parseSearchBatch(%q, %s) accepted", tc.tok, tc.order)
		}
	}
}
