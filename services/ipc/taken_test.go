package ipc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/internal/testlog"
	"github.com/corobus/corobus/services/ipc/libqb"
	"github.com/corobus/corobus/services/ipc/libqb/qbclient"
)

// TestTakenNameIsSaidOnce: a gateway whose IPC name another process of
// the namespace holds says so once, naming the holder, retries quietly,
// and says so again only when it gets the name.
func TestTakenNameIsSaidOnce(t *testing.T) {
	admit := func(libqb.Creds) bool { return true }
	f := startGateway(t, libqb.TransportSHM, admit)
	service := f.service + "-t"
	run := func(log *slog.Logger, retry time.Duration) (stop func()) {
		gw, err := New(Config{
			Conn: f.nc, Subjects: f.subjects, Node: 1, ShmDir: t.TempDir(), Retry: retry, Log: log, Admit: admit,
			Routes: []Route{{Service: service, Component: "echo", Version: 1}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- gw.Run(ctx) }()
		stopped := false
		stop = func() {
			if !stopped {
				stopped = true
				cancel()
				if err := <-done; err != nil {
					t.Errorf("gateway: %v", err)
				}
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stopFirst := run(slog.New(slog.DiscardHandler), time.Second)
	for deadline := time.Now().Add(10 * time.Second); !nameBound(service); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first gateway does not listen")
		}
	}
	logs := &testlog.Buffer{}
	run(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), 10*time.Millisecond)
	deadline := time.Now().Add(time.Minute)
	for strings.Count(logs.String(), "still taken") < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the second gateway did not retry:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings over 50 retries, want 1:\n%s", n, out)
	}
	holder := fmt.Sprintf("(pid %d)", os.Getpid())
	if !strings.Contains(out, holder) {
		t.Errorf("the warning does not name the holder %s:\n%s", holder, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "IPC name") && !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=DEBUG") {
			t.Errorf("printed more than the one warning about the name: %s", l)
		}
	}
	// The first gateway goes: the second takes the name and says so.
	stopFirst()
	deadline = time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "free now") {
		if time.Now().After(deadline) {
			t.Fatalf("the name was freed but the second gateway did not say it serves it:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := qbclient.Dial(service, 8192)
	if err != nil && !strings.Contains(err.Error(), "resource temporarily unavailable") {
		t.Fatalf("dialing the second gateway: %v", err)
	}
	if c != nil {
		c.Close()
	}
}
