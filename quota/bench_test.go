package quota_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// BenchmarkMiddleware measures one metered request against a real
// redis-server, next to the same handler without the middleware and a bare
// go-redis INCR round trip (the floor of any Redis-backed limiter), and the
// middleware on a MemoryStore. Each runs serially and with b.RunParallel.
//
//	go test -run '^$' -bench BenchmarkMiddleware -benchmem -count 6 ./quota/
func BenchmarkMiddleware(b *testing.B) {
	srv := testserver.StartRedis(b)
	rdb := redisClient(b, srv.Addr)
	lim := quota.StaticLimits{Plan: "pro", Included: 1 << 40}
	var seq atomic.Int64
	subject := func() string { return "bench-" + strconv.FormatInt(seq.Add(1), 10) }

	serve := func(b *testing.B, h http.Handler) {
		sub := subject()
		run := func(pb func() bool) {
			r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
			r.Header.Set("X-Subject", sub)
			w := &codeWriter{}
			for pb() {
				w.reset()
				h.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
		}
		both(b, run)
	}

	b.Run("middleware-redis", func(b *testing.B) {
		m := newMiddleware(b, quota.Config{Store: newRedisStore(b, rdb), Limits: lim})
		serve(b, m.Handle(okHandler()))
	})
	b.Run("bare-handler", func(b *testing.B) {
		serve(b, okHandler())
	})
	b.Run("incr-floor", func(b *testing.B) {
		key := "bench:{" + subject() + "}:incr"
		ctx := context.Background()
		both(b, func(pb func() bool) {
			for pb() {
				if err := rdb.Incr(ctx, key).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("middleware-memory", func(b *testing.B) {
		m := newMiddleware(b, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: lim})
		serve(b, m.Handle(okHandler()))
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
