package bus

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// RespondBadRequest answers request m at once in the error convention of
// every request/reply subject (docs/subjects.md): nats.go micro's
// Nats-Service-Error header (why) and Nats-Service-Error-Code 400, with
// body (nil, or the subject's JSON reply carrying the error, for the
// requesters that read it there). A request without a reply subject has
// nobody to tell.
func RespondBadRequest(m *nats.Msg, why string, body []byte) error {
	if m.Reply == "" {
		return nil
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(micro.ErrorHeader, why)
	r.Header.Set(micro.ErrorCodeHeader, "400")
	r.Data = body
	return m.RespondMsg(r)
}
