package svcmgr_test

import (
	"os"
	"testing"

	"github.com/corobus/corobus/internal/testparallel"
)

// TestMain runs up to four parallel tests at a time unless go test's
// -parallel says otherwise: the parallel subtests of
// TestDefaultServiceLoadsWhateverTheStartOrder mostly wait (a loader held
// back, a load attempt timing out), two at a time left a 2-vCPU machine
// mostly idle.
func TestMain(m *testing.M) {
	testparallel.Default(4)
	os.Exit(m.Run())
}
