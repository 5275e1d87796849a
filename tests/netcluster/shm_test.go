package netcluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// removeShm takes the rings of the killed pids, as server or as client,
// and nothing else: not a ring whose other fields (fd, random suffix)
// happen to spell a killed pid, nor anything that is not a libqb ring.
func TestRemoveShmTakesOnlyTheKilledRings(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		"qb-100-200-7-123456", // server killed
		"qb-300-100-8-654321", // client killed
		"qb-300-400-100-100",  // fd and suffix spell 100: a live pair's
		"qb-cmap-100",         // not a libqb 2 ring directory
		"other-100-200-3-4",
	} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeShm(dir, []int{100})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{"other-100-200-3-4", "qb-300-400-100-100", "qb-cmap-100"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}
