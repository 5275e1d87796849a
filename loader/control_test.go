package loader_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus/bustest"
	"github.com/corobus/corobus/loader"
)

// An instance's control subject refuses a request it cannot read, or an
// op it does not know, at once with the error headers of every
// request/reply subject (code 400) besides the ControlReply's error;
// until 3 Dec only the JSON said it. A ping is answered without them.
func TestMalformedControlIsRefused(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	subjects := testSubjects(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = loader.Component{Name: "ctltest", Version: 1, Instance: "ctl1", Log: bustest.Logger(t),
			Handler: func(context.Context, string, *nats.Msg) ([]byte, error) { return nil, nil }}.Serve(ctx, nc, subjects, 1)
	}()
	t.Cleanup(func() { cancel(); <-done })
	for _, tc := range []struct {
		name    string
		req     []byte
		refused bool
	}{
		{"garbage", []byte("garbage"), true},
		{"an unknown op", []byte(`{"op":"dance"}`), true},
		{"ping", []byte(`{"op":"ping"}`), false},
	} {
		var m *nats.Msg
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			m, err = nc.Request(subjects.LcrControl("ctl1"), tc.req, 10*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var rep loader.ControlReply
		_ = json.Unmarshal(m.Data, &rep)
		errText, code := m.Header.Get(micro.ErrorHeader), m.Header.Get(micro.ErrorCodeHeader)
		if (errText != "") != tc.refused || tc.refused && code != "400" || (rep.Error != "") != tc.refused {
			t.Errorf("%s: answered %q with error %q, code %q; want refused %v (code 400)", tc.name, m.Data, errText, code, tc.refused)
		}
	}
}
