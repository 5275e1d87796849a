// Package testparallel sets the default of go test's -parallel for test
// binaries whose parallel tests mostly wait.
package testparallel

import (
	"flag"
	"runtime"
	"strconv"
)

// Default makes n the default of go test's -parallel (how many of a
// package's parallel tests run at once; GOMAXPROCS unless told) for this
// test binary, when n is larger and the command line did not set it. Call
// it from TestMain. For packages whose parallel tests spend most of their
// time waiting — a cluster forming, a view settling, a load attempt timing
// out — in processes or namespaces of their own: on a 2-vCPU machine two
// at a time left the CPUs mostly idle while they waited.
func Default(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && n > runtime.GOMAXPROCS(0) {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
