package svcmgr_test

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// TestMain runs up to four parallel tests at a time unless go test's
// -parallel says otherwise: the parallel subtests of
// TestDefaultServiceLoadsWhateverTheStartOrder mostly wait (a loader held
// back, a load attempt timing out), two at a time left a 2-vCPU machine
// mostly idle.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if n := 4; !set && n > runtime.GOMAXPROCS(0) {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
	os.Exit(m.Run())
}
