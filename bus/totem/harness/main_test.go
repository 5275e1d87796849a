package harness

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
)

// TestMain runs up to six parallel tests at a time unless go test's
// -parallel says otherwise: TestRandomSchedules' 200 schedules are
// parallel subtests, each a cluster of its own in this process that
// mostly sleeps through its fault steps (a third of a core, two at a
// time, on a 2-vCPU machine).
func TestMain(m *testing.M) {
	testparallel.Default(6)
	os.Exit(m.Run())
}
