package clientapi

import "testing"

func TestHierarchyToken(t *testing.T) {
	tests := []struct {
		in   string
		want hierarchyToken
		ok   bool
	}{
		{"h3_true_5", hierarchyToken{skip: 3, suggestedOnly: true, maxDepth: 5}, true},
		{hierarchyToken{skip: 7, maxDepth: 50}.String(), hierarchyToken{skip: 7, maxDepth: 50}, true},
		{"", hierarchyToken{}, false},
		{"x3_true_5", hierarchyToken{}, false},
		{"h-1_true_5", hierarchyToken{}, false},
		{"h3_maybe_5", hierarchyToken{}, false},
		{"h3_true_51", hierarchyToken{}, false},
		{"h10001_true_5", hierarchyToken{}, false},
		{"h3_true", hierarchyToken{}, false},
	}
	for _, tc := range tests {
		got, err := parseHierarchyToken(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseHierarchyToken(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
