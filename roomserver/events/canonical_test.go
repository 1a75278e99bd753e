package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestCanonicalJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// The examples of Appendices, "Canonical JSON".
		{"spec empty", `{}`, `{}`},
		{"spec simple", `{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
		{"spec sort", `{"b": "2", "a": "1"}`, `{"a":"1","b":"2"}`},
		{"spec sort minified", `{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
		{"spec nested", `{
			"auth": {
				"success": true,
				"mxid": "@john.doe:example.com",
				"profile": {
					"display_name": "John Doe",
					"three_pids": [
						{"medium": "email", "address": "john.doe@example.org"},
						{"medium": "msisdn", "address": "123456789"}
					]
				}
			}
		}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{"spec japanese value", `{"a": "日本語"}`, `{"a":"日本語"}`},
		{"spec japanese keys", `{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		{"spec unicode escape", `{"a": "\u65E5"}`, `{"a":"日"}`},
		{"spec null", `{"a": null}`, `{"a":null}`},
		{"spec -0 and 1e10", `{"a": -0, "b": 1e10}`, `{"a":0,"b":10000000000}`},

		// Key ordering is by code point (UTF-8 bytes), not UTF-16 units: U+F123
		// sorts before U+10000 although its UTF-16 form sorts after the
		// surrogate pair.
		{"codepoint order", `{"\ud83d\udc31":1,"\uf123":2,"\ud800\udc00":3}`, "{\"\uf123\":2,\"\U00010000\":3,\"\U0001F431\":1}"},
		{"uppercase first", `{"a":1,"B":2,"_":3}`, `{"B":2,"_":3,"a":1}`},
		{"prefix first", `{"abc":1,"ab":2,"a":3}`, `{"a":3,"ab":2,"abc":1}`},
		{"escaped keys sort by value", `{"\\":5,"\"":4,"\n":3,"\r":2,"\u0000":1}`, `{"\u0000":1,"\n":3,"\r":2,"\"":4,"\\":5}`},
		{"nested arrays of objects", `[[1,{"b":[{"d":1,"c":2}],"a":0}]]`, `[[1,{"a":0,"b":[{"c":2,"d":1}]}]]`},
		{"deep sort after nested rewrite", `{"z":{"y":1,"x":{"w":1,"v":2}},"a":[{"c":1,"b":2}]}`, `{"a":[{"b":2,"c":1}],"z":{"x":{"v":2,"w":1},"y":1}}`},

		// Escapes: the shortest form, lowercase hex, raw UTF-8 otherwise.
		{"short escapes", `"\u0008\u0009\u000A\u000C\u000D"`, `"\b\t\n\f\r"`},
		{"other controls lowercase", `"\u0000\u000B\u001F"`, `"\u0000\u000b\u001f"`},
		{"quote and backslash", `"\u0022\u005c"`, `"\"\\"`},
		{"escaped slash", `"\/"`, `"/"`},
		{"DEL and U+2028 raw", `"\u007f\u2028"`, "\"\x7f\u2028\""},
		{"surrogate pair", `"\uD83D\uDE00"`, "\"\U0001F600\""},
		{"raw non-BMP kept", "\"\U0001F600\"", "\"\U0001F600\""},
		{"raw U+FFFD kept", "\"\uFFFD\"", "\"\uFFFD\""},

		// Numbers.
		{"max safe", `[9007199254740991,-9007199254740991]`, `[9007199254740991,-9007199254740991]`},
		{"integral forms", `[1.0, 1.50e2, 100e-2, 0.0, -0.0, 0e99, 12.3400e2]`, `[1,150,1,0,0,0,1234]`},
		{"top-level scalars", `  "x" `, `"x"`},
		{"whitespace", " \t\r\n{ \"a\" : [ 1 , 2 ] } \n", `{"a":[1,2]}`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tt.in))
			if err != nil {
				t.Fatalf("CanonicalJSON(%s): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("CanonicalJSON(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			// Canonical JSON is a fixed point.
			again, err := CanonicalJSON(got)
			if err != nil || string(again) != string(got) {
				t.Errorf("not idempotent: %s -> %s (%v)", got, again, err)
			}
		})
	}
}

func TestCanonicalJSONErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty", ``, ErrNotJSON},
		{"only space", `   `, ErrNotJSON},
		{"trailing data", `{}{}`, ErrNotJSON},
		{"trailing comma", `{"a":1,}`, ErrNotJSON},
		{"array trailing comma", `[1,]`, ErrNotJSON},
		{"unquoted key", `{a:1}`, ErrNotJSON},
		{"single quotes", `{'a':1}`, ErrNotJSON},
		{"comment", `{/*x*/}`, ErrNotJSON},
		{"NaN", `[NaN]`, ErrNotJSON},
		{"Infinity", `[Infinity]`, ErrNotJSON},
		{"leading zero", `[01]`, ErrNotJSON},
		{"plus sign", `[+1]`, ErrNotJSON},
		{"bare minus", `[-]`, ErrNotJSON},
		{"dot without digits", `[1.]`, ErrNotJSON},
		{"exponent without digits", `[1e]`, ErrNotJSON},
		{"unterminated string", `"abc`, ErrNotJSON},
		{"raw control char", "\"a\x01b\"", ErrNotJSON},
		{"raw newline", "\"a\nb\"", ErrNotJSON},
		{"bad escape", `"\x"`, ErrNotJSON},
		{"uppercase escape letter", `"\N"`, ErrNotJSON},
		{"short unicode escape", `"\u12"`, ErrNotJSON},
		{"invalid UTF-8", "\"\xff\"", ErrNotJSON},
		{"encoded surrogate in UTF-8", "\"\xed\xa0\x80\"", ErrNotJSON},
		{"truncated literal", `[tru]`, ErrNotJSON},
		{"missing colon", `{"a" 1}`, ErrNotJSON},
		{"lone high surrogate", `"\ud800"`, ErrBadJSON},
		{"lone low surrogate", `"\udc00"`, ErrBadJSON},
		{"high surrogate then letter", `"\ud800\u0041"`, ErrBadJSON},
		{"duplicate keys", `{"a":1,"a":2}`, ErrBadJSON},
		{"duplicate keys unsorted", `{"b":1,"a":2,"b":3}`, ErrBadJSON},
		{"duplicate keys via escape", `{"a":1,"\u0061":2}`, ErrBadJSON},
		{"float", `{"a":1.5}`, ErrBadJSON},
		{"small float", `[0.1]`, ErrBadJSON},
		{"negative exponent fraction", `[1e-1]`, ErrBadJSON},
		{"too large", `[9007199254740992]`, ErrBadJSON},
		{"too small", `[-9007199254740992]`, ErrBadJSON},
		{"too large via exponent", `[1e16]`, ErrBadJSON},
		{"huge exponent", `[1e999999999999]`, ErrBadJSON},
		{"tiny exponent", `[1e-999999999999]`, ErrBadJSON},
		{"too deep", strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1), ErrBadJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("CanonicalJSON(%q) = %s, %v; want error %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestCanonicalNumberModes covers the event modes: strict (room v6+) and
// legacy (v1–v5), whose floats must come out as Python writes them, since the
// hashes and signatures of old events were made over that form. The legacy
// expectations were produced with Python 3's json module.
func TestCanonicalNumberModes(t *testing.T) {
	tests := []struct {
		in             string
		strict, legacy string // "" means error
	}{
		{`0`, `0`, `0`},
		{`-0`, `0`, `0`},
		{`42`, `42`, `42`},
		{`-9007199254740991`, `-9007199254740991`, `-9007199254740991`},
		{`9007199254740992`, ``, `9007199254740992`},
		{`12345678901234567890123`, ``, `12345678901234567890123`},
		{`1.0`, ``, `1.0`},
		{`1.5`, ``, `1.5`},
		{`-0.0`, ``, `-0.0`},
		{`0.0`, ``, `0.0`},
		{`1e2`, ``, `100.0`},
		{`1E2`, ``, `100.0`},
		{`1e16`, ``, `1e+16`},
		{`1e15`, ``, `1000000000000000.0`},
		{`0.0001`, ``, `0.0001`},
		{`0.00001`, ``, `1e-05`},
		{`1.2345678901234567e+300`, ``, `1.2345678901234567e+300`},
		{`123456789.123`, ``, `123456789.123`},
		{`-2.5e-7`, ``, `-2.5e-07`},
		{`9007199254740993.0`, ``, `9007199254740992.0`},
		{`0.1`, ``, `0.1`},
		{`100.25`, ``, `100.25`},
		{`1e22`, ``, `1e+22`},
		{`5e-324`, ``, `5e-324`},
		{`1.7976931348623157e308`, ``, `1.7976931348623157e+308`},
		{`1e400`, ``, ``}, // infinity cannot be encoded
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			for _, mode := range []struct {
				name string
				mode numberMode
				want string
			}{{"strict", numStrict, tt.strict}, {"legacy", numLegacy, tt.legacy}} {
				got, err := canonicalize(nil, []byte(tt.in), mode.mode, 0)
				if mode.want == "" {
					if !errors.Is(err, ErrBadJSON) {
						t.Errorf("%s: got %s, %v; want ErrBadJSON", mode.name, got, err)
					}
					continue
				}
				if err != nil || string(got) != mode.want {
					t.Errorf("%s: got %s, %v; want %s", mode.name, got, err, mode.want)
				}
			}
		})
	}
}

func TestCanonicalLimit(t *testing.T) {
	in := []byte(`{"a":"` + strings.Repeat("x", 100) + `"}`)
	if _, err := canonicalize(nil, in, numStrict, 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: err = %v, want ErrTooLarge", err)
	}
	// Whitespace does not count: only the canonical form is measured.
	padded := []byte("{\"a\":   " + strings.Repeat(" ", 200) + "\"x\"}")
	if _, err := canonicalize(nil, padded, numStrict, 20); err != nil {
		t.Errorf("canonical form within the limit: %v", err)
	}
}

// TestCanonicalAgainstEncodingJSON checks, on a mixed document, that the
// output is the same value as the input and is sorted at every level.
func TestCanonicalAgainstEncodingJSON(t *testing.T) {
	in := `{"z": [3, {"y": "\u00e9\n", "x": null}], "m": {"k": true, "j": -12}, "a": ""}`
	got, err := CanonicalJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatal(err)
	}
	// encoding/json (v1) marshals map keys sorted by UTF-8 bytes and with
	// HTML escaping off this is the canonical form for this input.
	wantBytes, _ := json.Marshal(a)
	gotBytes, _ := json.Marshal(b)
	if string(wantBytes) != string(gotBytes) {
		t.Errorf("value changed: %s vs %s", wantBytes, gotBytes)
	}
	if want := "{\"a\":\"\",\"m\":{\"j\":-12,\"k\":true},\"z\":[3,{\"x\":null,\"y\":\"é\\n\"}]}"; string(got) != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
