package objdb

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/internal/testlog"
)

// TestKeeperStopIsNotBehind stops a keeper while a round of writes behind
// is in flight (JetStream has lost its quorum: the round waits for acks
// that do not come). The round is cut short by the stop, not refused by
// JetStream: the keeper must not log that it is behind ("node keys not
// yet stored … context canceled", which every node stop printed when a
// round was in flight); its last round, made at the stop, says what was
// not stored. Before the fix the warning was there.
func TestKeeperStopIsNotBehind(t *testing.T) {
	cl := bustest.StartCluster(t, 3)
	nc := cl.Conn(1)
	subjects, _ := bus.NewSubjects("corobus.test")
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, bustest.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	k, err := NewKeeper(nc, KeeperConfig{Node: 1, Bucket: "objdb_test", Replicas: 3, Subjects: subjects, Log: log,
		Heartbeat: 50 * time.Millisecond, WriteTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	s := openStore(t, nc, 1, 3)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := s.Set(wctx, "runtime.test.before", mustValue(t, String, "stored")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first key stored", func() bool { return k.has("runtime.test.before") && k.pending() == 0 })

	// JetStream without its quorum: a round's acks do not come.
	cl.Stop(2)
	cl.Stop(3)
	if err := s.Set(wctx, "runtime.test.after", mustValue(t, String, "pending")); err != nil {
		t.Fatal(err)
	}
	// A round took the key (nothing left to write: the round waits for
	// its ack, which cannot come).
	waitFor(t, "a round in flight", func() bool { return k.has("runtime.test.after") && k.pending() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup
	out := logs.String()
	if strings.Contains(out, "not yet stored") {
		t.Errorf("the keeper said it was behind when it was stopping:\n%s", out)
	}
	if !strings.Contains(out, "stopping with node keys not stored") {
		t.Errorf("the keeper did not say what its last round could not store:\n%s", out)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
	}
}

// pending is how many keys wait for the next round.
func (k *Keeper) pending() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.dirty)
}

// has tells whether the keeper applied a write of key.
func (k *Keeper) has(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.keys[key]
	return ok
}
