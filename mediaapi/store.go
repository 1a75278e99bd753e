package mediaapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// blobStore keeps file contents on disk, each under the hex SHA-256 of its bytes:
// <root>/<aa>/<bb>/<sha256>, where aa and bb are the hash's first two byte pairs
// (65,536 directories, so none grows huge). Identical contents are stored once.
// Files are written to <root>/tmp first, synced, then renamed into place, so a
// crash never leaves a half-written file under a content address.
type blobStore struct {
	root string
	// locks serialise, per hash stripe, making a blob live (rename + recording a
	// reference in the database) against deleting an unreferenced blob.
	locks [256]sync.Mutex
	// syncFiles fsyncs files and directories (always on outside benchmarks).
	syncFiles bool
}

// errTooLarge is returned when content exceeds its size limit.
var errTooLarge = errors.New("content too large")

// errReading wraps a failure to read the content being stored (a client or remote
// server that went away), as opposed to a failure of the disk.
var errReading = errors.New("reading content")

// readErrRecorder remembers the error of its reader.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (rr *readErrRecorder) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF {
		rr.err = err
	}
	return n, err
}

// copyBufPool holds the buffers uploads are streamed through.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func newBlobStore(root string) *blobStore {
	return &blobStore{root: root, syncFiles: true}
}

// path is the content address of a hash.
func (s *blobStore) path(sha string) string {
	return filepath.Join(s.root, sha[0:2], sha[2:4], sha)
}

func (s *blobStore) tmpDir() string { return filepath.Join(s.root, "tmp") }

// stagedBlob is content written to a temporary file and hashed, not yet live.
type stagedBlob struct {
	tmp    string
	SHA256 string
	Size   int64
}

// hashingWriter writes to a file and a hash at once.
type hashingWriter struct {
	f *os.File
	h hash.Hash
	n int64
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	n, err := w.f.Write(p)
	w.n += int64(n)
	return n, err
}

// stage streams r into a temporary file, hashing it on the way. More than limit
// bytes gives errTooLarge. The caller must commit or discard the result.
func (s *blobStore) stage(r io.Reader, limit int64) (*stagedBlob, error) {
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("creating media directory: %w", err)
	}
	f, err := os.CreateTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary media file: %w", err)
	}
	fail := func(err error) (*stagedBlob, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	w := &hashingWriter{f: f, h: sha256.New()}
	// Read one byte past the limit to tell "exactly limit" from "more".
	rr := &readErrRecorder{r: r}
	n, err := io.CopyBuffer(w, io.LimitReader(rr, limit+1), *bp)
	if rr.err != nil {
		return fail(fmt.Errorf("%w: %w", errReading, rr.err))
	}
	if err != nil {
		return fail(fmt.Errorf("writing media file: %w", err))
	}
	if n > limit {
		return fail(errTooLarge)
	}
	if s.syncFiles {
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("syncing media file: %w", err))
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("closing media file: %w", err)
	}
	return &stagedBlob{tmp: f.Name(), SHA256: hex.EncodeToString(w.h.Sum(nil)), Size: n}, nil
}

// stageBytes stages in-memory content (thumbnails, preview images).
func (s *blobStore) stageBytes(b []byte) (*stagedBlob, error) {
	return s.stage(bytes.NewReader(b), int64(len(b)))
}

// discard removes a staged blob that will not be committed.
func (s *blobStore) discard(b *stagedBlob) {
	if b != nil && b.tmp != "" {
		os.Remove(b.tmp)
		b.tmp = ""
	}
}

// commit makes a staged blob live under its content address (or drops it when the
// same content is already stored) and then runs record, which writes the database
// row referencing it, under the blob's stripe lock so that a concurrent delete of
// an unreferenced blob cannot remove it in between.
func (s *blobStore) commit(b *stagedBlob, record func() error) error {
	mu := &s.locks[stripe(b.SHA256)]
	mu.Lock()
	defer mu.Unlock()
	final := s.path(b.SHA256)
	if _, err := os.Stat(final); err == nil {
		s.discard(b)
	} else {
		dir := filepath.Dir(final)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			s.discard(b)
			return fmt.Errorf("creating media directory: %w", err)
		}
		if err := os.Rename(b.tmp, final); err != nil {
			s.discard(b)
			return fmt.Errorf("storing media file: %w", err)
		}
		b.tmp = ""
		if s.syncFiles {
			syncDir(dir)
		}
	}
	return record()
}

// removeIfUnreferenced deletes a blob when referenced reports (under the stripe
// lock) that nothing points at it any more.
func (s *blobStore) removeIfUnreferenced(sha string, referenced func() (bool, error)) error {
	mu := &s.locks[stripe(sha)]
	mu.Lock()
	defer mu.Unlock()
	used, err := referenced()
	if err != nil || used {
		return err
	}
	if err := os.Remove(s.path(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing media file: %w", err)
	}
	return nil
}

// open opens a live blob.
func (s *blobStore) open(sha string) (*os.File, error) {
	if len(sha) != 64 {
		return nil, fmt.Errorf("bad content hash %q", sha)
	}
	return os.Open(s.path(sha))
}

// cleanTmp removes temporary files older than a day: leftovers of a crash.
func (s *blobStore) cleanTmp() {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			if err := os.Remove(filepath.Join(s.tmpDir(), e.Name())); err == nil {
				slog.Info("removed stale temporary media file", "file", e.Name())
			}
		}
	}
}

func stripe(sha string) int {
	b, err := hex.DecodeString(sha[:2])
	if err != nil || len(b) == 0 {
		return 0
	}
	return int(b[0])
}

// syncDir fsyncs a directory so a rename into it survives a crash.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
