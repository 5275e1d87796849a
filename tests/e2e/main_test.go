package e2e

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
	"github.com/corobus/corobus/tests/netcluster"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (netcluster.Build), four parallel tests at a time unless go
// test's -parallel says otherwise: they mostly wait (see the package
// comment), and two at a time left a 2-vCPU machine mostly idle.
func TestMain(m *testing.M) {
	testparallel.Default(4)
	os.Exit(netcluster.Main(m))
}
