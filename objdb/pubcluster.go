package objdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A cluster-key write is a core request to the bucket's subject, which
// the stream's leader answers with its acknowledgement once a quorum has
// the write: what jetstream.PublishMsg sends, without its generic answer
// decoding. Decoding every acknowledgement with encoding/json was 5 % of
// the gateway's CPU during eight clients' cluster-key sets on three nodes
// (about 3 µs a set; docs/objdb.md, "Cluster keys"). The acknowledgement
// of a write without a message id is the server's fixed
// {"stream":"…","seq":N…}, read here by hand (26 ns against 785,
// BenchmarkParsePubAck); anything else (an error, a form not expected)
// goes through encoding/json.

// As jetstream.PublishMsg: a write that finds no responder (the stream's
// leader being elected) is sent again, pubRetries times, pubRetryWait
// apart.
const (
	pubRetries   = 2
	pubRetryWait = 250 * time.Millisecond
)

// errNoStream is a write no server answered, retries spent: no stream
// leader (no quorum, or the bucket does not exist yet).
var errNoStream = errors.New("no response from the bucket's stream")

// publishCluster sends m to the bucket's stream and returns the stream
// sequence (the key's revision) it was stored at. ctx must carry a
// deadline.
func (s *Store) publishCluster(ctx context.Context, m *nats.Msg) (uint64, error) {
	for tries := 0; ; tries++ {
		resp, err := s.nc.RequestMsgWithContext(ctx, m)
		if errors.Is(err, nats.ErrNoResponders) {
			if tries >= pubRetries {
				return 0, errNoStream
			}
			select {
			case <-ctx.Done():
				return 0, errNoStream
			case <-time.After(pubRetryWait):
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		return parsePubAck(resp.Data)
	}
}

var pubAckHead = []byte(`{"stream":"`)

// parsePubAck returns the sequence of a JetStream publish acknowledgement,
// or the error it carries.
func parsePubAck(b []byte) (uint64, error) {
	if rest, ok := bytes.CutPrefix(b, pubAckHead); ok {
		// The stream's name, then ,"seq":N and , or }.
		if i := bytes.IndexByte(rest, '"'); i > 0 && bytes.IndexByte(rest[:i], '\\') < 0 {
			if digits, ok := bytes.CutPrefix(rest[i+1:], []byte(`,"seq":`)); ok {
				n := 0
				for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
					n++
				}
				if n > 0 && n < len(digits) && (digits[n] == ',' || digits[n] == '}') {
					if seq, err := strconv.ParseUint(string(digits[:n]), 10, 64); err == nil {
						return seq, nil
					}
				}
			}
		}
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if err := json.Unmarshal(b, &ack); err != nil {
		return 0, fmt.Errorf("invalid JetStream acknowledgement %q: %w", b, err)
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream == "" {
		return 0, fmt.Errorf("invalid JetStream acknowledgement %q", b)
	}
	return ack.Seq, nil
}
