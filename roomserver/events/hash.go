package events

import (
	"bytes"
	"crypto/sha256"

	"hearth/roomserver/roomversion"
)

// referenceHash computes the reference hash of a canonical event: the SHA-256
// of the redacted event without signatures and unsigned (Server-Server API,
// "Calculating the reference hash for an event").
func referenceHash(v *roomversion.Version, event, rawType []byte) [32]byte {
	b := getBuf()
	*b = appendRedactedWithType((*b)[:0], v.Redaction, event, rawType, true)
	sum := sha256.Sum256(*b)
	putBuf(b)
	return sum
}

// excludedFromContentHash reports whether a top-level key is left out of the
// content hash. The spec lists unsigned, signatures and hashes (Server-Server
// API, "Calculating the content hash for an event"); Synapse, whose hashes
// every room carries, also leaves out age_ts, outlier and destinations, which
// early versions of it added to events after hashing them.
func excludedFromContentHash(rawKey []byte) bool {
	switch string(rawKey) {
	case `"unsigned"`, `"signatures"`, `"hashes"`, `"age_ts"`, `"outlier"`, `"destinations"`:
		return true
	}
	return false
}

// appendContentHashInput appends the bytes whose SHA-256 is the content hash.
func appendContentHashInput(dst, event []byte) []byte {
	dst = append(dst, '{')
	first := true
	it := newMemberIter(event)
	for {
		k, _, start, end, ok := it.next()
		if !ok {
			break
		}
		if excludedFromContentHash(k) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, event[start:end]...)
	}
	return append(dst, '}')
}

// contentHash computes the content hash of a canonical event.
func contentHash(event []byte) [32]byte {
	b := getBuf()
	*b = appendContentHashInput((*b)[:0], event)
	sum := sha256.Sum256(*b)
	putBuf(b)
	return sum
}

// CheckContentHash reports whether the event's hashes.sha256 matches its
// content (Server-Server API, "Validating hashes and signatures on received
// events"). When it does not, the spec says to use the redacted event
// (Redacted) in its place.
func (e *Event) CheckContentHash() bool {
	h := e.pdu.Hashes
	if h == nil || len(h.SHA256) != sha256.Size {
		return false
	}
	sum := contentHash(e.json)
	return bytes.Equal(sum[:], h.SHA256)
}
