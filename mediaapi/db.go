package mediaapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"hearth/storage"
)

// mediaRow is one row of the media table.
type mediaRow struct {
	ServerName  string
	MediaID     string
	SHA256      string // "" while an asynchronous upload is pending
	Size        int64
	ContentType string
	UploadName  string
	UserID      string
	CreatedTS   int64
	ExpiresTS   int64
	Quarantined bool
}

// pending reports whether the content has not been uploaded yet.
func (m *mediaRow) pending() bool { return m.SHA256 == "" }

// thumbRow is one row of media_thumbnails.
type thumbRow struct {
	Spec        thumbSpec
	Width       int
	Height      int
	ContentType string
	SHA256      string
	Size        int64
}

// mediaDB is the media repository's storage.
type mediaDB struct{ db *storage.DB }

const mediaColumns = `server_name, media_id, sha256, size_bytes, content_type, upload_name, user_id, created_ts, expires_ts, quarantined`

func scanMedia(row interface{ Scan(...any) error }) (*mediaRow, error) {
	var m mediaRow
	var sha sql.NullString
	if err := row.Scan(&m.ServerName, &m.MediaID, &sha, &m.Size, &m.ContentType, &m.UploadName, &m.UserID, &m.CreatedTS, &m.ExpiresTS, &m.Quarantined); err != nil {
		return nil, err
	}
	m.SHA256 = sha.String
	return &m, nil
}

