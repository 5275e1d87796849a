package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/corobus/corobus/objdb"
)

// run runs a verb in-process against the node, over TCP as the
// administrator, as a user's --bus URL would.
func (n objdbNode) run(t *testing.T, verb string, args ...string) (string, error) {
	t.Helper()
	code, stdout, stderr := runVerb(n.cl.AdminURL(1, ""), verb, args...)
	if code != 0 {
		return stdout, errors.New(strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// runVerb runs a verb in-process against the bus at busURL, configured
// as cluster "test" (bustest's).
func runVerb(busURL, verb string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut, version: "test"}
	args = append([]string{verb}, args...)
	args = append(args, "--bus", busURL, "-o", "totem.cluster_name=test")
	code = a.main(context.Background(), args)
	return code, out.String(), errOut.String()
}

// `corobus bench cmap` left its key (test.bench.k, a cluster key) in the
// cluster until 3 Dec: a benchmark must leave the cluster as it found it,
// a key it created deleted, a key it borrowed (--key) given back its old
// value and type.
func TestBenchCmapLeavesTheClusterAsItWas(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the embedded default's, never the user's
	n := startObjdbNode(t)
	ctx := context.Background()

	out, err := n.run(t, "bench", "cmap", "--seconds", "0.2")
	if err != nil || !strings.Contains(out, "RESULT cmap_set_uint32") {
		t.Fatalf("bench cmap: %v\n%s", err, out)
	}
	if v, err := n.admin.Get(ctx, "test.bench.k"); !errors.Is(err, objdb.ErrNotExist) {
		t.Errorf("after bench cmap, test.bench.k = %v (%v); want it deleted", v, err)
	}

	for _, key := range []string{"test.mine", "runtime.mine"} { // a cluster key, a node key
		mine := objdb.Value{Type: objdb.String, Data: []byte("keep me\x00")}
		if err := n.admin.Set(ctx, key, mine); err != nil {
			t.Fatal(err)
		}
		out, err = n.run(t, "bench", "cmap", "--seconds", "0.2", "--key", key)
		if err != nil {
			t.Fatalf("bench cmap --key %s: %v\n%s", key, err, out)
		}
		if v, err := n.admin.Get(ctx, key); err != nil || v.Type != objdb.String || v.String() != "keep me" {
			t.Errorf("after bench cmap --key %s, %s = %v (type %v, %v); want the str it held before", key, key, v, v.Type, err)
		}
	}
}
