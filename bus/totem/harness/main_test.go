package harness

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// TestMain runs up to six parallel tests at a time unless go test's
// -parallel says otherwise: TestRandomSchedules' 200 schedules are
// parallel subtests, each a cluster of its own in this process that
// mostly sleeps through its fault steps (a third of a core, two at a
// time, on a 2-vCPU machine).
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if n := 6; !set && n > runtime.GOMAXPROCS(0) {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
	os.Exit(m.Run())
}
