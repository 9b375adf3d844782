package billing_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/billing/usage"
	"github.com/billkit/billkit/quota"
)

// TestReportInEveryShape (V1, V4): units counted under an entitlement
// built from events of any API version's shape reach Stripe exactly, as
// meter events timestamped within the subscription's billing period (not
// the calendar month, which is what a period misread as zero would count).
func TestReportInEveryShape(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		ctx := context.Background()
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		start := t0.AddDate(0, 0, 14) // mid-month: no calendar period
		period := quota.Period{Start: start, End: start.AddDate(0, 1, 0)}
		h.deliver(
			sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), start),
			sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active", Metered: true, Start: period.Start, End: period.End}), start.Add(time.Second)),
			sh.event("evt_paid", evPaid, sh.inv(inv{FinalizedAt: start}), start.Add(2*time.Second)),
		)
		h.clock.Set(start.Add(36 * time.Hour))
		lim, err := h.limits.Limits(ctx, "alice", quota.DefaultMeter)
		if err != nil {
			t.Fatal(err)
		}
		if lim.Period != period {
			t.Fatalf("quota counts over %v, want the subscription's period %v", lim.Period, period)
		}
		counters := quota.NewMemoryStore(quota.MemoryOptions{Now: h.clock.Now})
		const n = 37
		if _, err := counters.Take(ctx, quota.TakeRequest{Subject: "alice", Meter: quota.DefaultMeter,
			Period: lim.PeriodAt(h.clock.Now()), Cost: n, Limit: lim.Limit(), Unlimited: lim.Unlimited(), ExpireAt: period.End.Add(quota.DefaultRetention)}); err != nil {
			t.Fatal(err)
		}

		fake := fakestripe.NewServer()
		t.Cleanup(fake.Close)
		api := client.New("sk_test_billkit", &stripe.Backends{API: stripe.GetBackendWithConfig(stripe.APIBackend,
			&stripe.BackendConfig{URL: stripe.String(fake.URL), LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}})})
		r, err := usage.NewReporter(usage.Config{
			Entitlements: h.store, Counters: counters, Plans: h.plans, Stripe: api,
			Now: h.clock.Now, Logger: quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := r.Flush(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		if st := r.Stats(); st.Failures != 0 || st.Reports != 1 {
			t.Fatalf("stats = %+v, want one report, no failure", st)
		}
		if got := fake.MeterTotal("cus_1", "api_requests"); got != n {
			t.Fatalf("Stripe holds %d, want %d", got, n)
		}
		for _, ev := range fake.Events() {
			if ts := time.Unix(ev.Timestamp, 0); !period.Contains(ts) {
				t.Errorf("meter event at %v, outside the billing period %v", ts, period)
			}
		}
	})
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
