package quorum

import (
	"os"
	"testing"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (netcluster.Build).
func TestMain(m *testing.M) { os.Exit(netcluster.Main(m)) }
