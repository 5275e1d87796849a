package objdb

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Every acknowledgement JetStream may answer a write with reads as
// encoding/json reads it: the server's fixed form by hand, any other
// through encoding/json, and an error as the error.
func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		seq  uint64
		code jetstream.ErrorCode // an error with this code; 0: none
		bad  bool                // not an acknowledgement
	}{
		{in: `{"stream":"KV_objdb","seq":7}`, seq: 7},
		{in: `{"stream":"KV_objdb","seq":18446744073709551615}`, seq: 18446744073709551615},
		{in: `{"stream":"KV_objdb","seq":42,"duplicate":true}`, seq: 42},
		{in: `{"stream":"KV_objdb","domain":"hub","seq":9}`, seq: 9},
		{in: `{"seq":5,"stream":"KV_objdb"}`, seq: 5},
		{in: `{"stream":"K\"V","seq":3}`, seq: 3},
		{in: `{"error":{"code":503,"err_code":10077,"description":"nats: stream offline"}}`, code: 10077},
		{in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"},"stream":"KV_objdb","seq":0}`, code: 10071},
		{in: `{"stream":"KV_objdb","seq":18446744073709551616}`, bad: true},
		{in: `{"stream":"","seq":1}`, bad: true},
		{in: `{"stream":"KV_objdb","seq":1`, bad: true},
		{in: `+OK`, bad: true},
		{in: ``, bad: true},
	} {
		seq, err := parsePubAck([]byte(tc.in))
		// What encoding/json makes of it (jetstream.PublishMsg's way).
		var ref struct {
			Error  *jetstream.APIError `json:"error"`
			Stream string              `json:"stream"`
			Seq    uint64              `json:"seq"`
		}
		refErr := json.Unmarshal([]byte(tc.in), &ref)
		switch {
		case tc.code != 0:
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.code {
				t.Errorf("%s: got %d, %v; want the error %d", tc.in, seq, err, tc.code)
			}
		case tc.bad:
			if err == nil {
				t.Errorf("%s: got %d, want an error", tc.in, seq)
			}
		default:
			if err != nil || seq != tc.seq {
				t.Errorf("%s: got %d, %v; want %d", tc.in, seq, err, tc.seq)
			}
			if refErr != nil || ref.Seq != seq {
				t.Errorf("%s: encoding/json reads %d (%v), parsePubAck %d", tc.in, ref.Seq, refErr, seq)
			}
		}
	}
}

// BenchmarkParsePubAck is what reading a write's acknowledgement costs,
// by hand and through encoding/json (jetstream.PublishMsg's way).
func BenchmarkParsePubAck(b *testing.B) {
	buf := []byte(`{"stream":"KV_corobus-objdb","seq":123456}`)
	b.Run("parsePubAck", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parsePubAck(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ack struct {
				Error *jetstream.APIError `json:"error"`
				*jetstream.PubAck
			}
			if err := json.Unmarshal(buf, &ack); err != nil {
				b.Fatal(err)
			}
		}
	})
}
