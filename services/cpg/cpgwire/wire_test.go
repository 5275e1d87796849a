package cpgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/services/cswire"
)

// The offsets below are ipc_cpg.h's on x86-64, worked out field by field
// (every field aligned(8)); libcpg itself checks them end to end
// (tests/e2e).
func TestLayouts(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"req_lib_cpg_join", joinSize, 168},
		{"req_lib_cpg_leave", leaveSize, 160},
		{"req_lib_cpg_membership_get", membReqSize, 152},
		{"req_lib_cpg_iterationinitialize", iterInitSize, 160},
		{"req_lib_cpg_iterationnext", iterHandleSize, 24},
		{"req_lib_cpg_mcast", McastHeaderSize, 40},
		{"req_lib_cpg_partial_mcast", PartialHeaderSize, 56},
		{"mar_req_coroipcc_zc_alloc_t", zcAllocSize, 152},
		{"mar_req_coroipcc_zc_free_t", zcFreeSize, 32},
		{"mar_req_coroipcc_zc_execute_t", zcExecSize, 24},
		{"res_lib_cpg_deliver_callback", DeliverHeaderSize, 184},
		{"res_lib_cpg_partial_deliver_callback", PartialDeliverHeaderSize, 200},
		{"res_lib_cpg_confchg_callback", ConfChgHeaderSize, 184},
		{"res_lib_cpg_totem_confchg_callback", TotemConfChgHeaderSize, 48},
		{"res_lib_cpg_membership_get", MembershipResponseSize, 32 + 384*24},
		{"res_lib_cpg_iterationnext", ResHeaderSize + DescSize, 168},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
	j := EncodeJoin("grp", 4242, 1)
	if le32(j[16:]) != 3 || string(j[24:27]) != "grp" || le32(j[152:]) != 4242 || le32(j[160:]) != 1 {
		t.Errorf("join layout: % x", j)
	}
	m := EncodeMcast(GuaranteeAgreed, []byte("hello"))
	if le32(m) != 2 || le32(m[8:]) != 45 || le32(m[24:]) != 2 || le32(m[32:]) != 5 || string(m[40:]) != "hello" {
		t.Errorf("mcast layout: % x", m)
	}
	d := AppendDeliver(nil, "g", 3, 77, []byte("xy"))
	if le32(d) != 5 || le32(d[8:]) != 186 || le32(d[24:]) != 1 || le32(d[160:]) != 2 || le32(d[168:]) != 3 || le32(d[176:]) != 77 || string(d[184:]) != "xy" {
		t.Errorf("deliver layout: % x", d)
	}
	tc := EncodeTotemConfChg(1, 9, []uint32{1, 2})
	if len(tc) != 56 || le32(tc[24:]) != 1 || le64(tc[32:]) != 9 || le32(tc[40:]) != 2 || le32(tc[44:]) != 1 || le32(tc[48:]) != 2 {
		t.Errorf("totem confchg layout: % x", tc)
	}
	cc := EncodeConfChg("g", []Address{{1, 10, 0}}, []Address{{2, 20, ReasonLeave}}, []Address{{3, 30, ReasonJoin}})
	// member_list_entries, joined_list_entries, left_list_entries; then
	// members, left, joined.
	if le32(cc[160:]) != 1 || le32(cc[168:]) != 1 || le32(cc[176:]) != 1 ||
		le32(cc[184:]) != 1 || le32(cc[208:]) != 2 || le32(cc[224:]) != ReasonLeave || le32(cc[232:]) != 3 {
		t.Errorf("confchg layout: % x", cc)
	}
}

