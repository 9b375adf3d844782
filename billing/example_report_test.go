package billing_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// ExampleReporter reports a subject's metered usage as Billing Meter
// events. The second pass finds nothing new and calls Stripe no more; new
// usage is sent as a delta.
func ExampleReporter() {
	ctx := context.Background()
	fake := fakestripe.NewServer() // stands in for api.stripe.com
	defer fake.Close()
	api := client.New("sk_test_123", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:           stripe.String(fake.URL),
			LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
	sink, err := billing.NewMeterEventSink(api, billing.MeterEventSinkConfig{})
	if err != nil {
		panic(err)
	}
	plans, err := billing.NewPlans(billing.Plan{
		Tier: "pro", PriceID: "price_pro", Included: 1000, Overage: true, MeterEventName: "api_requests",
	})
	if err != nil {
		panic(err)
	}

	// Usage counted by the quota middleware, and alice's entitlement as the
	// lifecycle handlers keep it.
	period := quota.CalendarPeriod(quota.Month, time.Now())
	counters := quota.NewMemoryStore(quota.MemoryOptions{})
	count := func(n int64) {
		counters.Take(ctx, quota.TakeRequest{Subject: "alice", Meter: quota.DefaultMeter, Period: period,
			Cost: n, Unlimited: true, ExpireAt: period.End.Add(35 * 24 * time.Hour)})
	}
	ents := billing.NewMemoryStore(nil)
	ents.Update(ctx, "alice", func(e *billing.Entitlement) error {
		e.Tier, e.Status, e.CustomerID, e.Period = "pro", billing.StatusActive, "cus_alice", period
		return nil
	})

	r, err := billing.NewReporter(billing.ReporterConfig{
		Entitlements: ents,
		Counters:     counters,
		MeterEvents:  sink,
		Watermarks:   billing.NewMemoryWatermarkStore(nil),
		Leases:       billing.NewMemoryLeaseStore(nil),
		Plans:        plans,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	count(42)
	r.ReportAll(ctx)
	r.ReportAll(ctx)
	fmt.Println("Stripe holds", fake.MeterTotal("cus_alice", "api_requests"), "after", fake.Calls(""), "call")

	count(8)
	r.Flush(ctx, "alice")
	fmt.Println("Stripe holds", fake.MeterTotal("cus_alice", "api_requests"), "after", fake.Calls(""), "calls")
	st := r.Stats()
	fmt.Println("passes:", st.Passes, "reports:", st.Reports, "failures:", st.Failures)
	// Output:
	// Stripe holds 42 after 1 call
	// Stripe holds 50 after 2 calls
	// passes: 2 reports: 2 failures: 0
}

// ExampleRedisWatermarkStore shows the key of a watermark: the subject in
// a hash tag, so that it shares a Cluster slot with the subject's counters
// and lease.
func ExampleRedisWatermarkStore() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	wms, err := billing.NewRedisWatermarkStore(rdb, billing.UsageRedisOptions{})
	if err != nil {
		panic(err)
	}
	leases, err := billing.NewRedisLeaseStore(rdb, billing.UsageRedisOptions{})
	if err != nil {
		panic(err)
	}
	nov := quota.CalendarPeriod(quota.Month, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	k := billing.WatermarkKey{Subject: "alice", Meter: "requests", Period: nov}
	ctx := context.Background()
	wms.Commit(ctx, k, billing.WatermarkCommit{To: 42}, time.Now().Add(time.Hour))
	got, _ := wms.Load(ctx, "alice", "requests", []quota.Period{nov})

	fmt.Println(wms.Key(k))
	fmt.Println(leases.Key("alice"))
	fmt.Println("reported:", got[0].Reported, "expires:", mr.TTL(wms.Key(k)) > 0)
	// Output:
	// billkit:{alice}:wm:requests:20261101
	// billkit:{alice}:lease:report
	// reported: 42 expires: true
}
