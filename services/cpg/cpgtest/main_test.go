package cpgtest

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
	"github.com/corobus/corobus/tests/netcluster"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (netcluster.Build), four parallel tests (the corobus subtests)
// at a time unless go test's -parallel says otherwise: they mostly wait
// for a cluster to form or for members sending at a set pace.
func TestMain(m *testing.M) {
	testparallel.Default(4)
	os.Exit(netcluster.Main(m))
}
