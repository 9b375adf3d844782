package quota_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// BenchmarkMiddleware measures one metered request against a real
// redis-server (Redis), next to the same handler without the middleware
// (BareHandler) and a bare go-redis INCR round trip (IncrFloor, the floor of
// any Redis-backed limiter), and the middleware on a MemoryStore (Memory),
// which isolates the middleware's own cost and needs no server
// (MemoryRequestDeadline: the same for requests whose context already ends
// sooner than Config.Deadline, as under http.TimeoutHandler;
// MemoryObserved: the same with a Config.Observer that counts decisions,
// the cost of the observation hook). Each runs
// serially and with b.RunParallel.
//
//	go test -run '^$' -bench BenchmarkMiddleware -benchmem -count 6 ./quota/
//	go test -run '^$' -bench 'BenchmarkMiddleware/.*Memory' -benchmem ./quota/
func BenchmarkMiddleware(b *testing.B) {
	// A generous deadline: these measure cost, and a loaded machine must
	// not turn a slow scheduling into a 503.
	lim := quota.StaticLimits{Plan: "pro", Included: 1 << 40}
	var seq atomic.Int64
	subject := func() string { return "bench-" + strconv.FormatInt(seq.Add(1), 10) }

	serveCtx := func(b *testing.B, ctx context.Context, h http.Handler) {
		sub := subject()
		var failed atomic.Int64
		run := func(pb func() bool) {
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/thing", nil)
			r.Header.Set("X-Subject", sub)
			w := &codeWriter{}
			for pb() {
				w.reset()
				h.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					failed.Add(1)
				}
			}
		}
		both(b, run)
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d requests did not get 200", n)
		}
	}
	serve := func(b *testing.B, h http.Handler) { serveCtx(b, context.Background(), h) }
	config := func(st quota.Store) quota.Config {
		return quota.Config{Store: st, Limits: lim, Deadline: 10 * time.Second}
	}

	b.Run("Memory", func(b *testing.B) {
		m := newMiddleware(b, config(quota.NewMemoryStore(quota.MemoryOptions{})))
		serve(b, m.Handle(okHandler()))
	})
	b.Run("MemoryObserved", func(b *testing.B) {
		cfg := config(quota.NewMemoryStore(quota.MemoryOptions{}))
		var n atomic.Int64
		cfg.Observer = quota.Observer{Decided: func(context.Context, quota.Observation) { n.Add(1) }}
		m := newMiddleware(b, cfg)
		serve(b, m.Handle(okHandler()))
	})
	b.Run("MemoryRequestDeadline", func(b *testing.B) {
		cfg := config(quota.NewMemoryStore(quota.MemoryOptions{}))
		cfg.Deadline = 2 * time.Hour
		m := newMiddleware(b, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // sooner than Deadline
		defer cancel()
		serveCtx(b, ctx, m.Handle(okHandler()))
	})
	b.Run("BareHandler", func(b *testing.B) {
		serve(b, okHandler())
	})

	srv := testserver.StartRedis(b)
	rdb := redisClient(b, srv.Addr)
	b.Run("Redis", func(b *testing.B) {
		m := newMiddleware(b, config(newRedisStore(b, rdb)))
		serve(b, m.Handle(okHandler()))
	})
	b.Run("IncrFloor", func(b *testing.B) {
		key := "bench:{" + subject() + "}:incr"
		ctx := context.Background()
		both(b, func(pb func() bool) {
			for pb() {
				if err := rdb.Incr(ctx, key).Err(); err != nil {
					b.Error(err)
				}
			}
		})
	})
}

// both runs loop serially and in parallel as sub-benchmarks. loop calls
// next until it reports false.
func both(b *testing.B, loop func(next func() bool)) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		loop(func() bool { i++; return i <= b.N })
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) { loop(pb.Next) })
	})
}

