package federationapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"hearth/storage"
)

// store is the federation API's own tables (migration 0030).
type store struct {
	db *storage.DB
}

// storedKey is one row of federation_server_keys.
type storedKey struct {
	keyID        string
	publicKey    string
	validUntilTS int64
	expiredTS    int64 // 0 for a current key
	fetchedTS    int64
}

func (s *store) serverKeys(ctx context.Context, server string) ([]storedKey, error) {
	rows, err := s.db.Query(ctx, `SELECT key_id, public_key, valid_until_ts, expired_ts, fetched_ts FROM federation_server_keys WHERE server_name = $1`, server)
	if err != nil {
		return nil, fmt.Errorf("loading keys of %s: %w", server, err)
	}
	defer rows.Close()
	var out []storedKey
	for rows.Next() {
		var k storedKey
		if err := rows.Scan(&k.keyID, &k.publicKey, &k.validUntilTS, &k.expiredTS, &k.fetchedTS); err != nil {
			return nil, fmt.Errorf("loading keys of %s: %w", server, err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// saveServerKeys stores keys of server and, when raw is not nil, the signed response
// they came in (for the notary endpoint), in one transaction.
func (s *store) saveServerKeys(ctx context.Context, server string, keys []storedKey, raw []byte, validUntilTS, fetchedTS int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts,
					expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts`,
				server, k.keyID, k.publicKey, k.validUntilTS, k.expiredTS, k.fetchedTS); err != nil {
				return fmt.Errorf("storing keys of %s: %w", server, err)
			}
		}
		if raw == nil {
			return nil
		}
		// Keep the response that is valid the longest.
		if _, err := tx.Exec(ctx, `INSERT INTO federation_key_responses (server_name, response, valid_until_ts, fetched_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (server_name) DO UPDATE SET response = excluded.response, valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts
			WHERE excluded.valid_until_ts >= federation_key_responses.valid_until_ts`,
			server, raw, validUntilTS, fetchedTS); err != nil {
			return fmt.Errorf("storing key response of %s: %w", server, err)
		}
		return nil
	})
}

// keyResponse returns the stored signed key response of server, or nil.
func (s *store) keyResponse(ctx context.Context, server string) (raw []byte, validUntilTS int64, err error) {
	err = s.db.QueryRow(ctx, `SELECT response, valid_until_ts FROM federation_key_responses WHERE server_name = $1`, server).Scan(&raw, &validUntilTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("loading key response of %s: %w", server, err)
	}
	return raw, validUntilTS, nil
}

// queuedPDU is one PDU waiting for a destination.
type queuedPDU struct {
	nid     int64
	eventID string
}

// queuedEDU is one EDU waiting for a destination.
type queuedEDU struct {
	nid int64
	edu []byte
}

// enqueuePDU queues eventID for every destination and records the sender's stream
// position, in one transaction.
func (s *store) enqueuePDU(ctx context.Context, destinations []string, eventID string, streamPos int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if len(destinations) > 0 {
			if err := insertRows(ctx, tx, `INSERT INTO federation_queue_pdus (destination, event_id) VALUES `, destinations, eventID); err != nil {
				return fmt.Errorf("queueing %s: %w", eventID, err)
			}
		}
		return setSenderPosition(ctx, tx, streamPos)
	})
}

// enqueueEDU queues an EDU for every destination.
func (s *store) enqueueEDU(ctx context.Context, destinations []string, edu []byte) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := insertRows(ctx, tx, `INSERT INTO federation_queue_edus (destination, edu) VALUES `, destinations, edu); err != nil {
			return fmt.Errorf("queueing EDU: %w", err)
		}
		return nil
	})
}

// insertRows inserts (destination, value) for each destination, in batches.
func insertRows(ctx context.Context, tx *storage.Tx, prefix string, destinations []string, value any) error {
	const batch = 400
	for len(destinations) > 0 {
		n := min(len(destinations), batch)
		var q strings.Builder
		q.WriteString(prefix)
		args := make([]any, 0, n+1)
		args = append(args, value)
		for i, d := range destinations[:n] {
			if i > 0 {
				q.WriteByte(',')
			}
			args = append(args, d)
			fmt.Fprintf(&q, "($%d, $1)", len(args))
		}
		if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
			return err
		}
		destinations = destinations[n:]
	}
	return nil
}

func setSenderPosition(ctx context.Context, tx *storage.Tx, pos int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO federation_sender_position (singleton, stream_pos) VALUES (1, $1)
		ON CONFLICT (singleton) DO UPDATE SET stream_pos = excluded.stream_pos WHERE excluded.stream_pos > federation_sender_position.stream_pos`, pos); err != nil {
		return fmt.Errorf("recording sender position: %w", err)
	}
	return nil
}

// senderPosition is the stream position up to which events were queued; ok is false
// when the sender never ran.
func (s *store) senderPosition(ctx context.Context) (pos int64, ok bool, err error) {
	err = s.db.QueryRow(ctx, `SELECT stream_pos FROM federation_sender_position WHERE singleton = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading sender position: %w", err)
	}
	return pos, true, nil
}

func (s *store) updateSenderPosition(ctx context.Context, pos int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return setSenderPosition(ctx, tx, pos) })
}

// pending returns up to maxPDUs PDUs and maxEDUs EDUs queued for destination,
// oldest first.
func (s *store) pending(ctx context.Context, destination string, maxPDUs, maxEDUs int) ([]queuedPDU, []queuedEDU, error) {
	rows, err := s.db.Query(ctx, `SELECT queue_nid, event_id FROM federation_queue_pdus WHERE destination = $1 ORDER BY queue_nid LIMIT $2`, destination, maxPDUs)
	if err != nil {
		return nil, nil, fmt.Errorf("reading queue of %s: %w", destination, err)
	}
	var pdus []queuedPDU
	for rows.Next() {
		var q queuedPDU
		if err := rows.Scan(&q.nid, &q.eventID); err != nil {
			rows.Close()
			return nil, nil, err
		}
		pdus = append(pdus, q)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = s.db.Query(ctx, `SELECT queue_nid, edu FROM federation_queue_edus WHERE destination = $1 ORDER BY queue_nid LIMIT $2`, destination, maxEDUs)
	if err != nil {
		return nil, nil, fmt.Errorf("reading queue of %s: %w", destination, err)
	}
	defer rows.Close()
	var edus []queuedEDU
	for rows.Next() {
		var q queuedEDU
		if err := rows.Scan(&q.nid, &q.edu); err != nil {
			return nil, nil, err
		}
		edus = append(edus, q)
	}
	return pdus, edus, rows.Err()
}

// dequeue removes sent entries (queue NIDs up to the given ones) of destination and
// clears its back-off, in one transaction.
func (s *store) dequeue(ctx context.Context, destination string, lastPDU, lastEDU int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if lastPDU > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM federation_queue_pdus WHERE destination = $1 AND queue_nid <= $2`, destination, lastPDU); err != nil {
				return fmt.Errorf("dequeueing for %s: %w", destination, err)
			}
		}
		if lastEDU > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM federation_queue_edus WHERE destination = $1 AND queue_nid <= $2`, destination, lastEDU); err != nil {
				return fmt.Errorf("dequeueing for %s: %w", destination, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM federation_destinations WHERE server_name = $1`, destination); err != nil {
			return fmt.Errorf("clearing back-off of %s: %w", destination, err)
		}
		return nil
	})
}

