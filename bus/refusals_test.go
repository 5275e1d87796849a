package bus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/corobus/corobus/logsys"
	"github.com/corobus/corobus/logsys/logsystest"
)

func TestRefusalsAreRateLimitedPerHost(t *testing.T) {
	var out bytes.Buffer
	clock := &logsystest.ManualClock{}
	r := newRefusalsClock(slog.New(slog.NewTextHandler(&out, nil)), logsys.NewThrottleClock(RefusalWindow, 1, clock))
	for i := range 100 {
		r.note("route", "10.0.0.9:"+string(rune('0'+i%10))+"000", "bad")
	}
	r.note("route", "10.0.0.8:1", "bad")
	r.note("client", "10.0.0.9:1", "bad")
	if n := strings.Count(out.String(), "refused"); n != 3 {
		t.Fatalf("%d lines for 102 refusals from two hosts and two kinds, want 3:\n%s", n, out.String())
	}
	clock.EndWindows()
	if !strings.Contains(out.String(), "not_logged=99") {
		t.Errorf("the window's end does not count the 99 not logged:\n%s", out.String())
	}
	r.note("route", "10.0.0.9:1", "bad")
	if r.count() != 103 {
		t.Errorf("count %d, want 103", r.count())
	}
	if !r.fromServerLog(`127.0.0.1:4242 - rid:7 - TLS route handshake error: remote error: tls: bad certificate`) {
		t.Error("nats-server's handshake error line not recognised")
	}
	if !r.fromServerLog(`127.0.0.1:4242 - cid:9 - Authentication Error - User "x"`) {
		t.Error("nats-server's authentication error line not recognised")
	}
	if r.fromServerLog(`some other error`) {
		t.Error("an unrelated line was taken for a refusal")
	}
}
