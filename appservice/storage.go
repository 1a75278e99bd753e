package appservice

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"hearth/storage"
)

// The sender's tables (storage/migrations/0062_appservice.sql): per service,
// the stream position read up to, and the queue of unacknowledged transactions.

// pendingTxn is a stored transaction waiting for the service's 200.
type pendingTxn struct {
	ID       int64
	EventIDs []id.EventID
}

// loadStream returns the service's stream position and last transaction ID. A
// service seen for the first time starts at cur: it gets the events from now
// on, not the server's whole history.
func loadStream(ctx context.Context, db *storage.DB, asID string, cur int64) (pos, lastTxn int64, err error) {
	err = db.QueryRow(ctx, `SELECT stream_pos, last_txn_id FROM appservice_streams WHERE as_id = $1`, asID).Scan(&pos, &lastTxn)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err = db.Exec(ctx, `INSERT INTO appservice_streams (as_id, stream_pos, last_txn_id) VALUES ($1, $2, 0)
			ON CONFLICT (as_id) DO NOTHING`, asID, cur); err != nil {
			return 0, 0, fmt.Errorf("recording stream position of application service %s: %w", asID, err)
		}
		err = db.QueryRow(ctx, `SELECT stream_pos, last_txn_id FROM appservice_streams WHERE as_id = $1`, asID).Scan(&pos, &lastTxn)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("reading stream position of application service %s: %w", asID, err)
	}
	return pos, lastTxn, nil
}

// saveStreamPos records that the events up to pos held nothing for the service.
func saveStreamPos(ctx context.Context, db *storage.DB, asID string, pos int64) error {
	if _, err := db.Exec(ctx, `UPDATE appservice_streams SET stream_pos = $2 WHERE as_id = $1 AND stream_pos < $2`, asID, pos); err != nil {
		return fmt.Errorf("saving stream position of application service %s: %w", asID, err)
	}
	return nil
}

// enqueueTxn stores transaction txnID with its events and moves the service's
// stream position to pos, atomically: an event is either in a stored
// transaction or after the stored position, so none is lost or sent twice in
// two transactions.
func enqueueTxn(ctx context.Context, db *storage.DB, asID string, txnID int64, eventIDs []id.EventID, pos, now int64) error {
	b, err := json.Marshal(eventIDs)
	if err != nil {
		return err
	}
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO appservice_txns (as_id, txn_id, event_ids, created_ts) VALUES ($1, $2, $3, $4)`,
			asID, txnID, string(b), now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE appservice_streams SET stream_pos = $2, last_txn_id = $3 WHERE as_id = $1`, asID, pos, txnID)
		return err
	})
	if err != nil {
		return fmt.Errorf("queueing transaction %d for application service %s: %w", txnID, asID, err)
	}
	return nil
}

// oldestTxn returns the service's first unacknowledged transaction, or nil.
func oldestTxn(ctx context.Context, db *storage.DB, asID string) (*pendingTxn, error) {
	var t pendingTxn
	var raw string
	err := db.QueryRow(ctx, `SELECT txn_id, event_ids FROM appservice_txns WHERE as_id = $1 ORDER BY txn_id ASC LIMIT 1`, asID).Scan(&t.ID, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading queued transactions of application service %s: %w", asID, err)
	}
	if err := json.Unmarshal([]byte(raw), &t.EventIDs); err != nil {
		return nil, fmt.Errorf("decoding queued transaction %d of application service %s: %w", t.ID, asID, err)
	}
	return &t, nil
}

// deleteTxn drops an acknowledged transaction.
func deleteTxn(ctx context.Context, db *storage.DB, asID string, txnID int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM appservice_txns WHERE as_id = $1 AND txn_id = $2`, asID, txnID); err != nil {
		return fmt.Errorf("dropping sent transaction %d of application service %s: %w", txnID, asID, err)
	}
	return nil
}

// QueuedTransactions is how many transactions wait for the service with the
// given id (tests and operators' checks).
func (s *Service) QueuedTransactions(ctx context.Context, asID string) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM appservice_txns WHERE as_id = $1`, asID).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting queued transactions of application service %s: %w", asID, err)
	}
	return n, nil
}
