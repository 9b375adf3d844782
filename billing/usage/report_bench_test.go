package usage

import (
	"context"
	"fmt"
	"github.com/billkit/billkit/billing"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
)

// BenchmarkReport measures one ReportAll pass over 10,000 subjects with a
// real redis-server (counters, watermarks, leases) and the fake Stripe:
// "new-usage" adds one unit to every subject before each pass, "idle"
// adds none. Reported per pass: subjects/s, Stripe calls per subject and
// Redis round trips per subject.
func BenchmarkReport(b *testing.B) {
	const subjects = 10000
	srv := testserver.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: 32})
	defer rdb.Close()
	rt := &testserver.CommandHook{}
	rdb.AddHook(rt)
	ctx := context.Background()

	for _, mode := range modes {
		prefix := "bench" + mode.String()
		counters, err := quota.NewRedisStore(rdb, quota.RedisOptions{Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		wms := newRedisWatermarks(rdb, redisOptions{Prefix: prefix})
		leases := newRedisLeases(rdb, redisOptions{Prefix: prefix})
		fake := fakestripe.NewServer()
		p := quota.CalendarPeriod(quota.Month, time.Now())
		es := make([]billing.Entitlement, subjects)
		for i := range es {
			s := fmt.Sprintf("%s-%05d", mode, i)
			es[i] = billing.Entitlement{Subject: s, Tier: "pro", Status: billing.StatusActive,
				CustomerID: "cus_" + s, MeteredItemID: "si_" + s, Period: p}
		}
		ents := newReportEnts(es...)
		r, err := NewReporter(withSink(Config{
			Entitlements: ents, Counters: counters,
			watermarks: wms, leases: leases, meter: testMeterFunc,
			Rate: 1e6, Burst: 1000, Concurrency: 8, Logger: quietLogger(),
		}, newSink(b, mode, fake.URL)))
		if err != nil {
			b.Fatal(err)
		}
		addUsage := func() {
			for _, e := range es {
				take(b, counters, e.Subject, p, 1)
			}
		}
		addUsage()
		if err := r.ReportAll(ctx); err != nil { // warm: scripts loaded, watermarks exist
			b.Fatal(err)
		}
		for _, scenario := range []string{"new-usage", "idle"} {
			b.Run(mode.String()+"/"+scenario, func(b *testing.B) {
				var calls, trips int64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					if scenario == "new-usage" {
						addUsage()
					}
					c0, t0 := fake.Calls(""), rt.RoundTrips()
					b.StartTimer()
					if err := r.ReportAll(ctx); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					calls += int64(fake.Calls("") - c0)
					trips += rt.RoundTrips() - t0
					if st := r.Stats(); st.Failed != 0 || st.Pending != 0 {
						b.Fatalf("pass left work: %+v", st)
					}
					b.StartTimer()
				}
				n := float64(b.N) * subjects
				b.ReportMetric(n/b.Elapsed().Seconds(), "subjects/s")
				b.ReportMetric(float64(calls)/n, "stripe-calls/subject")
				b.ReportMetric(float64(trips)/n, "redis-rt/subject")
			})
		}
		fake.Close()
	}
}