// media returns a media row, or nil when there is none.
func (d mediaDB) media(ctx context.Context, serverName, mediaID string) (*mediaRow, error) {
	m, err := scanMedia(d.db.QueryRow(ctx, `SELECT `+mediaColumns+` FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading media %s/%s: %w", serverName, mediaID, err)
	}
	return m, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// insertMedia records media whose content is stored. It reports false when the
// URI was already taken (a remote fetch that raced another).
func (d mediaDB) insertMedia(ctx context.Context, m *mediaRow) (bool, error) {
	res, err := d.db.Exec(ctx, `INSERT INTO media (`+mediaColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (server_name, media_id) DO NOTHING`,
		m.ServerName, m.MediaID, nullIfEmpty(m.SHA256), m.Size, m.ContentType, m.UploadName, m.UserID, m.CreatedTS, m.ExpiresTS, m.Quarantined)
	if err != nil {
		return false, fmt.Errorf("recording media %s/%s: %w", m.ServerName, m.MediaID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// createPending reserves a media ID for an asynchronous upload, unless the user
// already has maxPending live reservations (false).
func (d mediaDB) createPending(ctx context.Context, m *mediaRow, maxPending int) (bool, error) {
	ok := false
	err := d.db.WithTx(ctx, func(tx *storage.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_ts > $2`,
			m.UserID, m.CreatedTS).Scan(&n); err != nil {
			return err
		}
		if n >= maxPending {
			return nil
		}
		// Lapsed reservations of this user are dropped here rather than by a sweeper.
		if _, err := tx.Exec(ctx, `DELETE FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_ts <= $2`, m.UserID, m.CreatedTS); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO media (`+mediaColumns+`) VALUES ($1, $2, NULL, 0, '', '', $3, $4, $5, FALSE)`,
			m.ServerName, m.MediaID, m.UserID, m.CreatedTS, m.ExpiresTS)
		ok = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("reserving media ID: %w", err)
	}
	return ok, nil
}

// completePending fills in the content of a pending upload. It reports false when
// the row was no longer pending (a concurrent upload won).
func (d mediaDB) completePending(ctx context.Context, m *mediaRow) (bool, error) {
	res, err := d.db.Exec(ctx, `UPDATE media SET sha256 = $1, size_bytes = $2, content_type = $3, upload_name = $4, expires_ts = 0
		WHERE server_name = $5 AND media_id = $6 AND sha256 IS NULL`,
		m.SHA256, m.Size, m.ContentType, m.UploadName, m.ServerName, m.MediaID)
	if err != nil {
		return false, fmt.Errorf("completing upload %s: %w", m.MediaID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// thumbnails lists the stored thumbnails of a piece of media.
func (d mediaDB) thumbnails(ctx context.Context, serverName, mediaID string) ([]thumbRow, error) {
	rows, err := d.db.Query(ctx, `SELECT req_width, req_height, method, width, height, content_type, sha256, size_bytes
		FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID)
	if err != nil {
		return nil, fmt.Errorf("loading thumbnails of %s/%s: %w", serverName, mediaID, err)
	}
	defer rows.Close()
	var out []thumbRow
	for rows.Next() {
		var t thumbRow
		if err := rows.Scan(&t.Spec.W, &t.Spec.H, &t.Spec.Method, &t.Width, &t.Height, &t.ContentType, &t.SHA256, &t.Size); err != nil {
			return nil, fmt.Errorf("loading thumbnails of %s/%s: %w", serverName, mediaID, err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// insertThumbnail records a stored thumbnail (a duplicate is ignored).
func (d mediaDB) insertThumbnail(ctx context.Context, serverName, mediaID string, t *thumbRow, now int64) error {
	_, err := d.db.Exec(ctx, `INSERT INTO media_thumbnails
		(server_name, media_id, req_width, req_height, method, width, height, content_type, sha256, size_bytes, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (server_name, media_id, req_width, req_height, method) DO NOTHING`,
		serverName, mediaID, t.Spec.W, t.Spec.H, t.Spec.Method, t.Width, t.Height, t.ContentType, t.SHA256, t.Size, now)
	if err != nil {
		return fmt.Errorf("recording thumbnail of %s/%s: %w", serverName, mediaID, err)
	}
	return nil
}

// blobReferenced reports whether any media or thumbnail row points at a blob.
func (d mediaDB) blobReferenced(ctx context.Context, sha string) (bool, error) {
	var n int
	err := d.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, sha).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("counting references to %s: %w", sha, err)
	}
	return n > 0, nil
}

// setQuarantined marks media as quarantined (or not).
func (d mediaDB) setQuarantined(ctx context.Context, serverName, mediaID string, q bool) (bool, error) {
	res, err := d.db.Exec(ctx, `UPDATE media SET quarantined = $1 WHERE server_name = $2 AND media_id = $3`, q, serverName, mediaID)
	if err != nil {
		return false, fmt.Errorf("quarantining %s/%s: %w", serverName, mediaID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// deleteMedia removes media and its thumbnails, returning the blobs they used.
func (d mediaDB) deleteMedia(ctx context.Context, serverName, mediaID string) ([]string, error) {
	var blobs []string
	err := d.db.WithTx(ctx, func(tx *storage.Tx) error {
		rows, err := tx.Query(ctx, `SELECT sha256 FROM media WHERE server_name = $1 AND media_id = $2 AND sha256 IS NOT NULL
			UNION SELECT sha256 FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return err
			}
			blobs = append(blobs, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deleting %s/%s: %w", serverName, mediaID, err)
	}
	return blobs, nil
}

// preview returns a cached URL preview that has not expired.
func (d mediaDB) preview(ctx context.Context, url string, now int64) ([]byte, error) {
	var og string
	err := d.db.QueryRow(ctx, `SELECT og FROM media_url_previews WHERE url = $1 AND expires_ts > $2`, url, now).Scan(&og)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading URL preview: %w", err)
	}
	return []byte(og), nil
}

// storePreview caches a URL preview.
func (d mediaDB) storePreview(ctx context.Context, url string, og []byte, now, expires int64) error {
	_, err := d.db.Exec(ctx, `INSERT INTO media_url_previews (url, og, created_ts, expires_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (url) DO UPDATE SET og = excluded.og, created_ts = excluded.created_ts, expires_ts = excluded.expires_ts`,
		url, string(og), now, expires)
	if err != nil {
		return fmt.Errorf("caching URL preview: %w", err)
	}
	return nil
}
