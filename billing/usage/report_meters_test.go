package usage

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// meterPlans is a catalog of a plan of two meters billed as meter events,
// the same with legacy metered prices, and a one-meter plan.
func meterPlans(t testing.TB) *billing.Plans {
	return mustPlans(t,
		billing.Plan{Tier: "ai", PriceID: "price_ai", Meters: []billing.Meter{
			{Name: "requests", Included: 100, Overage: true, MeterEventName: "api_requests"},
			{Name: "tokens", Included: 1000, Overage: true, OverageOnly: true, MeterEventName: "api_tokens", MeteredPriceID: "price_ai_tokens"},
		}},
		billing.Plan{Tier: "ai-legacy", PriceID: "price_ail", Meters: []billing.Meter{
			{Name: "requests", Included: 100, Overage: true, MeteredPriceID: "price_ail_requests"},
			{Name: "tokens", Included: 1000, Overage: true, MeteredPriceID: "price_ail_tokens"},
		}},
		billing.Plan{Tier: "basic", PriceID: "price_basic", Included: 100, Overage: true, MeterEventName: "api_requests"},
	)
}

// TestPlanMeters: every meter of the subject's plan with a meter event
// name or a metered price is reported, each to its own subscription item;
// an entitlement stored before MeteredItems existed reports the plan's
// first metered price to MeteredItemID and nothing else to it.
func TestPlanMeters(t *testing.T) {
	t.Parallel()
	meters := planMeters(meterPlans(t))
	got := meters(billing.Entitlement{Tier: "ai"})
	want := []meterSpec{{Name: "requests", EventName: "api_requests"}, {Name: "tokens", EventName: "api_tokens", Included: 1000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ai meters = %+v, want %+v", got, want)
	}
	got = meters(billing.Entitlement{Tier: "ai-legacy", MeteredItemID: "si_r",
		MeteredItems: map[string]string{"price_ail_requests": "si_r", "price_ail_tokens": "si_t"}})
	want = []meterSpec{{Name: "requests", PriceID: "price_ail_requests", ItemID: "si_r"}, {Name: "tokens", PriceID: "price_ail_tokens", ItemID: "si_t"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ai-legacy meters = %+v, want %+v", got, want)
	}
	got = meters(billing.Entitlement{Tier: "ai-legacy", MeteredItemID: "si_old"})
	want = []meterSpec{{Name: "requests", PriceID: "price_ail_requests", ItemID: "si_old"}, {Name: "tokens", PriceID: "price_ail_tokens"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ai-legacy meters of an entitlement without MeteredItems = %+v, want %+v", got, want)
	}
	if got := meters(billing.Entitlement{Tier: "gold"}); got != nil {
		t.Fatalf("unknown tier's meters = %+v", got)
	}
}

// TestReportTwoMetersAgainstStripeMock: the two meters of one subject's
// plan reach stripe-mock, which validates every request against Stripe's
// OpenAPI spec: as meter events under their own event names (v0.203.0)
// and as usage records to their own subscription items (v0.162.0).
func TestReportTwoMetersAgainstStripeMock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, version string
		e             billing.Entitlement
	}{
		{"meter-events", testserver.StripeMockMeterEvents, billing.Entitlement{Tier: "ai"}},
		{"usage-records", testserver.StripeMockUsageRecords, billing.Entitlement{Tier: "ai-legacy",
			MeteredItems: map[string]string{"price_ail_requests": "si_123", "price_ail_tokens": "si_456"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mock := testserver.StartStripeMock(t, tc.version)
			ctx := context.Background()
			clock := newTestClock(time.Now().UTC())
			p := quota.CalendarPeriod(quota.Month, clock.Now())
			counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
			e := tc.e
			e.Subject, e.Status, e.CustomerID, e.Period = "alice", billing.StatusActive, "cus_123", p
			take(t, counters, "alice", p, 142)
			takeMeter(t, counters, "alice", "tokens", p, 1500)
			r, err := NewReporter(Config{
				Entitlements: newReportEnts(e), Counters: counters, Stripe: stripeAPI(mock.URL, 0), Plans: meterPlans(t),
				Logger: quietLogger(), Now: clock.Now, Rate: 1e6, Burst: 100,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(ctx, "alice"); err != nil {
				t.Fatalf("Flush against stripe-mock %s: %v", tc.version, err)
			}
			if st := r.Stats(); st.Reports != 2 || st.Failures != 0 {
				t.Fatalf("stats = %+v; want one report per meter", st)
			}
			take(t, counters, "alice", p, 1)
			takeMeter(t, counters, "alice", "tokens", p, 1)
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			if st := r.Stats(); st.Reported != 1 || st.Failed != 0 || st.Reports != 4 {
				t.Fatalf("stats = %+v; want 4 reports acknowledged, none failed", st)
			}
		})
	}
}

// TestReportMetersAcrossTierChange: after a downgrade from a plan of two
// meters to a plan of one, the previous period's tokens are still billed
// with the tier that period ended on, the current period's are not (its
// plan has no tokens meter), and each meter reaches its own Stripe meter.
func TestReportMetersAcrossTierChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := fakestripe.NewServer()
	t.Cleanup(fake.Close)
	clock := newTestClock(time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC))
	prev := quota.Period{Start: time.Date(2026, 11, 3, 7, 0, 0, 0, time.UTC), End: time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)}
	cur := quota.Period{Start: prev.End, End: prev.End.AddDate(0, 1, 0)}
	e := billing.Entitlement{Subject: "alice", Tier: "basic", Status: billing.StatusActive, CustomerID: "cus_alice",
		Period: cur, PreviousPeriod: prev, PreviousTier: "ai"}
	counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
	take(t, counters, "alice", prev, 150)
	takeMeter(t, counters, "alice", "tokens", prev, 1700)
	take(t, counters, "alice", cur, 30)
	takeMeter(t, counters, "alice", "tokens", cur, 99)
	r, err := NewReporter(Config{
		Entitlements: newReportEnts(e), Counters: counters, Stripe: stripeAPI(fake.URL, 0), Plans: meterPlans(t),
		Logger: quietLogger(), Now: clock.Now, Rate: 1e6, Burst: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second pass finds nothing new
		if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.Stats(); st.Failed != 0 || st.Unbillable != 0 || st.Reports != 3 {
		t.Fatalf("stats = %+v; want 3 reports (requests of both periods, tokens of the previous)", st)
	}
	if got := fake.MeterTotal("cus_alice", "api_requests"); got != 180 {
		t.Errorf("requests billed %d, want 150 + 30", got)
	}
	if got := fake.MeterTotal("cus_alice", "api_tokens"); got != 700 {
		t.Errorf("tokens billed %d, want the previous period's 1700 less ai's 1000 included", got)
	}
}
