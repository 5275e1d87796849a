// Package cpgtest runs real libcpg clients — corobus's own C programs
// (testdata/) and Debian's corosync-cpgtool — against corobus and, with
// the very same programs, against a real corosync, each node in network
// namespaces of its own (tests/netcluster).
package cpgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BuildGo builds a package of this module (pkg relative to the
// repository's root, "./examples/cpgmember") and returns the program's
// path.
func BuildGo(t testing.TB, pkg string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..", "..")
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpgtest: go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// BuildC compiles testdata/<name>.c against libcpg into a temporary
// directory and returns the program's path. It skips the test, with the
// reason, where there is no C compiler or no libcpg headers.
func BuildC(t testing.TB, name string) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("cpgtest: no gcc (apt-get install gcc): %v", err)
	}
	if _, err := os.Stat("/usr/include/corosync/cpg.h"); err != nil {
		t.Skip("cpgtest: no libcpg headers (apt-get install libcpg-dev): skipping")
	}
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "testdata", name+".c")
	out := filepath.Join(t.TempDir(), name)
	if b, err := exec.Command(cc, "-O2", "-Wall", "-o", out, src, "-lcpg").CombinedOutput(); err != nil {
		t.Fatalf("cpgtest: compiling %s: %v\n%s", src, err, b)
	}
	return out
}
