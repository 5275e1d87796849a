// Package cswiretest builds raw corosync client messages for the services'
// wire tests, including malformed ones (a size field that lies, a message
// shorter than its header), which cswire's own builders never make.
package cswiretest

import "github.com/corobus/corobus/services/cswire"

// Request is a request message of exactly size bytes whose header says id
// and size; fill, if not nil, writes the body. A size below the header's
// leaves the header cut short, as a broken client would send it.
func Request(id int32, size int, fill func(b []byte)) []byte {
	b := make([]byte, max(size, cswire.ReqHeaderSize))
	cswire.PutI32(b, 0, id)
	cswire.PutI32(b, 8, int32(size))
	b = b[:size]
	if fill != nil {
		fill(b)
	}
	return b
}
