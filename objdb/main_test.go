package objdb

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
)

// TestMain runs up to six of the package's parallel tests at once unless
// go test's -parallel says otherwise: those are the JetStream clusters in
// the test process that stop and restart nodes and wait — for a stream to
// count itself leaderless, a meta leader, a copy's ClusterWait — using
// next to no CPU (all of objdb's tests took 4.8 s of CPU in 150 s).
func TestMain(m *testing.M) {
	testparallel.Default(6)
	os.Exit(m.Run())
}
