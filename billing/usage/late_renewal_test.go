package usage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
)

// TestLateRenewalLosesNothing (B3): the renewal's webhook arrives hours
// after the period ended. The units the quota middleware counted meanwhile
// (with billing's limits) are reported once the renewal is applied, in both
// reporting modes, whether or not a report ran before it; none is billed
// twice.
func TestLateRenewalLosesNothing(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		for _, early := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/report-before-renewal=%v", mode, early), func(t *testing.T) {
				t.Parallel()
				lateRenewal(t, mode, early)
			})
		}
	}
}

func lateRenewal(t *testing.T, mode reportMode, reportBeforeRenewal bool) {
	ctx := context.Background()
	fake := fakestripe.NewServer()
	t.Cleanup(fake.Close)
	// Not calendar-aligned, so that the calendar fallback would miss.
	p1 := quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}
	p2 := quota.Period{Start: p1.End, End: utc(2027, 1, 1, 12)}
	clock := newTestClock(p1.Start.Add(24 * time.Hour))
	e := billing.Entitlement{Subject: "alice", Tier: "pro", Status: billing.StatusActive, CustomerID: "cus_alice", MeteredItemID: "si_alice", Period: p1}
	ents := newReportEnts(e)
	plans, err := billing.NewPlans(billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 1000, Overage: true,
		MeteredPriceID: "price_pro_metered", MeterEventName: "api_requests"})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := billing.NewLifecycle(billing.Config{Store: ents, Plans: plans, LimitsTTL: time.Nanosecond, Now: clock.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	limits := lc.Limits()
	counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
	// count does what the quota middleware does for n requests now.
	var counted int64
	count := func(n int64) quota.Period {
		t.Helper()
		lim, err := limits.Limits(ctx, e.Subject, quota.DefaultMeter)
		if err != nil {
			t.Fatal(err)
		}
		now := clock.Now()
		p := lim.PeriodAt(now)
		if _, err := counters.Take(ctx, quota.TakeRequest{Subject: e.Subject, Meter: testMeter, Period: p,
			Cost: n, Limit: lim.Limit(), Unlimited: lim.Unlimited(), ExpireAt: p.End.Add(quota.DefaultRetention)}); err != nil {
			t.Fatal(err)
		}
		counted += n
		return p
	}
	r, err := NewReporter(withSink(Config{
		Entitlements: ents, Counters: counters,
		watermarks: newMemoryWatermarks(clock.Now), leases: newMemoryLeases(clock.Now),
		meter: testMeterFunc, Logger: quietLogger(), Now: clock.Now, Rate: 1e6, Burst: 100,
	}, newSink(t, mode, fake.URL)))
	if err != nil {
		t.Fatal(err)
	}
	pass := func() {
		t.Helper()
		if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Failed != 0 {
			t.Fatalf("report failed: %+v", st)
		}
	}

	count(7)
	pass()
	// The period ends; Stripe renews, but its event is late.
	clock.Set(p1.End.Add(2 * time.Hour))
	if got := count(5); !got.Start.Equal(p1.End) {
		t.Fatalf("units after the period's end counted in [%v, %v), want the period starting at %v", got.Start, got.End, p1.End)
	}
	if reportBeforeRenewal {
		pass()
		if got := held(fake, mode, e); got != counted {
			t.Fatalf("before the renewal: Stripe holds %d units, counted %d", got, counted)
		}
	}
	clock.Add(time.Hour)
	count(3)
	// The renewal arrives.
	ents.renew(e.Subject, p2)
	clock.Add(time.Hour)
	count(2)
	pass()
	clock.Set(p2.Start.Add(48 * time.Hour))
	pass()
	if got := held(fake, mode, e); got != counted {
		t.Fatalf("Stripe holds %d units, counted %d", got, counted)
	}
	if mode == reportTotals {
		for _, ts := range fake.UsageTimestamps(e.MeteredItemID) {
			if ts != p1.Start.Unix() && ts != p2.Start.Unix() {
				t.Errorf("usage record at %v, not at a period start", time.Unix(ts, 0).UTC())
			}
		}
	}
}

func utc(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }
