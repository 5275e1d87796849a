package objdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// startKeeper runs node's keeper on nc until the end of the test (or
// until nc's server stops).
func startKeeper(t testing.TB, nc *nats.Conn, node uint32, replicas int) (stop func()) {
	t.Helper()
	return startKeeperWith(t, nc, KeeperConfig{Node: node, Replicas: replicas})
}

// startKeeperWith runs a keeper configured as cfg, with the tests'
// bucket, subjects, log and heartbeat.
func startKeeperWith(t testing.TB, nc *nats.Conn, cfg KeeperConfig) (stop func()) {
	t.Helper()
	subjects, _ := bus.NewSubjects("corobus.test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg.Bucket, cfg.Subjects, cfg.Heartbeat = "objdb_test", subjects, 50*time.Millisecond
		cfg.Log = bustest.Logger(t).With("keeper", cfg.Node)
		if err := RunKeeper(ctx, nc, cfg); err != nil {
			t.Errorf("keeper of node %d: %v", cfg.Node, err)
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// openStore opens node's view on nc; the node's keeper must run
// (startKeeper).
func openStore(t testing.TB, nc *nats.Conn, node uint32, replicas int) *Store {
	t.Helper()
	subjects, _ := bus.NewSubjects("corobus.test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, nc, StoreConfig{Bucket: "objdb_test", Replicas: replicas, Node: node, Subjects: subjects,
		Log: bustest.Logger(t).With("copy", node), WriteTimeout: 3 * time.Second, FeedTimeout: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func mustValue(t *testing.T, typ Type, s string) Value {
	t.Helper()
	v, err := ParseValue(typ, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestEveryTypeRoundTrips(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	s := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		typ  Type
		in   string
		want string
	}{
		{Int8, "-5", "-5"}, {Uint8, "255", "255"}, {Int16, "-30000", "-30000"}, {Uint16, "65535", "65535"},
		{Int32, "-2147483648", "-2147483648"}, {Uint32, "5000", "5000"}, {Int64, "-9000000000", "-9000000000"},
		{Uint64, "18446744073709551615", "18446744073709551615"}, {Float, "1.5", "1.500000"}, {Double, "-2.25", "-2.250000"},
		{String, "hello world", "hello world"}, {Binary, "00ff10", "00ff10"},
	} {
		key := "test.types." + tc.typ.String()
		if err := s.Set(ctx, key, mustValue(t, tc.typ, tc.in)); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
		got, err := s.Get(key)
		if err != nil || got.Type != tc.typ || got.String() != tc.want {
			t.Errorf("%s = %v (%s), %v; want %s (%s)", key, got, got.Type, err, tc.want, tc.typ)
		}
	}
	if n := len(s.List("test.types.")); n != 12 {
		t.Errorf("listed %d keys, want 12", n)
	}
}

func TestValidation(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	s := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		key  string
		v    Value
		want error
	}{
		// corosync's icmap answers a set of any bad name
		// CS_ERR_NAME_TOO_LONG, after the value's check.
		{"ab", Value{Type: String, Data: []byte("x\x00")}, ErrNameTooLong},
		{"a b.c", Value{Type: String, Data: []byte("x\x00")}, ErrNameTooLong},
		{"a!b", Value{Type: Uint8, Data: []byte{1}}, ErrNameTooLong},
		{string(make([]byte, 300)), Value{Type: String}, ErrNameTooLong},
		{"ab", Value{Type: Uint32, Data: []byte{1, 2}}, ErrInvalidParam},
		{"ok.key", Value{Type: Uint32, Data: []byte{1, 2}}, ErrInvalidParam},
		{"ok.key", Value{Type: 99, Data: []byte{1}}, ErrInvalidParam},
	} {
		if err := s.Set(ctx, tc.key, tc.v); !errors.Is(err, tc.want) {
			t.Errorf("Set(%.10q, %v) = %v, want %v", tc.key, tc.v, err, tc.want)
		}
	}
	if _, err := s.Get("no.such.key"); !errors.Is(err, ErrNotExist) {
		t.Errorf("Get of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "no.such.key"); !errors.Is(err, ErrNotExist) {
		t.Errorf("Delete of a missing key: %v", err)
	}
	// A bad name is a key that cannot exist, as icmap finds it: read,
	// deleted or adjusted it is CS_ERR_NOT_EXIST; one longer than 255
	// characters is CS_ERR_NAME_TOO_LONG, as libcmap answers it.
	for _, key := range []string{"ab", "a!b", "a b.c", ""} {
		if _, err := s.Get(key); !errors.Is(err, ErrNotExist) {
			t.Errorf("Get(%q) = %v, want %v", key, err, ErrNotExist)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, ErrNotExist) {
			t.Errorf("Delete(%q) = %v, want %v", key, err, ErrNotExist)
		}
		if _, err := s.Adjust(ctx, key, 1); !errors.Is(err, ErrNotExist) {
			t.Errorf("Adjust(%q) = %v, want %v", key, err, ErrNotExist)
		}
	}
	long := strings.Repeat("k", MaxKeyLen+1)
	if _, err := s.Get(long); !errors.Is(err, ErrNameTooLong) {
		t.Errorf("Get of a 256-character key = %v, want %v", err, ErrNameTooLong)
	}
	if err := s.Delete(ctx, long); !errors.Is(err, ErrNameTooLong) {
		t.Errorf("Delete of a 256-character key = %v, want %v", err, ErrNameTooLong)
	}
	if _, err := ParseType("u33"); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("ParseType(u33): %v", err)
	}
	if _, err := ParseValue(Uint8, "256"); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("u8 256 parsed")
	}
	_ = s.Set(ctx, "test.str", mustValue(t, String, "x"))
	if _, err := s.Adjust(ctx, "test.str", 1); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("inc of a string: %v", err)
	}
}

func TestDeleteAndPrefix(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	s := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	for _, k := range []string{"a.b.c", "a.b.d", "a.x", "b.y.z"} {
		if err := s.Set(ctx, k, mustValue(t, Uint8, "1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "a.x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a.x"); !errors.Is(err, ErrNotExist) {
		t.Errorf("a.x still there")
	}
	n, err := s.DeletePrefix(ctx, "a.b.")
	if err != nil || n != 2 {
		t.Errorf("DeletePrefix = %d, %v", n, err)
	}
	if got := s.List("b."); len(got) != 1 || got[0].Key != "b.y.z" {
		t.Errorf("left %v", got)
	}
}

// Eight writers, a thousand increments each: not one is lost.
func TestConcurrentIncrements(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	s := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	if err := s.Set(ctx, "test.counter", mustValue(t, Uint64, "0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if _, err := s.Adjust(ctx, "test.counter", 1); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, _ := s.Get("test.counter")
	if v.String() != "8000" {
		t.Errorf("counter = %s, want 8000", v)
	}
}

func TestTrackOrderAndValues(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	startKeeper(t, cl.Conn(1), 1, 1)
	s := openStore(t, cl.Conn(1), 1, 1)
	ctx := context.Background()
	events := make(chan Event, 100)
	stop := s.Track("trk.", true, func(e Event) { events <- e })
	defer stop()
	other := s.Track("trk.one", false, func(Event) {})
	other()
	steps := []struct {
		do   func() error
		want string
	}{
		{func() error { return s.Set(ctx, "trk.one", mustValue(t, Uint32, "1")) }, "create trk.one <nil> -> 1"},
		{func() error { return s.Set(ctx, "trk.one", mustValue(t, Uint32, "2")) }, "modify trk.one 1 -> 2"},
		{func() error { _, err := s.Adjust(ctx, "trk.one", -1); return err }, "modify trk.one 2 -> 1"},
		{func() error { return s.Set(ctx, "other.key", mustValue(t, Uint32, "9")) }, ""},
		{func() error { return s.Delete(ctx, "trk.one") }, "delete trk.one 1 -> <nil>"},
	}
	var want []string
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatal(err)
		}
		if st.want != "" {
			want = append(want, st.want)
		}
	}
	for i, w := range want {
		select {
		case e := <-events:
			if got := describe(e); got != w {
				t.Errorf("event %d = %q, want %q", i, got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) did not arrive", i, w)
		}
	}
}

func describe(e Event) string {
	str := func(v *Value) string {
		if v == nil {
			return "<nil>"
		}
		return v.String()
	}
	return fmt.Sprintf("%s %s %s -> %s", e.Kind, e.Key, str(e.Old), str(e.New))
}

// Changes are announced on subjects a plain NATS subscriber can follow.
func TestChangeSubjects(t *testing.T) {
	cl := bustest.StartCluster(t, 1)
	nc := cl.Conn(1)
	startKeeper(t, nc, 1, 1)
	s := openStore(t, nc, 1, 1)
	sub, err := nc.SubscribeSync("corobus.test.objdb.changed.totem.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(context.Background(), "totem.token", mustValue(t, Uint32, "5000")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "corobus.test.objdb.changed.totem.token" || m.Header.Get(HdrOp) != "create" || m.Header.Get(HdrType) != "u32" {
		t.Errorf("event %s %v", m.Subject, m.Header)
	}
}

func TestKeyEncoding(t *testing.T) {
	for _, k := range []string{"totem.token", "a..b", ".lead", "trail.", "x:y=z.w", "a/b-c_d"} {
		enc := EncodeKey(k)
		if back, err := DecodeKey(enc); err != nil || back != k {
			t.Errorf("%q -> %q -> %q, %v", k, enc, back, err)
		}
	}
	if EncodeKey("totem.token") != "totem.token" {
		t.Error("an ordinary key changed")
	}
}
