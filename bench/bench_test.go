package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// speedPolicy is the policy of every contender during the speed runs: a
// limit high enough that nothing is denied, and for billkit a deadline as
// long as go-redis's read timeout that the peers rely on, so that a busy
// machine cannot turn billkit's requests into fast 503s.
var speedPolicy = Policy{Limit: 1_000_000_000, Deadline: 3 * time.Second}

// subjectCounts are the numbers of distinct subjects the requests spread
// over: one hot key, and many keys.
var subjectCounts = []int{1, 10_000}

// requests returns n pre-built requests, one per subject.
func requests(n int) []*http.Request {
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r := httptest.NewRequest(http.MethodGet, "/v1/things", nil)
		r.Header.Set(SubjectHeader, fmt.Sprintf("cust_%05d", i))
		reqs[i] = r
	}
	return reqs
}

// BenchmarkLimiter runs every contender through the same http.Handler path
// against one redis-server started for the run, for 1 and 10,000 subjects,
// serially and with b.RunParallel. Besides ns/op, B/op and allocs/op it
// reports cmds/op, the Redis commands per request counted by the server
// (INFO commandstats, commands inside Lua scripts included), and non2xx/op
// when any request was not answered 2xx (a denial or an error would make
// the comparison meaningless).
//
// Before timing, every subject's key is created by one request each, so the
// figures are the steady state.
func BenchmarkLimiter(b *testing.B) {
	srv := testserver.StartRedis(b)
	rdb := NewClient(srv.Addr)
	b.Cleanup(func() { rdb.Close() })
	ctx := context.Background()

	warmed := make(map[string]bool)
	for _, c := range Contenders() {
		h, err := c.New(rdb, speedPolicy, OK)
		if err != nil {
			b.Fatalf("%s: %v", c.Name, err)
		}
		for _, n := range subjectCounts {
			reqs := requests(n)
			warm := func(b *testing.B) {
				key := fmt.Sprintf("%s/%d", c.Name, n)
				if warmed[key] {
					return
				}
				for _, r := range reqs {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, r)
					if rec.Code >= 300 {
						b.Fatalf("warm-up: status %d: %s", rec.Code, rec.Body)
					}
				}
				warmed[key] = true
			}
			name := fmt.Sprintf("impl=%s/subjects=%d", c.Name, n)

			b.Run(name+"/mode=serial", func(b *testing.B) {
				warm(b)
				before := commandStats(b, ctx, rdb)
				b.ReportAllocs()
				b.ResetTimer()
				bad := 0
				for i := 0; i < b.N; i++ {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, reqs[i%n])
					if rec.Code >= 300 {
						bad++
					}
				}
				b.StopTimer()
				report(b, ctx, rdb, before, int64(bad))
			})

			b.Run(name+"/mode=parallel", func(b *testing.B) {
				warm(b)
				before := commandStats(b, ctx, rdb)
				var start, bad atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(start.Add(7919))
					var nbad int64
					for pb.Next() {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, reqs[i%n])
						if rec.Code >= 300 {
							nbad++
						}
						i++
					}
					bad.Add(nbad)
				})
				b.StopTimer()
				report(b, ctx, rdb, before, bad.Load())
			})
		}
	}
}

func commandStats(b *testing.B, ctx context.Context, rdb redis.UniversalClient) map[string]int64 {
	b.Helper()
	st, err := CommandStats(ctx, rdb)
	if err != nil {
		b.Fatalf("commandstats: %v", err)
	}
	return st
}

// report adds cmds/op and, when some requests were not 2xx, non2xx/op.
func report(b *testing.B, ctx context.Context, rdb redis.UniversalClient, before map[string]int64, bad int64) {
	b.Helper()
	after := commandStats(b, ctx, rdb)
	b.ReportMetric(float64(Delta(before, after))/float64(b.N), "cmds/op")
	if bad > 0 {
		b.ReportMetric(float64(bad)/float64(b.N), "non2xx/op")
	}
}
