package usage_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/billing/usage"
	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// ExampleReporter reports a subject's metered usage as Billing Meter
// events, keeping its watermarks in Redis (miniredis here). A second flush
// finds nothing new and calls Stripe no more; new usage is sent as a
// delta.
func ExampleReporter() {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	fake := fakestripe.NewServer() // stands in for api.stripe.com
	defer fake.Close()
	api := client.New("sk_test_123", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:           stripe.String(fake.URL),
			LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
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
	ents := billing.NewMemoryStore(billing.MemoryOptions{})
	ents.Update(ctx, "alice", func(e *billing.Entitlement) error {
		e.Tier, e.Status, e.CustomerID, e.Period = "pro", billing.StatusActive, "cus_alice", period
		return nil
	})

	r, err := usage.NewReporter(usage.Config{
		Entitlements: ents,
		Counters:     counters,
		Plans:        plans, // pro bills meter events under api_requests
		Stripe:       api,
		Redis:        rdb,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	count(42)
	r.Flush(ctx, "alice")
	r.Flush(ctx, "alice")
	fmt.Println("Stripe holds", fake.MeterTotal("cus_alice", "api_requests"), "after", fake.Calls(""), "call")

	count(8)
	r.Flush(ctx, "alice")
	fmt.Println("Stripe holds", fake.MeterTotal("cus_alice", "api_requests"), "after", fake.Calls(""), "calls")
	st := r.Stats()
	fmt.Println("reports:", st.Reports, "failures:", st.Failures)
	// Output:
	// Stripe holds 42 after 1 call
	// Stripe holds 50 after 2 calls
	// reports: 2 failures: 0
}

// ExampleReporter_meters reports a plan of two meters: requests, every
// unit billed, and tokens, the units above the 1000 included billed, each
// under its own billing meter.
func ExampleReporter_meters() {
	ctx := context.Background()
	fake := fakestripe.NewServer() // stands in for api.stripe.com
	defer fake.Close()
	api := client.New("sk_test_123", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:           stripe.String(fake.URL),
			LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
	plans, err := billing.NewPlans(billing.Plan{Tier: "ai", PriceID: "price_ai", Meters: []billing.Meter{
		{Name: "requests", Included: 100, Overage: true, MeterEventName: "api_requests"},
		{Name: "tokens", Included: 1000, Overage: true, OverageOnly: true, MeterEventName: "api_tokens"},
	}})
	if err != nil {
		panic(err)
	}
	period := quota.CalendarPeriod(quota.Month, time.Now())
	counters := quota.NewMemoryStore(quota.MemoryOptions{})
	count := func(meter string, n int64) {
		counters.Take(ctx, quota.TakeRequest{Subject: "alice", Meter: meter, Period: period,
			Cost: n, Unlimited: true, ExpireAt: period.End.Add(35 * 24 * time.Hour)})
	}
	ents := billing.NewMemoryStore(billing.MemoryOptions{})
	ents.Update(ctx, "alice", func(e *billing.Entitlement) error {
		e.Tier, e.Status, e.CustomerID, e.Period = "ai", billing.StatusActive, "cus_alice", period
		return nil
	})
	r, err := usage.NewReporter(usage.Config{
		Entitlements: ents, Counters: counters, Plans: plans, Stripe: api,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	count("requests", 42)
	count("tokens", 1250)
	r.Flush(ctx, "alice")
	fmt.Println("requests:", fake.MeterTotal("cus_alice", "api_requests"), "tokens:", fake.MeterTotal("cus_alice", "api_tokens"))
	// Output:
	// requests: 42 tokens: 250
}
