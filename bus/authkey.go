package bus

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// corosync's authentication key: raw random bytes in a file, made by
// corosync-keygen (or `corobus keygen`), read by the totem layer when
// totem.crypto_cipher or totem.crypto_hash is set. The bounds are knet's
// (KNET_MIN_KEY_LEN, KNET_MAX_KEY_LEN), which corosync 3 inherits.
const (
	AuthKeyMin         = 128
	AuthKeyMax         = 4096
	AuthKeyDefaultSize = 256
	DefaultAuthKeyFile = "/etc/corosync/authkey"
)

// ReadAuthKey reads a key file the way corosync does: at most AuthKeyMax
// bytes (the rest of a longer file is ignored, as corosync ignores it),
// and no fewer than AuthKeyMin.
func ReadAuthKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("could not open the authkey: %w", err)
	}
	defer f.Close()
	key := make([]byte, AuthKeyMax)
	n, err := io.ReadFull(f, key)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("could not read the authkey %s: %w", path, err)
	}
	if n < AuthKeyMin {
		return nil, fmt.Errorf("could only read %d bits of minimum %d bits from %s", n*8, AuthKeyMin*8, path)
	}
	return key[:n], nil
}

// CheckAuthKeySize says whether size is a key size corosync accepts.
func CheckAuthKeySize(size int) error {
	if size < AuthKeyMin || size > AuthKeyMax {
		return fmt.Errorf("unsupported key size %d (supported <%d,%d>)", size, AuthKeyMin, AuthKeyMax)
	}
	return nil
}

// WriteAuthKey writes a new key of size bytes read from random into path,
// as corosync-keygen does: created (or truncated) with mode 0600, then
// made read-only for its owner (0400) before the key is written.
func WriteAuthKey(path string, size int, random io.Reader) error {
	if err := CheckAuthKeySize(size); err != nil {
		return err
	}
	key := make([]byte, size)
	if _, err := io.ReadFull(random, key); err != nil {
		return fmt.Errorf("reading %d random bytes: %w", size, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("could not create %s: %w", path, err)
	}
	if err := f.Chmod(0o400); err != nil {
		f.Close()
		return fmt.Errorf("failed to set key file permissions to 0400: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("could not close %s: %w", path, err)
	}
	return nil
}
