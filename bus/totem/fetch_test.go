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

// The node's other request/reply subjects whose request is JSON answer one
// they cannot read with the same error headers (code 400), and keep their
// JSON reply with its error for the requesters that read it there. Until
// 3 Dec listen and timings put the error in the JSON only. Well-formed
// requests are answered without the headers.
func TestMalformedListenAndTimingsAreRefused(t *testing.T) {
	c := harness.New(t, harness.Options{N: 1, Token: 300 * time.Millisecond, Join: 30 * time.Millisecond, Consensus: 400 * time.Millisecond})
	c.WaitView([]int{1}, 10*time.Second)
	goodTimings, _ := json.Marshal(totem.TimingsRequest{Token: 300, Join: 30, Consensus: 400})
	for _, tc := range []struct {
		name, subject string
		req           []byte
		refused       bool
	}{
		{"listen garbage", c.Subjects.TotemListen(1), []byte("garbage"), true},
		{"listen without a service", c.Subjects.TotemListen(1), []byte(`{"origin":1}`), true},
		{"listen", c.Subjects.TotemListen(1), []byte(`{"service":"malformedtest"}`), false},
		{"timings garbage", c.Subjects.TotemTimings(1), []byte("garbage"), true},
		{"timings the node refuses", c.Subjects.TotemTimings(1), []byte(`{"token":1,"join":1000,"consensus":1}`), true},
		{"timings", c.Subjects.TotemTimings(1), goodTimings, false},
	} {
		msg, err := c.Client(1).Request(tc.subject, tc.req, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		e, code := msg.Header.Get(micro.ErrorHeader), msg.Header.Get(micro.ErrorCodeHeader)
		if (e != "") != tc.refused || tc.refused && code != "400" {
			t.Errorf("%s: answered %q with error %q, code %q; want refused %v (code 400)", tc.name, msg.Data, e, code, tc.refused)
		}
		var rep struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &rep); err != nil || (rep.Error != "") != tc.refused {
			t.Errorf("%s: the JSON reply %q does not say the error (%v)", tc.name, msg.Data, err)
		}
	}
}
