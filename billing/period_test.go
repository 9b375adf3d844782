package billing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
)

func utc(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }

func TestProjectPeriod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		p          quota.Period
		now        time.Time
		start, end time.Time
	}{
		{"monthly", quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}, utc(2026, 12, 1, 12),
			utc(2026, 12, 1, 12), utc(2027, 1, 1, 12)},
		{"anchor 15", quota.Period{Start: utc(2026, 1, 15, 9), End: utc(2026, 2, 15, 9)}, utc(2026, 2, 20, 0),
			utc(2026, 2, 15, 9), utc(2026, 3, 15, 9)},
		{"anchor 31 clamped to February", quota.Period{Start: utc(2027, 1, 31, 0), End: utc(2027, 2, 28, 0)}, utc(2027, 3, 1, 0),
			utc(2027, 2, 28, 0), utc(2027, 3, 31, 0)},
		{"anchor 30 from a 30-day month", quota.Period{Start: utc(2026, 4, 30, 0), End: utc(2026, 5, 30, 0)}, utc(2026, 5, 30, 0),
			utc(2026, 5, 30, 0), utc(2026, 6, 30, 0)},
		{"anchor 30 into February", quota.Period{Start: utc(2027, 1, 30, 0), End: utc(2027, 2, 28, 0)}, utc(2027, 3, 1, 0),
			utc(2027, 2, 28, 0), utc(2027, 3, 30, 0)},
		{"yearly on Feb 29", quota.Period{Start: utc(2028, 2, 29, 0), End: utc(2029, 2, 28, 0)}, utc(2029, 3, 1, 0),
			utc(2029, 2, 28, 0), utc(2030, 2, 28, 0)},
		{"weekly", quota.Period{Start: utc(2026, 11, 2, 0), End: utc(2026, 11, 9, 0)}, utc(2026, 11, 9, 1),
			utc(2026, 11, 9, 0), utc(2026, 11, 16, 0)},
		{"trial of 14 days", quota.Period{Start: utc(2026, 11, 1, 8), End: utc(2026, 11, 15, 8)}, utc(2026, 11, 15, 8),
			utc(2026, 11, 15, 8), utc(2026, 11, 29, 8)},
		{"monthly, two renewals late", quota.Period{Start: utc(2026, 10, 1, 0), End: utc(2026, 11, 1, 0)}, utc(2026, 12, 3, 0),
			utc(2026, 12, 1, 0), utc(2027, 1, 1, 0)},
		{"daily, three renewals late", quota.Period{Start: utc(2026, 11, 1, 0), End: utc(2026, 11, 2, 0)}, utc(2026, 11, 5, 7),
			utc(2026, 11, 5, 0), utc(2026, 11, 6, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := projectPeriod(tc.p, tc.now)
			if !got.Start.Equal(tc.start) || !got.End.Equal(tc.end) {
				t.Fatalf("projectPeriod = [%v, %v), want [%v, %v)", got.Start, got.End, tc.start, tc.end)
			}
			if !got.Contains(tc.now) {
				t.Fatalf("projection [%v, %v) does not contain now %v", got.Start, got.End, tc.now)
			}
		})
	}
}

func TestCountingPeriodStatuses(t *testing.T) {
	t.Parallel()
	p := quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}
	late := p.End.Add(time.Hour)
	for st, want := range map[Status]bool{
		StatusActive: true, StatusTrialing: true, StatusPastDue: true,
		StatusCanceled: false, StatusUnpaid: false, StatusPaused: false, StatusIncomplete: false, StatusPending: false,
	} {
		got, projected := countingPeriod(Entitlement{Status: st, Period: p}, late)
		if projected != want || (want && !got.Start.Equal(p.End)) || (!want && got != p) {
			t.Errorf("%s: countingPeriod = %v, %v; want projected %v", st, got, projected, want)
		}
	}
	if got, projected := countingPeriod(Entitlement{Status: StatusActive, Period: p}, p.End.Add(-time.Nanosecond)); projected || got != p {
		t.Errorf("within the period: %v, %v; want the period itself", got, projected)
	}
	if got, projected := countingPeriod(Entitlement{Status: StatusActive}, late); projected || !got.IsZero() {
		t.Errorf("no period: %v, %v; want none", got, projected)
	}
}

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

func lateRenewal(t *testing.T, mode UsageMode, reportBeforeRenewal bool) {
	ctx := context.Background()
	fake := fakestripe.NewServer()
	t.Cleanup(fake.Close)
	// Not calendar-aligned, so that the calendar fallback would miss.
	p1 := quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}
	p2 := quota.Period{Start: p1.End, End: utc(2027, 1, 1, 12)}
	clock := newTestClock(p1.Start.Add(24 * time.Hour))
	e := Entitlement{Subject: "alice", Tier: "pro", Status: StatusActive, CustomerID: "cus_alice", MeteredItemID: "si_alice", Period: p1}
	ents := newReportEnts(e)
	plans, err := NewPlans(Plan{Tier: "pro", PriceID: "price_pro", Included: 1000, Overage: true,
		MeteredPriceID: "price_pro_metered", MeterEventName: "api_requests"})
	if err != nil {
		t.Fatal(err)
	}
	limits, err := NewLimits(LimitsConfig{Store: ents, Plans: plans, TTL: time.Nanosecond, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
	// count does what the quota middleware does for n requests now.
	var counted int64
	count := func(n int64) quota.Period {
		t.Helper()
		lim, err := limits.Limits(ctx, e.Subject)
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
	r, err := NewReporter(withSink(ReporterConfig{
		Entitlements: ents, Counters: counters,
		Watermarks: NewMemoryWatermarkStore(clock.Now), Leases: NewMemoryLeaseStore(clock.Now),
		Meter: testMeterFunc, Logger: quietLogger(), Now: clock.Now, Rate: 1e6, Burst: 100,
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
	if mode == ReportTotals {
		for _, ts := range fake.UsageTimestamps(e.MeteredItemID) {
			if ts != p1.Start.Unix() && ts != p2.Start.Unix() {
				t.Errorf("usage record at %v, not at a period start", time.Unix(ts, 0).UTC())
			}
		}
	}
}
