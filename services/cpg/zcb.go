package cpg

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/corobus/corobus/services/cpg/cpgwire"
	"github.com/corobus/corobus/services/cswire"
)

// Zero-copy buffers (cpg_zcb_alloc, _mcast_joined, _free): libcpg makes a
// file (/dev/shm/corosync_zerocopy-XXXXXX, or under /var/run), maps it and
// sends its name; the service maps the same file, so that a multicast from
// it is read in place. corosync opens whatever path a client names and
// unlinks it, as root; corobus takes only libcpg's names in libcpg's
// directories, only a regular file the client owns, not a link.
const (
	zcbMaxMap   = 64 << 20  // one buffer
	zcbMaxTotal = 256 << 20 // one connection's buffers
)

var zcbDirs = []string{"/dev/shm", "/var/run", "/run"}

type zcbMap struct {
	data []byte
}

type zcbMaps struct {
	m     map[uint64]*zcbMap
	next  uint64
	total int
}

func (z *zcbMaps) freeAll() {
	for a, m := range z.m {
		_ = syscall.Munmap(m.data)
		delete(z.m, a)
	}
	z.total = 0
}

// zcbPathOK tells libcpg's buffer names from anything else.
func zcbPathOK(p string) bool {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return false
	}
	dir, base := filepath.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	for _, d := range zcbDirs {
		if dir == d && strings.HasPrefix(base, "corosync_zerocopy-") && !strings.ContainsRune(base, '/') {
			return true
		}
	}
	return false
}

func (c *Conn) zcAlloc(r cpgwire.Request) []byte {
	s := c.s
	fail := func(code cswire.Error, why string, err error) []byte {
		s.log.Warn("zero-copy buffer refused", "conn", c.client.Label, "path", r.Path, "why", why, "err", err)
		return cpgwire.EncodeStatus(0, code)
	}
	if !zcbPathOK(r.Path) {
		return fail(cswire.ErrAccess, "not a libcpg buffer name", nil)
	}
	min := uint64(cpgwire.ZCHeaderSize + cpgwire.McastHeaderSize)
	if r.MapSize < min || r.MapSize > zcbMaxMap {
		return fail(cswire.ErrInvalidParam, fmt.Sprintf("size %d outside %d..%d", r.MapSize, min, zcbMaxMap), nil)
	}
	s.mu.Lock()
	total := c.zcb.total
	s.mu.Unlock()
	if total+int(r.MapSize) > zcbMaxTotal {
		return fail(cswire.ErrNoMemory, "the connection's buffers are at their limit", nil)
	}
	fd, err := syscall.Open(r.Path, syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail(cswire.ErrAccess, "open", err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fail(cswire.ErrLibrary, "stat", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || (st.Uid != c.client.UID && c.client.UID != 0) {
		return fail(cswire.ErrAccess, fmt.Sprintf("not a regular file of uid %d", c.client.UID), nil)
	}
	if uint64(st.Size) < r.MapSize {
		return fail(cswire.ErrInvalidParam, fmt.Sprintf("file of %d bytes, map of %d", st.Size, r.MapSize), nil)
	}
	// As corosync: the name goes, the mappings stay.
	_ = syscall.Unlink(r.Path)
	data, err := syscall.Mmap(fd, 0, int(r.MapSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fail(cswire.ErrNoMemory, "mmap", err)
	}
	s.mu.Lock()
	if c.closed {
		s.mu.Unlock()
		_ = syscall.Munmap(data)
		return cpgwire.EncodeStatus(0, cswire.ErrBadHandle)
	}
	if c.zcb.m == nil {
		c.zcb.m = map[uint64]*zcbMap{}
	}
	c.zcb.next++
	// The "server address" libcpg echoes back: a handle, never zero.
	addr := c.zcb.next<<12 | 0x7a00_0000_0000_0000
	c.zcb.m[addr] = &zcbMap{data: data}
	c.zcb.total += len(data)
	s.mu.Unlock()
	binary.LittleEndian.PutUint64(data[8:], addr)
	return cpgwire.EncodeStatus(0, cswire.OK)
}

func (c *Conn) zcFree(r cpgwire.Request) []byte {
	s := c.s
	s.mu.Lock()
	m := c.zcb.m[r.ServerAddr]
	if m != nil {
		delete(c.zcb.m, r.ServerAddr)
		c.zcb.total -= len(m.data)
	}
	s.mu.Unlock()
	if m != nil {
		_ = syscall.Munmap(m.data)
	}
	return cpgwire.EncodeStatus(0, cswire.OK)
}

// zcExecute multicasts the message in a zero-copy buffer: its
// req_lib_cpg_mcast follows the buffer's header.
func (c *Conn) zcExecute(ctx context.Context, r cpgwire.Request) cswire.Error {
	s := c.s
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	m := c.zcb.m[r.ServerAddr]
	if m == nil {
		s.mu.Unlock()
		return cswire.ErrBadHandle
	}
	if c.closed || (c.state != stateJoinStarted && c.state != stateJoinCompleted) {
		s.mu.Unlock()
		return cswire.ErrNotExist
	}
	hdr := m.data[cpgwire.ZCHeaderSize:]
	msgLen := uint64(binary.LittleEndian.Uint32(hdr[cpgwire.ResHeaderSize+8:]))
	if cpgwire.ZCHeaderSize+cpgwire.McastHeaderSize+msgLen > uint64(len(m.data)) {
		s.mu.Unlock()
		return cswire.ErrInvalidParam
	}
	if s.tc.InFlight() >= s.tc.Window() {
		s.mu.Unlock()
		return cswire.ErrTryAgain
	}
	// Read in place: the mapping stays while sendMu is held (Close takes
	// it before unmapping, zc_free is a request of this same connection).
	data := hdr[cpgwire.McastHeaderSize : cpgwire.McastHeaderSize+msgLen]
	e := cpgwire.Exec{Kind: cpgwire.ExecMcast, PID: c.pid, Source: c.source, Group: c.group, Data: data}
	if c.state == stateJoinCompleted && s.alone() {
		s.deliverAlone(&e)
		s.mu.Unlock()
		return cswire.OK
	}
	s.mu.Unlock()
	if err := s.send(ctx, &e); err != nil {
		return cswire.ErrTryAgain
	}
	return cswire.OK
}
