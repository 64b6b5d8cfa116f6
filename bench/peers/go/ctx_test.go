// The Go peer of the uvctx core benchmarks: the same workloads as
// bench/bench_ctx.c and bench/bench_mem.c, written with the standard
// library's context package. Standard library only, no network.
//
//	go test -bench . -benchmem
//
// scripts/bench.sh runs it and puts its figures beside uvctx's. Figures that
// are not per operation are reported with b.ReportMetric: ns/child for the
// fan-out, ns/level for chains and B/ctx for memory. The memory benchmarks
// keep b.N contexts alive at once, so run them with -benchtime=1000000x to
// measure a million of each.
package peer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// A long-lived cancelable parent for every child made below, as on the C
// side: it makes WithCancel register the child with its parent (the map
// insertion and removal are part of what is measured).
func cancelableRoot() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// with_cancel_cancel_unref: a child of a cancelable parent, cancelled, then
// left to the collector (Go's free).
func BenchmarkWithCancelCancel(b *testing.B) {
	root, stop := cancelableRoot()
	defer stop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, cancel := context.WithCancel(root)
		cancel()
	}
}

// with_timeout_release: WithTimeout of Background, then cancel (Go's
// `defer cancel()`), which stops the runtime timer.
func BenchmarkWithTimeoutCancel(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, cancel := context.WithTimeout(context.Background(), time.Hour)
		cancel()
	}
}

type valueKey int

var sink interface{}

// value_lookup_dN: Value on a chain of N WithValue contexts, each with its
// own key, looking up the outermost key so that every level is visited.
func BenchmarkValue(b *testing.B) {
	for _, depth := range []struct {
		name string
		n    int
	}{{"d1", 1}, {"d10", 10}, {"d100", 100}} {
		b.Run(depth.name, func(b *testing.B) {
			ctx := context.Background()
			for i := 0; i < depth.n; i++ {
				ctx = context.WithValue(ctx, valueKey(i), i)
			}
			var v interface{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v = ctx.Value(valueKey(0))
			}
			b.StopTimer()
			if v.(int) != 0 {
				b.Fatal("wrong value")
			}
			sink = v
		})
	}
}

// with_value_chain_d10: a chain of 10 WithValue contexts made (and left to
// the collector), per level.
func BenchmarkValueChain(b *testing.B) {
	b.ReportAllocs()
	var ctx context.Context
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		ctx = context.Background()
		for j := 0; j < 10; j++ {
			ctx = context.WithValue(ctx, valueKey(j), j)
		}
	}
	spent := time.Since(t0)
	sink = ctx
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N)/10,
		"ns/level")
}

var sizes = []struct {
	name string
	n    int
}{{"1k", 1000}, {"10k", 10000}, {"100k", 100000}}

// cancel_fanout_N: N WithCancel children of one parent; only the parent's
// cancel is timed, reported per child.
func BenchmarkFanout(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			cancels := make([]context.CancelFunc, sz.n)
			var spent time.Duration // testing.B.Elapsed is Go 1.20
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				parent, cancelParent := cancelableRoot()
				for j := range cancels {
					_, cancels[j] = context.WithCancel(parent)
				}
				b.StartTimer()
				t0 := time.Now()
				cancelParent()
				spent += time.Since(t0)
				b.StopTimer()
				for j := range cancels {
					cancels[j] = nil
				}
			}
			b.ReportMetric(float64(spent.Nanoseconds())/
				float64(b.N)/float64(sz.n), "ns/child")
		})
	}
}

// cancel_chain_N: a chain of N WithCancel contexts, each the child of the
// previous one; only the cancel of the first is timed, reported per level.
func BenchmarkChain(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			var spent time.Duration
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				root, cancelRoot := cancelableRoot()
				ctx := root
				var last context.CancelFunc
				for j := 1; j < sz.n; j++ {
					ctx, last = context.WithCancel(ctx)
				}
				b.StartTimer()
				t0 := time.Now()
				cancelRoot()
				spent += time.Since(t0)
				b.StopTimer()
				last()
			}
			b.ReportMetric(float64(spent.Nanoseconds())/
				float64(b.N)/float64(sz.n), "ns/level")
		})
	}
}

// Memory per live context: HeapAlloc after a collection, before and after
// making b.N live children of a cancelable parent, over b.N. The slices
// that keep them alive are allocated before the first reading.
func memPerContext(b *testing.B, newCtx func(parent context.Context) (
	context.Context, context.CancelFunc)) {
	var before, after runtime.MemStats
	root, stop := cancelableRoot()
	defer stop()
	ctxs := make([]context.Context, b.N)
	cancels := make([]context.CancelFunc, b.N)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < b.N; i++ {
		ctxs[i], cancels[i] = newCtx(root)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.StopTimer()
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N),
		"B/ctx")
	for i := range cancels {
		cancels[i]()
	}
	runtime.KeepAlive(ctxs)
}

func BenchmarkMemCancel(b *testing.B) {
	memPerContext(b, context.WithCancel)
}

func BenchmarkMemTimeout(b *testing.B) {
	memPerContext(b, func(p context.Context) (context.Context,
		context.CancelFunc) {
		return context.WithTimeout(p, time.Hour)
	})
}

// scaling_<shape>_t<N>: bench/bench_scaling.c's churn in the same three
// shapes, with N goroutines (GOMAXPROCS as the machine has cores): each
// makes a WithCancel child of its parent and cancels it, b.N operations in
// all, split evenly; they start together and ns/op is the wall time over
// all of them. own_root: each goroutine under a root of its own; branch:
// each under a WithCancel branch of one server root; shared: all under one
// shared parent.
func BenchmarkScaling(b *testing.B) {
	shapes := []string{"own_root", "branch", "shared"}
	for _, shape := range shapes {
		for _, n := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("%s/t%d", shape, n), func(b *testing.B) {
				server, stopServer := cancelableRoot()
				defer stopServer()
				parents := make([]context.Context, n)
				for i := range parents {
					switch shape {
					case "own_root":
						var stop context.CancelFunc
						parents[i], stop = cancelableRoot()
						defer stop()
					case "branch":
						var stop context.CancelFunc
						parents[i], stop = context.WithCancel(server)
						defer stop()
					default:
						parents[i] = server
					}
				}
				var ready, done sync.WaitGroup
				start := make(chan struct{})
				per := b.N / n
				ready.Add(n)
				done.Add(n)
				for i := 0; i < n; i++ {
					go func(parent context.Context) {
						defer done.Done()
						ready.Done()
						<-start
						for j := 0; j < per; j++ {
							_, cancel := context.WithCancel(parent)
							cancel()
						}
					}(parents[i])
				}
				ready.Wait()
				b.ResetTimer()
				close(start)
				done.Wait()
			})
		}
	}
}
