package objdb

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// A keys.sync request the keeper cannot read is answered at once with the
// error headers of docs/subjects.md's conventions (code 400 and why);
// until 3 Dec it was dropped with a log line and its requester waited for
// its whole timeout (nats: timeout after 10 s here). A well-formed one is
// answered without them.
func TestMalformedSyncRequestIsAnswered(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	subjects, _ := bus.NewSubjects("corobus.test")
	defer startTestKeeper(t, nc, subjects)()
	subject := subjects.ObjdbKeys(1, "sync")
	good := appendSyncRequest(nil, syncRequest{Writer: 7, Snapshot: true})
	for _, tc := range []struct {
		name    string
		req     []byte
		refused bool
	}{
		{"garbage", []byte("garbage"), true},
		{"empty", nil, true},
		{"truncated", good[:10], true},
		{"trailing bytes", append(append([]byte(nil), good...), 0), true},
		{"well-formed", good, false},
	} {
		var msg *nats.Msg
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			// The keeper subscribes once it has its stream.
			msg, err = nc.Request(subject, tc.req, 10*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		e, code := msg.Header.Get(micro.ErrorHeader), msg.Header.Get(micro.ErrorCodeHeader)
		if (e != "") != tc.refused || tc.refused && code != "400" {
			t.Errorf("%s: answered with error %q, code %q; want refused %v (code 400)", tc.name, e, code, tc.refused)
		}
		if !tc.refused {
			if _, err := decodeSyncReply(msg.Data); err != nil {
				t.Errorf("%s: the reply does not decode: %v", tc.name, err)
			}
		}
	}
}