// BenchmarkReserve compares, on a real redis-server, a request that
// reserves 100 tokens before its handler and settles what the handler
// used after it (op=ReserveSettle) with a request that only takes its
// cost (op=Take), serially and with b.RunParallel. Both go through the
// middleware and a handler that answers 200. Besides ns/op and allocs/op
// it reports
// round trips per request: trips/op counts every command the client sent
// (internal/testserver.CommandHook), the settle included, and
// path-trips/op those sent before the response was complete, measured
// apart (one request at a time, each settle held back until its response
// is complete). Each run ends with Close, so the settles are inside the
// measured time.
//
//	go test -run '^$' -bench BenchmarkReserve -benchmem -count 6 ./quota/ | tee reserve.txt
//	benchstat -col /op reserve.txt
func BenchmarkReserve(b *testing.B) {
	srv := testserver.StartRedis(b)
	lim := quota.StaticLimits{Plan: "pro", Included: 1 << 40}
	var seq atomic.Int64
	for _, c := range []struct {
		name    string
		reserve []quota.Reservation
		handler http.Handler
	}{
		{"op=Take", nil, okHandler()},
		{"op=ReserveSettle", []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}, settling(b, 42)},
	} {
		b.Run(c.name, func(b *testing.B) {
			rdb := redisClient(b, srv.Addr)
			hook := &testserver.CommandHook{}
			rdb.AddHook(hook)
			gs := &gatedStore{Store: newRedisStore(b, rdb)}
			m := newMiddleware(b, quota.Config{Store: gs, Limits: lim, Deadline: 10 * time.Second, Reserve: c.reserve})
			h := m.Handle(c.handler)
			sub := "bench-reserve-" + strconv.FormatInt(seq.Add(1), 10)
			path, _ := pathTrips(b, m, gs, hook, h, sub, 51) // leaves the gate open
			for _, parallel := range []bool{false, true} {
				name := map[bool]string{false: "serial", true: "parallel"}[parallel]
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					var failed atomic.Int64
					loop := func(next func() bool) {
						r := httptest.NewRequest(http.MethodPost, "/v1/complete", nil)
						r.Header.Set("X-Subject", sub)
						w := &codeWriter{}
						for next() {
							w.reset()
							h.ServeHTTP(w, r)
							if w.code != http.StatusOK {
								failed.Add(1)
							}
						}
					}
					t0 := hook.RoundTrips()
					b.ResetTimer()
					if parallel {
						b.RunParallel(func(pb *testing.PB) { loop(pb.Next) })
					} else {
						i := 0
						loop(func() bool { i++; return i <= b.N })
					}
					m.Close()
					b.StopTimer()
					if n := failed.Load(); n > 0 {
						b.Fatalf("%d requests did not get 200", n)
					}
					b.ReportMetric(float64(hook.RoundTrips()-t0)/float64(b.N), "trips/op")
					b.ReportMetric(path, "path-trips/op")
				})
			}
		})
	}
}

// BenchmarkCoalesce compares, on a real redis-server, decisions through
// the middleware with 64 goroutines per CPU (b.SetParallelism), coalesced
// (the default) and not (RedisOptions.NoCoalesce), reporting round trips
// per request.
//
//	go test -run '^$' -bench BenchmarkCoalesce -benchmem -count 6 ./quota/
func BenchmarkCoalesce(b *testing.B) {
	srv := testserver.StartRedis(b)
	lim := quota.StaticLimits{Plan: "pro", Included: 1 << 40}
	for _, noCoalesce := range []bool{false, true} {
		name := "coalesced"
		if noCoalesce {
			name = "NoCoalesce"
		}
		b.Run(name, func(b *testing.B) {
			rdb := redisClient(b, srv.Addr)
			hook := &testserver.CommandHook{}
			rdb.AddHook(hook)
			st, err := quota.NewRedisStore(rdb, quota.RedisOptions{NoCoalesce: noCoalesce})
			if err != nil {
				b.Fatal(err)
			}
			m := newMiddleware(b, quota.Config{Store: st, Limits: lim, Deadline: 10 * time.Second})
			h := m.Handle(okHandler())
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(64)
			t0 := hook.RoundTrips()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
				r.Header.Set("X-Subject", "coalesce-"+strconv.FormatInt(seq.Add(1)%1000, 10))
				w := &codeWriter{}
				for pb.Next() {
					w.reset()
					h.ServeHTTP(w, r)
					if w.code != http.StatusOK {
						b.Errorf("status %d", w.code)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(hook.RoundTrips()-t0)/float64(b.N), "trips/op")
		})
	}
}
