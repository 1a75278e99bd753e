package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// SigningKey is the server's ed25519 key with its key ID (e.g. "ed25519:a_Xy12").
type SigningKey struct {
	ID         string
	PrivateKey ed25519.PrivateKey
}

// Public returns the public half.
func (k *SigningKey) Public() ed25519.PublicKey { return k.PrivateKey.Public().(ed25519.PublicKey) }

// GenerateSigningKey makes a fresh key with a random version.
func GenerateSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var v [3]byte
	if _, err := rand.Read(v[:]); err != nil {
		return nil, err
	}
	// Key versions are [a-zA-Z0-9_] (Server-Server API, keys definition): the URL
	// alphabet's "-" is not allowed.
	version := "a_" + strings.ReplaceAll(base64.RawURLEncoding.EncodeToString(v[:]), "-", "_")
	return &SigningKey{ID: "ed25519:" + version, PrivateKey: priv}, nil
}

// Encode renders the key in the one-line format Synapse and Dendrite also read:
// "ed25519 <version> <unpadded base64 seed>".
func (k *SigningKey) Encode() []byte {
	version := strings.TrimPrefix(k.ID, "ed25519:")
	return []byte("ed25519 " + version + " " + base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed()) + "\n")
}

// WriteSigningKey writes a new key file readable only by its owner; it refuses to
// overwrite an existing key.
func WriteSigningKey(path string, k *SigningKey) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing signing key: %w", err)
	}
	if _, err := f.Write(k.Encode()); err != nil {
		f.Close()
		return fmt.Errorf("writing signing key: %w", err)
	}
	return f.Close()
}

// ReadSigningKey reads a key file written by WriteSigningKey (or Synapse).
func ReadSigningKey(path string) (*SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 3 || f[0] != "ed25519" {
			return nil, fmt.Errorf("signing key %s: expected \"ed25519 <version> <base64 seed>\"", path)
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %s: bad seed", path)
		}
		return &SigningKey{ID: "ed25519:" + f[1], PrivateKey: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return nil, errors.New("signing key " + path + ": file is empty")
}
