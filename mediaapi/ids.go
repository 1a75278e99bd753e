package mediaapi

import (
	"crypto/rand"
	"strings"
	"unicode/utf8"

	"hearth/config"
	"hearth/httputil"
)

// mediaIDLen is the length of generated media IDs: 24 characters of [A-Za-z0-9],
// about 143 bits, far beyond guessing.
const mediaIDLen = 24

const mediaIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns a fresh random media ID.
func newMediaID() string {
	var out [mediaIDLen]byte
	var buf [mediaIDLen * 2]byte
	n := 0
	for n < mediaIDLen {
		_, _ = rand.Read(buf[:])
		for _, b := range buf {
			// Rejection sampling keeps the distribution uniform: 248 = 4·62.
			if b >= 248 {
				continue
			}
			out[n] = mediaIDAlphabet[b%62]
			n++
			if n == mediaIDLen {
				break
			}
		}
	}
	return string(out[:])
}

// validMediaID reports whether s is a media ID as the spec allows it: only
// A-Za-z0-9, '_' and '-' (Client-Server API, "Matrix Content (mxc://) URIs" and
// its security considerations, which also rule out directory traversal).
func validMediaID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkMXC validates the server name and media ID of a request path.
func checkMXC(serverName, mediaID string) error {
	if err := config.ValidateServerName(serverName); err != nil {
		return httputil.InvalidParam("Invalid server name in media URI")
	}
	if !validMediaID(mediaID) {
		return httputil.InvalidParam("Invalid media ID: only A-Z, a-z, 0-9, '_' and '-' are allowed")
	}
	return nil
}

// cleanFilename makes an upload or remote file name safe to store and echo in
// Content-Disposition: valid UTF-8, no control characters or path separators, at
// most 255 bytes. An unusable name becomes "".
func cleanFilename(name string) string {
	if name == "" {
		return ""
	}
	if !utf8.ValidString(name) {
		name = strings.ToValidUTF8(name, "")
	}
	var b strings.Builder
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > 255 {
			break
		}
		b.WriteRune(r)
	}
	s := strings.TrimSpace(b.String())
	if s == "." || s == ".." {
		return ""
	}
	return s
}
