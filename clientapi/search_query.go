package clientapi

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// A search_term of POST /search is parsed once into searchQuery and written
// in each database's full-text syntax: SQLite FTS4's enhanced query syntax
// and Postgres's tsquery. The language is what clients get from Synapse:
//
//   - words, each matched as a prefix ("mess" finds "message");
//   - "quoted phrases", matched as consecutive words;
//   - -word or -"phrase", which must not match;
//   - OR between two terms, either of which may match;
//   - everything else is punctuation: "hello, world" is hello AND world, and
//     a word the tokenizer would split ("e-mail") is a phrase of its parts.
//
// Words are runs of letters, digits and combining marks, lowercased: the
// tokens of SQLite's unicode61 tokenizer, and plain lexemes to Postgres's
// parser, so no user input reaches either query syntax unquoted.

// searchQuery is a parsed search_term: every group must match (a group is
// one term or several joined by OR) and no excluded term may.
type searchQuery struct {
	groups  [][]searchTerm
	exclude []searchTerm
}

// searchTerm is one word (a prefix) or a phrase of words (exact).
type searchTerm struct {
	words  []string
	phrase bool
}

// Bounds on a search term, so one request cannot build a huge query.
const (
	maxSearchTerms   = 32
	maxSearchWordLen = 100
)

// termToken is a piece of the search_term before words are split out.
type termToken struct {
	text    string
	quoted  bool
	negated bool
}

// parseSearchQuery parses a search_term. A query with no word to look for
// (empty, only punctuation, only exclusions) matches nothing: empty() is true.
func parseSearchQuery(s string) searchQuery {
	var q searchQuery
	pendingOr := false
	n := 0
	for _, tok := range lexSearchTerm(s) {
		if !tok.quoted && !tok.negated && strings.EqualFold(tok.text, "or") {
			pendingOr = len(q.groups) > 0
			continue
		}
		words := searchWords(tok.text)
		if len(words) == 0 {
			continue
		}
		if n += len(words); n > maxSearchTerms {
			break
		}
		t := searchTerm{words: words, phrase: tok.quoted || len(words) > 1}
		switch {
		case tok.negated:
			q.exclude = append(q.exclude, t)
		case pendingOr:
			last := len(q.groups) - 1
			q.groups[last] = append(q.groups[last], t)
		default:
			q.groups = append(q.groups, []searchTerm{t})
		}
		pendingOr = false
	}
	return q
}

// empty reports whether the query has nothing to look for.
func (q searchQuery) empty() bool { return len(q.groups) == 0 }

// lexSearchTerm splits a search_term into words and quoted phrases, each
// possibly negated by a leading '-'. An unterminated quote runs to the end.
func lexSearchTerm(s string) []termToken {
	var out []termToken
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			i += size
			continue
		}
		neg := false
		if r == '-' && i+1 < len(s) {
			if next, _ := utf8.DecodeRuneInString(s[i+1:]); !unicode.IsSpace(next) {
				neg = true
				i++
			}
		}
		if s[i] == '"' {
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				out = append(out, termToken{text: s[i+1:], quoted: true, negated: neg})
				break
			}
			out = append(out, termToken{text: s[i+1 : i+1+end], quoted: true, negated: neg})
			i += end + 2
			continue
		}
		j := i
		for j < len(s) {
			r, size := utf8.DecodeRuneInString(s[j:])
			if unicode.IsSpace(r) || r == '"' {
				break
			}
			j += size
		}
		out = append(out, termToken{text: s[i:j], negated: neg})
		i = j
	}
	return out
}

// isSearchWordRune reports whether r belongs to a word: what unicode61
// keeps as token characters.
func isSearchWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r)
}

// searchWords splits text into lowercased words, dropping punctuation.
func searchWords(text string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(text, func(r rune) bool { return !isSearchWordRune(r) }) {
		if len(f) > maxSearchWordLen {
			f = truncateUTF8(f, maxSearchWordLen)
		}
		out = append(out, strings.ToLower(f))
	}
	return out
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// highlights lists the words a client should highlight in the results: each
// word looked for, once.
func (q searchQuery) highlights() []string {
	out := []string{}
	seen := map[string]bool{}
	for _, g := range q.groups {
		for _, t := range g {
			for _, w := range t.words {
				if !seen[w] {
					seen[w] = true
					out = append(out, w)
				}
			}
		}
	}
	return out
}

// fts4 writes the query in SQLite FTS4's enhanced query syntax: "word*" for
// a word, "w1 w2" for a phrase, ( a OR b ) for a group, implicit AND between
// groups, and NOT before each exclusion (NOT binds tighter than AND, so
// "a b NOT c" is a AND b AND NOT c).
func (q searchQuery) fts4() string {
	var b strings.Builder
	term := func(t searchTerm) {
		b.WriteByte('"')
		b.WriteString(strings.Join(t.words, " "))
		if !t.phrase {
			b.WriteByte('*')
		}
		b.WriteByte('"')
	}
	for i, g := range q.groups {
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(g) > 1 {
			b.WriteByte('(')
		}
		for j, t := range g {
			if j > 0 {
				b.WriteString(" OR ")
			}
			term(t)
		}
		if len(g) > 1 {
			b.WriteByte(')')
		}
	}
	for _, t := range q.exclude {
		b.WriteString(" NOT ")
		term(t)
	}
	return b.String()
}

// tsquery writes the query for Postgres's to_tsquery: 'word':* for a word,
// ( 'w1' <-> 'w2' ) for a phrase, ( a | b ) for a group, & between groups and
// & ! before each exclusion. Words are quoted lexemes; the english
// configuration stems them and drops stop words.
func (q searchQuery) tsquery() string {
	var b strings.Builder
	term := func(t searchTerm) {
		if len(t.words) > 1 {
			b.WriteByte('(')
		}
		for i, w := range t.words {
			if i > 0 {
				b.WriteString(" <-> ")
			}
			b.WriteByte('\'')
			b.WriteString(w)
			b.WriteByte('\'')
			if !t.phrase {
				b.WriteString(":*")
			}
		}
		if len(t.words) > 1 {
			b.WriteByte(')')
		}
	}
	for i, g := range q.groups {
		if i > 0 {
			b.WriteString(" & ")
		}
		if len(g) > 1 {
			b.WriteByte('(')
		}
		for j, t := range g {
			if j > 0 {
				b.WriteString(" | ")
			}
			term(t)
		}
		if len(g) > 1 {
			b.WriteByte(')')
		}
	}
	for _, t := range q.exclude {
		b.WriteString(" & !")
		term(t)
	}
	return b.String()
}