func TestRequestsRoundTrip(t *testing.T) {
	long := Name(strings.Repeat("n", MaxNameLength))
	for _, c := range []struct {
		msg  []byte
		want Request
	}{
		{EncodeJoin("a", 1, 1), Request{ID: ReqJoin, Group: "a", PID: 1, Flags: 1}},
		{EncodeJoin(long, 2, 0), Request{ID: ReqJoin, Group: long, PID: 2}},
		{EncodeLeave("b\x00c", 3), Request{ID: ReqLeave, Group: "b\x00c", PID: 3}},
		{EncodeMembership("m"), Request{ID: ReqMembership, Group: "m"}},
		{EncodeBareRequest(ReqLocalGet), Request{ID: ReqLocalGet}},
		{EncodeBareRequest(ReqFinalize), Request{ID: ReqFinalize}},
		{EncodeIterInit(IterOneGroup, "g"), Request{ID: ReqIterInit, Group: "g", IterType: IterOneGroup}},
		{EncodeIterHandle(ReqIterNext, 99), Request{ID: ReqIterNext, Handle: 99}},
		{EncodeIterHandle(ReqIterFinalize, 98), Request{ID: ReqIterFinalize, Handle: 98}},
		{EncodeMcast(GuaranteeSafe, []byte("data")), Request{ID: ReqMcast, Guarantee: GuaranteeSafe, MsgLen: 4, Data: []byte("data")}},
		{EncodeMcast(GuaranteeAgreed, nil), Request{ID: ReqMcast, Guarantee: GuaranteeAgreed, Data: []byte{}}},
		{EncodePartialMcast(GuaranteeAgreed, 10, PartialFirst, []byte("abc")), Request{ID: ReqPartialMcast, Guarantee: GuaranteeAgreed, MsgLen: 10, FragLen: 3, FragType: PartialFirst, Data: []byte("abc")}},
		{EncodeZCAlloc(4096, "/dev/shm/corosync_zerocopy-AbCdEf"), Request{ID: ReqZCAlloc, MapSize: 4096, Path: "/dev/shm/corosync_zerocopy-AbCdEf"}},
		{EncodeZCFree(4096, 7), Request{ID: ReqZCFree, MapSize: 4096, ServerAddr: 7}},
		{EncodeZCExecute(8), Request{ID: ReqZCExecute, ServerAddr: 8}},
	} {
		got, err := DecodeRequest(c.msg)
		if err != nil {
			t.Errorf("%d: %v", c.want.ID, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("decoded %+v, want %+v", got, c.want)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	for _, msg := range [][]byte{
		EncodeJoin("a", 1, 0), EncodeLeave("a", 1), EncodeMembership("a"), EncodeIterInit(IterAll, ""),
		EncodeIterHandle(ReqIterNext, 1), EncodeMcast(GuaranteeAgreed, []byte("abcdef")),
		EncodePartialMcast(GuaranteeAgreed, 9, PartialLast, []byte("abc")), EncodeZCAlloc(1, "/p"),
		EncodeZCFree(1, 2), EncodeZCExecute(3),
	} {
		id := int32(le32(msg))
		// Every truncation, its size field fixed up to agree: an error,
		// never a panic.
		for n := 0; n < len(msg); n++ {
			cut := bytes.Clone(msg[:n])
			if n >= 12 {
				put32(cut[8:], uint32(n))
			}
			if _, err := DecodeRequest(cut); err == nil {
				t.Errorf("request %d cut to %d bytes decoded", id, n)
			}
		}
		// A size field that disagrees.
		bad := bytes.Clone(msg)
		put32(bad[8:], uint32(len(msg)+1))
		if _, err := DecodeRequest(bad); !errors.Is(err, ErrSize) {
			t.Errorf("request %d with a wrong size: %v", id, err)
		}
	}
	// A name of 129 bytes.
	j := EncodeJoin("a", 1, 0)
	put32(j[16:], MaxNameLength+1)
	if _, err := DecodeRequest(j); !errors.Is(err, ErrNameTooLong) {
		t.Errorf("long name: %v", err)
	}
	// msglen disagreeing with the message.
	m := EncodeMcast(GuaranteeAgreed, []byte("abc"))
	put32(m[32:], 4)
	if _, err := DecodeRequest(m); !errors.Is(err, ErrSize) {
		t.Errorf("mcast with a wrong msglen: %v", err)
	}
	p := EncodePartialMcast(GuaranteeAgreed, 2, PartialFirst, []byte("abc"))
	if _, err := DecodeRequest(p); !errors.Is(err, ErrSize) {
		t.Errorf("fragment longer than its message: %v", err)
	}
	p = EncodePartialMcast(GuaranteeAgreed, 9, 7, []byte("abc"))
	if _, err := DecodeRequest(p); !errors.Is(err, ErrSize) {
		t.Errorf("fragment of type 7: %v", err)
	}
	z := EncodeZCAlloc(1, strings.Repeat("p", ZCPathLen-1))
	z[ReqHeaderSize+8+ZCPathLen-1] = 'x' // no NUL within the array
	if _, err := DecodeRequest(z); !errors.Is(err, ErrSize) {
		t.Errorf("unterminated path: %v", err)
	}
	// An iteration of every group ignores its name field, which libcpg
	// does not set.
	it := EncodeIterInit(IterAll, "")
	put32(it[16:], 0xdeadbeef)
	if r, err := DecodeRequest(it); err != nil || r.IterType != IterAll {
		t.Errorf("iteration ALL with a garbage name: %+v %v", r, err)
	}
	u := EncodeBareRequest(13)
	if _, err := DecodeRequest(u); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown id: %v", err)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	members := []Address{{1, 100, 0}, {2, 200, 0}}
	left := []Address{{3, 300, ReasonNodeDown}}
	joined := []Address{{2, 200, ReasonJoin}}
	for _, c := range []struct {
		msg  []byte
		want Event
	}{
		{AppendDeliver(nil, "g", 1, 2, []byte("m")), Event{ID: ResDeliverCallback, Group: "g", NodeID: 1, PID: 2, MsgLen: 1, Data: []byte("m")}},
		{AppendPartialDeliver(nil, "g", 10, 1, 2, PartialContinued, []byte("frag")), Event{ID: ResPartialDeliver, Group: "g", NodeID: 1, PID: 2, MsgLen: 10, FragType: PartialContinued, Data: []byte("frag")}},
		{EncodeConfChg("g", members, left, joined), Event{ID: ResConfChgCallback, Group: "g", Members: members, Left: left, Joined: joined}},
		{EncodeConfChg("", nil, nil, nil), Event{ID: ResConfChgCallback, Members: []Address{}, Left: []Address{}, Joined: []Address{}}},
		{EncodeTotemConfChg(1, 44, []uint32{1, 2, 3}), Event{ID: ResTotemConfChgCallback, RingNode: 1, RingSeq: 44, TotemMembers: []uint32{1, 2, 3}}},
	} {
		got, err := DecodeEvent(c.msg)
		if err != nil {
			t.Errorf("%d: %v", c.want.ID, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("decoded %+v, want %+v", got, c.want)
		}
		for n := range len(c.msg) {
			cut := bytes.Clone(c.msg[:n])
			if n >= 12 {
				put32(cut[8:], uint32(n))
			}
			if _, err := DecodeEvent(cut); err == nil {
				t.Errorf("event %d cut to %d bytes decoded", c.want.ID, n)
			}
		}
	}
}

func TestResponses(t *testing.T) {
	r, err := DecodeResponse(ReqMembership, EncodeMembershipResponse([]Address{{1, 2, 9}, {3, 4, 9}}))
	if err != nil || !reflect.DeepEqual(r.Members, []Address{{1, 2, 0}, {3, 4, 0}}) || r.Error != cswire.OK {
		t.Errorf("membership: %+v %v", r, err)
	}
	r, err = DecodeResponse(ReqLocalGet, EncodeLocalGet(7))
	if err != nil || r.NodeID != 7 {
		t.Errorf("local_get: %+v %v", r, err)
	}
	r, err = DecodeResponse(ReqIterNext, EncodeIterNextResponse(cswire.OK, Description{"g", 1, 2}))
	if err != nil || r.Desc != (Description{"g", 1, 2}) {
		t.Errorf("iteration_next: %+v %v", r, err)
	}
	r, err = DecodeResponse(ReqIterNext, EncodeIterNextResponse(cswire.ErrNoSections, Description{}))
	if err != nil || r.Error != cswire.ErrNoSections {
		t.Errorf("iteration_next at the end: %+v %v", r, err)
	}
	r, err = DecodeResponse(ReqJoin, EncodeStatus(ResJoin, cswire.ErrExist))
	if err != nil || r.Error != cswire.ErrExist || r.ID != ResJoin {
		t.Errorf("join: %+v %v", r, err)
	}
	// More members than the array holds are cut, as corosync's array is.
	many := make([]Address, ProcessorCountMax+5)
	r, err = DecodeResponse(ReqMembership, EncodeMembershipResponse(many))
	if err != nil || len(r.Members) != ProcessorCountMax {
		t.Errorf("membership of %d: %d members, %v", len(many), len(r.Members), err)
	}
}

func TestExecRoundTrip(t *testing.T) {
	for _, e := range []Exec{
		{Kind: ExecProcJoin, PID: 1, Reason: ReasonJoin, Group: "g"},
		{Kind: ExecProcLeave, PID: 2, Reason: ReasonProcDown, Group: Name(strings.Repeat("x", 128))},
		{Kind: ExecMcast, Flags: FlagMore, PID: 3, Source: 1 << 40, Group: "g", Data: []byte("payload")},
		{Kind: ExecPartial, PID: 4, Source: 5, FragType: PartialLast, MsgLen: 100, Group: "h", Data: []byte("frag")},
		{Kind: ExecChunk, Flags: 0, Source: 6, Data: []byte("rest")},
		{Kind: ExecJoinList, Ring: totem.RingID{Rep: 1, Seq: 8}, Epoch: totem.MsgID{Node: 2, Origin: 3, Seq: 4},
			Entries: []JoinEntry{{10, "a"}, {11, "b\x00"}}},
		{Kind: ExecJoinList, Ring: totem.RingID{Rep: 1, Seq: 12}},
		{Kind: ExecResync, Ring: totem.RingID{Rep: 3, Seq: 16}},
	} {
		b := AppendExec(nil, &e)
		got, err := DecodeExec(b)
		if err != nil {
			t.Errorf("kind %d: %v", e.Kind, err)
			continue
		}
		if len(got.Data) == 0 {
			got.Data = nil
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("decoded %+v, want %+v", got, e)
		}
		limit := len(b)
		if e.Kind == ExecMcast || e.Kind == ExecPartial || e.Kind == ExecChunk {
			limit = len(b) - len(e.Data) // a shorter data part is a valid frame
		}
		for n := range limit {
			if _, err := DecodeExec(b[:n]); err == nil {
				t.Errorf("kind %d cut to %d bytes decoded", e.Kind, n)
			}
		}
	}
	// A joinlist count beyond its bytes.
	jl := AppendExec(nil, &Exec{Kind: ExecJoinList})
	binary.BigEndian.PutUint32(jl[len(jl)-4:], 1<<30)
	if _, err := DecodeExec(jl); err == nil {
		t.Error("joinlist with a lying count decoded")
	}
}

func TestEscaped(t *testing.T) {
	if got := Name("a b\\\x01\xff").Escaped(); got != `a b\\\x01\xFF` {
		t.Errorf("escaped %q", got)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, m := range [][]byte{EncodeJoin("a", 1, 0), EncodeMcast(2, []byte("x")), EncodePartialMcast(2, 3, 1, []byte("x")),
		EncodeZCAlloc(1, "/dev/shm/x"), EncodeIterHandle(ReqIterNext, 1)} {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err == nil && len(r.Data) > len(b) {
			t.Fatal("data longer than the message")
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	for _, m := range [][]byte{AppendDeliver(nil, "g", 1, 2, []byte("m")), EncodeConfChg("g", []Address{{1, 2, 0}}, nil, nil),
		EncodeTotemConfChg(1, 2, []uint32{1}), AppendPartialDeliver(nil, "g", 3, 1, 2, 1, []byte("x"))} {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = DecodeEvent(b) })
}

func FuzzDecodeExec(f *testing.F) {
	for _, e := range []Exec{{Kind: ExecProcJoin, Group: "g"}, {Kind: ExecMcast, Group: "g", Data: []byte("d")},
		{Kind: ExecJoinList, Entries: []JoinEntry{{1, "g"}}}, {Kind: ExecChunk, Data: []byte("d")}} {
		f.Add(AppendExec(nil, &e))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeExec(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		if got := AppendExec(nil, &e); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded % x, decoded from % x", got, b)
		}
	})
}
