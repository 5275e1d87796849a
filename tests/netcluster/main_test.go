package netcluster

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (Build), four parallel tests at a time unless go test's
// -parallel says otherwise. The corobus clusters' tests are parallel:
// each cluster is in namespaces of its own, with nothing of a global name,
// and most of a test is waiting for a view. TestCorosyncRing stays serial
// (go test runs it before the parallel ones): corosync runs SCHED_RR 99
// and would starve the others' deadlines.
func TestMain(m *testing.M) {
	testparallel.Default(4)
	os.Exit(Main(m))
}
