package usage

import (
	"context"
	"fmt"
	"github.com/billkit/billkit/billing"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
)

// TestRacingReporters runs two reporters over the same subjects and
// stores while usage keeps arriving: Stripe ends up holding exactly the
// counted units (B3, B4).
func TestRacingReporters(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			clock := newTestClock(time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC))
			racing(t, mode, quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now}),
				newMemoryWatermarks(clock.Now), newMemoryLeases(clock.Now), clock)
		})
	}
}

// testRacingRedis is TestRacingReporters on real Redis stores.
func testRacingRedis(t *testing.T, rdb redis.UniversalClient) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			prefix := fmt.Sprintf("race%d", mode)
			counters, err := quota.NewRedisStore(rdb, quota.RedisOptions{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			wms := newRedisWatermarks(rdb, redisOptions{Prefix: prefix})
			leases := newRedisLeases(rdb, redisOptions{Prefix: prefix})
			racing(t, mode, counters, wms, leases, newTestClock(time.Now()))
		})
	}
}

func racing(t *testing.T, mode reportMode, counters quota.Store, wms watermarkStore, leases leaseStore, clock *testClock) {
	ctx := context.Background()
	fake := fakestripe.NewServer()
	defer fake.Close()
	p := quota.CalendarPeriod(quota.Month, clock.Now())
	var es []billing.Entitlement
	for i := 0; i < 12; i++ {
		s := fmt.Sprintf("race-%s-%d", mode, i)
		es = append(es, billing.Entitlement{Subject: s, Tier: "pro", Status: billing.StatusActive,
			CustomerID: "cus_" + s, MeteredItemID: "si_" + s, Period: p})
	}
	ents := newReportEnts(es...)
	sink := newSink(t, mode, fake.URL)
	reporters := make([]*Reporter, 2)
	for i := range reporters {
		r, err := NewReporter(withSink(Config{
			Entitlements: ents, Counters: counters, watermarks: wms, leases: leases,
			meter: testMeterFunc, Concurrency: 3, Rate: 1e6, Burst: 1000, FlushWait: time.Millisecond,
			Logger: quietLogger(), Now: clock.Now,
		}, sink))
		if err != nil {
			t.Fatal(err)
		}
		reporters[i] = r
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // usage keeps arriving
		defer wg.Done()
		defer close(done)
		for round := 0; round < 30; round++ {
			for i, e := range es {
				take(t, counters, e.Subject, p, int64(1+(round+i)%3))
			}
		}
	}()
	for i, r := range reporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				if n%3 == i {
					_ = r.Flush(ctx, es[n%len(es)].Subject)
				} else if err := r.ReportAll(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// Settle: both reporters pass again, concurrently, then once more.
	var final sync.WaitGroup
	for _, r := range reporters {
		final.Add(1)
		go func() { defer final.Done(); _ = r.ReportAll(ctx) }()
	}
	final.Wait()
	if err := reporters[0].ReportAll(ctx); err != nil {
		t.Fatal(err)
	}
	if st := reporters[0].Stats(); st.Pending != 0 {
		t.Fatalf("pending after the final pass: %+v", st)
	}
	for _, e := range es {
		u, err := counters.Usage(ctx, e.Subject, testMeter, p)
		if err != nil {
			t.Fatal(err)
		}
		if got := held(fake, mode, e); got != u.Used {
			t.Errorf("%s: Stripe holds %d, counted %d", e.Subject, got, u.Used)
		}
	}
}
