package objdb

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/bustest"
)

// BenchmarkKeeperRounds is the keeper's writes behind alone: three nodes'
// keepers (one per server of a three-server cluster, the bucket R3) each
// storing rounds of n changed keys back to back, as the flusher does
// every 20 ms under a stream of writes (eight cmap clients over three
// nodes change about three keys per keeper per round). cpu-µs/op is the
// process's CPU (the three servers and keepers) per round: what a round
// costs the buses, and how much of it is per key (docs/objdb.md).
func BenchmarkKeeperRounds(b *testing.B) {
	cl := bustest.StartCluster(b, 3)
	subjects, _ := bus.NewSubjects("corobus.test")
	var ks []*Keeper
	for i := 1; i <= 3; i++ {
		k, err := NewKeeper(cl.Conn(i), KeeperConfig{Node: uint32(i), Bucket: "objdb_test", Replicas: 3, Subjects: subjects,
			Log: bustest.Logger(b), WriteTimeout: 20 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		o := newBucketOpener(k.js, k.cfg.Bucket, k.cfg.Replicas, false)
		for k.ensureBucket(ctx, o) != nil {
			if ctx.Err() != nil {
				b.Fatal("the bucket did not open within a minute")
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		ks = append(ks, k)
	}
	for _, n := range []int{3, 30} {
		b.Run(fmt.Sprintf("%dkeys", n), func(b *testing.B) {
			before := cpuUsed()
			var wg sync.WaitGroup
			for _, k := range ks {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range b.N {
						k.mu.Lock()
						for j := range n {
							k.dirty["runtime.bench.k"+strconv.Itoa(j)] = dirtyKey{v: Value{Type: String, Data: []byte(strconv.Itoa(i))}}
						}
						k.mu.Unlock()
						if err := k.flushRound(context.Background()); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64((cpuUsed()-before).Microseconds())/float64(len(ks)*b.N), "cpu-µs/op")
		})
	}
}

// cpuUsed is the process's CPU time so far, user and system.
func cpuUsed() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
