package netcluster

import (
	"os"
	"testing"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (netcluster.Build).
func TestMain(m *testing.M) { os.Exit(Main(m)) }
