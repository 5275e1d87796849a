package totem_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/bus/totem/harness"
)

// A fetch request the node cannot read is answered at once with the error
// headers of docs/subjects.md's conventions; until 3 Dec it was dropped
// and its requester waited for its whole timeout. A well-formed one is
// answered without them.
func TestMalformedFetchIsAnswered(t *testing.T) {
	c := harness.New(t, harness.Options{N: 1, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	ring := c.WaitView([]int{1}, 10*time.Second)
	good, _ := json.Marshal(totem.FetchRequest{Ring: ring, From: 1, To: 2})
	for _, tc := range []struct {
		req     []byte
		refused bool
	}{{[]byte("garbage"), true}, {nil, true}, {good, false}} {
		msg, err := c.Client(1).Request(c.Subjects.TotemFetch(1), tc.req, 10*time.Second)
		if err != nil {
			t.Fatalf("fetch %q: %v", tc.req, err)
		}
		if e := msg.Header.Get(micro.ErrorHeader); (e != "") != tc.refused || tc.refused && msg.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("fetch %q: answered with error %q, code %q; want refused %v (code 400)", tc.req, e, msg.Header.Get(micro.ErrorCodeHeader), tc.refused)
		}
	}
}
