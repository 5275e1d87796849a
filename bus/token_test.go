package bus_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/config"
)

// TestOnlyTheNodeMakesItsToken: ReadToken (clients, layers) never creates
// the token and says which state directory has none; EnsureToken (the
// node's own processes) creates it once, 0600, and both then read the same.
func TestOnlyTheNodeMakesItsToken(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg, err := config.Load(config.Options{Overrides: []string{"system.state_dir=" + state}, UserStateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bus.ReadToken(cfg)
	var none *bus.NoTokenError
	if !errors.As(err, &none) || none.StateDir != state || none.Path != filepath.Join(state, "bus.token") {
		t.Fatalf("ReadToken on a state directory where no node ran: %v, want a NoTokenError for %s", err, state)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadToken touched %s: %v", state, err)
	}
	tok, err := bus.EnsureToken(cfg)
	if err != nil || tok == "" {
		t.Fatalf("EnsureToken: %q, %v", tok, err)
	}
	fi, err := os.Stat(filepath.Join(state, "bus.token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the token file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	for _, f := range []func(*config.Config) (string, error){bus.ReadToken, bus.EnsureToken} {
		if again, err := f(cfg); err != nil || again != tok {
			t.Fatalf("the token read back: %q, %v; want %q", again, err, tok)
		}
	}
}
