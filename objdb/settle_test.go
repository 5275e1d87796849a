package objdb

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/corobus/corobus/bus/bustest"
)

// A copy that waits for the Position another copy settled its writes at
// reads them: node keys written a window at a time through the keeper,
// and a cluster key through JetStream. This is what the gateway does
// before it passes on a service's answer (docs/objdb.md, "Read your
// writes through the gateway"). Without the WaitFor, the reader sees the
// previous round's values in most rounds.
func TestSettledWritesAreReadElsewhere(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	w := openStore(t, cl.Conn(1), 1, 1)
	r := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	if p, err := w.Settle(ctx); err != nil || !p.IsZero() {
		t.Fatalf("a copy that wrote nothing settles at %v (%v), want the zero position", p, err)
	}
	const rounds = 100
	for i := 1; i <= rounds; i++ {
		// Several writes, so that they go a window at a time.
		for k := range 5 {
			if err := w.Set(ctx, fmt.Sprintf("runtime.settle.k%d", k), mustValue(t, Uint32, strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 == 0 {
			if err := w.Set(ctx, "test.settle.cluster", mustValue(t, Uint32, strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		p, err := w.Settle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Epoch == 0 || p.Seq == 0 {
			t.Fatalf("round %d: settled at %v, want the keeper's epoch and a seq", i, p)
		}
		if i%10 == 0 && p.Rev == 0 {
			t.Fatalf("round %d: settled at %v after a cluster write, want its revision", i, p)
		}
		if q, err := ParsePosition(p.String()); err != nil || q != p {
			t.Fatalf("position %v reads back as %v (%v)", p, q, err)
		}
		if err := r.WaitFor(ctx, p); err != nil {
			t.Fatal(err)
		}
		for k := range 5 {
			if v, err := r.Get(fmt.Sprintf("runtime.settle.k%d", k)); err != nil || v.String() != strconv.Itoa(i) {
				t.Fatalf("round %d: the other copy reads k%d = %v (%v) after waiting for %v", i, k, v, err, p)
			}
		}
		if i%10 == 0 {
			if v, err := r.Get("test.settle.cluster"); err != nil || v.String() != strconv.Itoa(i) {
				t.Fatalf("round %d: the other copy reads the cluster key = %v (%v) after waiting for %v", i, v, err, p)
			}
		}
	}
}
