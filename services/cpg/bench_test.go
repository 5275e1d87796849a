package cpg_test

import (
	"context"
	"fmt"
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
