package cpg_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/services/cpg"
	"github.com/corobus/corobus/services/cpg/cpgwire"
)

// BenchmarkMcast measures the service's own path, without the gateway: a
// member's multicasts through the cpg service and the ordered multicast
// back to it, one node and three, as cpg_tput's self mode does (a window
// of messages in flight). msgs/s counts own deliveries.
func BenchmarkMcast(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			c := newCluster(b, nodes, cpg.Options{})
			for _, size := range []int{64, 1024, 64 << 10} {
				b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
					var got atomic.Int64
					m, err := c.svc(1).Open(cpg.Client{Events: func(ev []byte) error {
						if len(ev) > 4 && ev[0] == byte(cpgwire.ResDeliverCallback) {
							got.Add(1)
						}
						return nil
					}, PID: uint32(1000 + size)})
					if err != nil {
						b.Fatal(err)
					}
					defer m.Close()
					ctx := context.Background()
					g := fmt.Sprintf("bench%d", size)
					if r := m.Request(ctx, cpgwire.EncodeJoin(cpgwire.Name(g), uint32(1000+size), 0)); r[16] != 1 {
						b.Fatalf("join: % x", r[:24])
					}
					time.Sleep(100 * time.Millisecond)
					msg := cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, make([]byte, size))
					b.SetBytes(int64(size))
					b.ResetTimer()
					start, cpu0 := time.Now(), processCPU()
					for range b.N {
						m.Request(ctx, msg)
					}
					for got.Load() < int64(b.N) {
						time.Sleep(100 * time.Microsecond)
					}
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
					// Every node's bus, totem and cpg instance are in this
					// process: its CPU per message is the path's.
					b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu_us/msg")
				})
			}
		})
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLatClients is the side-by-side's eight cpg_lat clients
// (tests/benchcompare, "cpg latency, 8 clients") without the gateway:
// eight members on three nodes, member i on node i%3+1, each in a group
// of its own, each multicasting 64 B and waiting for its own delivery
// before the next. msgs/s is the members' sum; cpu_us/msg is this
// process's CPU per message — every node's bus, totem and cpg instance
// are in it, so it is the cluster's cost of a message.
func BenchmarkLatClients(b *testing.B) {
	const members = 8
	c := newCluster(b, 3, cpg.Options{})
	type lat struct {
		m    *cpg.Conn
		back chan struct{}
	}
	var ls []*lat
	for i := range members {
		l := &lat{back: make(chan struct{}, 1)}
		pid := uint32(2000 + i)
		var err error
		l.m, err = c.svc(i%3 + 1).Open(cpg.Client{Events: func(ev []byte) error {
			e, err := cpgwire.DecodeEvent(ev)
			if err == nil && e.ID == cpgwire.ResDeliverCallback && e.PID == pid {
				l.back <- struct{}{}
			}
			return nil
		}, PID: pid})
		if err != nil {
			b.Fatal(err)
		}
		defer l.m.Close()
		if r := l.m.Request(context.Background(), cpgwire.EncodeJoin(cpgwire.Name(fmt.Sprintf("lat%d", i)), pid, 0)); r[16] != 1 {
			b.Fatalf("join: % x", r[:24])
		}
		ls = append(ls, l)
	}
	time.Sleep(200 * time.Millisecond)
	msg := cpgwire.EncodeMcast(cpgwire.GuaranteeAgreed, make([]byte, 64))
	per := max(b.N/members, 1)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				l.m.Request(context.Background(), msg)
				<-l.back
			}
		}()
	}
	wg.Wait()
	n := float64(per * members)
	b.ReportMetric(n/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/n, "cpu_us/msg")
}