// queuedDestinations lists destinations with anything queued, with their back-off.
func (s *store) queuedDestinations(ctx context.Context) (map[string]backoffState, error) {
	rows, err := s.db.Query(ctx, `SELECT q.destination, COALESCE(d.failures, 0), COALESCE(d.retry_at_ts, 0) FROM
		(SELECT DISTINCT destination FROM federation_queue_pdus UNION SELECT DISTINCT destination FROM federation_queue_edus) q
		LEFT JOIN federation_destinations d ON d.server_name = q.destination`)
	if err != nil {
		return nil, fmt.Errorf("listing queued destinations: %w", err)
	}
	defer rows.Close()
	out := map[string]backoffState{}
	for rows.Next() {
		var d string
		var b backoffState
		if err := rows.Scan(&d, &b.failures, &b.retryAtTS); err != nil {
			return nil, err
		}
		out[d] = b
	}
	return out, rows.Err()
}

// backoffState is how often a destination failed in a row and when to retry it.
type backoffState struct {
	failures  int
	retryAtTS int64
}

func (s *store) setBackoff(ctx context.Context, destination string, b backoffState) error {
	_, err := s.db.Exec(ctx, `INSERT INTO federation_destinations (server_name, failures, retry_at_ts) VALUES ($1, $2, $3)
		ON CONFLICT (server_name) DO UPDATE SET failures = excluded.failures, retry_at_ts = excluded.retry_at_ts`,
		destination, b.failures, b.retryAtTS)
	if err != nil {
		return fmt.Errorf("recording back-off of %s: %w", destination, err)
	}
	return nil
}

// txnResponse returns the stored response to a transaction already received.
func (s *store) txnResponse(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	var resp []byte
	err := s.db.QueryRow(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("looking up transaction %s from %s: %w", txnID, origin, err)
	}
	return resp, true, nil
}

// saveTxn records a processed transaction, pruning records older than pruneBefore.
func (s *store) saveTxn(ctx context.Context, origin, txnID string, response []byte, nowTS, pruneBeforeTS int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, received_ts, response) VALUES ($1, $2, $3, $4)
			ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, nowTS, response); err != nil {
			return fmt.Errorf("recording transaction %s from %s: %w", txnID, origin, err)
		}
		if pruneBeforeTS > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, pruneBeforeTS); err != nil {
				return fmt.Errorf("pruning transactions: %w", err)
			}
		}
		return nil
	})
}
