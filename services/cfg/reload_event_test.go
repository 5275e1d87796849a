package cfg_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/bus/totem/harness"
	"github.com/corobus/corobus/services/cfg"
	"github.com/corobus/corobus/services/cswire"
	"github.com/corobus/corobus/services/cswire/cswiretest"
)

// <prefix>.cfg.<node>.reload says which keys a reload changed and which it
// kept as lists (docs/subjects.md): a reload that changed nothing says so
// with empty lists. Until 3 Dec it published "changed":null and
// "ignored":null, which a subscriber that reads lists (jq's .changed[],
// a typed decoder) takes for a malformed event. The reload goes round the
// totem, as corosync's does: a one-node ring of the totem harness.
func TestReloadEventListsAreLists(t *testing.T) {
	c := harness.New(t, harness.Options{N: 1, Token: 200 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 300 * time.Millisecond})
	c.WaitView([]int{1}, 10*time.Second)
	nc := c.Client(1)
	svc := cfg.NewService(cfg.Config{Conn: nc, Subjects: c.Subjects, Node: 1, Log: bustest.Logger(t),
		Reload: func(context.Context) cfg.ReloadResult { return cfg.ReloadResult{Code: cswire.OK} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-svc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the cfg service is not ready")
	}
	sub, err := nc.SubscribeSync(c.Subjects.CfgEvent(1, "reload"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	tool := svc.OpenConn(make(sink, 16), "cfgtool")
	defer tool.Close()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	if r := tool.Request(rctx, cswiretest.Request(cfg.ReqReloadConfig, 24, nil)); code(t, r) != cswire.OK {
		t.Fatalf("reload: %v", code(t, r))
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no reload event: %v", err)
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatalf("reload event %s: %v", m.Data, err)
	}
	for _, k := range []string{"changed", "ignored"} {
		if string(ev[k]) != "[]" {
			t.Errorf("reload event %s: %q is %s, want []", m.Data, k, ev[k])
		}
	}
	if string(ev["code"]) != `"CS_OK"` {
		t.Errorf("reload event %s: code %s, want \"CS_OK\"", m.Data, ev["code"])
	}
}
