package billkitotel_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/usage"
	"github.com/billkit/billkit/quota"
)

// TestUsageReports runs a real reporter against a Stripe that fails, then
// rate limits, then accepts its meter events.
func TestUsageReports(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	var answer atomic.Int64 // the status of the fake's answers
	answer.Store(400)
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/billing/meter_events" {
			writeJSON(w, 404, stripeError("invalid_request_error", "Unrecognized request URL"))
			return
		}
		switch status := int(answer.Load()); status {
		case 200:
			writeJSON(w, 200, map[string]any{"object": "billing.meter_event", "event_name": "api_requests",
				"identifier": r.FormValue("identifier")})
		case 429:
			writeJSON(w, 429, stripeError("invalid_request_error", "Too many requests hit the API too quickly."))
		default:
			writeJSON(w, status, stripeError("invalid_request_error", "Invalid payload value."))
		}
	})
	plans, err := billing.NewPlans(billing.Plan{
		Tier: "pro", PriceID: "price_pro", Included: 1000, Overage: true, MeterEventName: "api_requests",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	period := quota.CalendarPeriod(quota.Month, time.Now())
	counters := quota.NewMemoryStore(quota.MemoryOptions{})
	ents := billing.NewMemoryStore(billing.MemoryOptions{})
	for subject, customer := range map[string]string{subject: "cus_secret_1", "acct_secret_43": ""} {
		counters.Take(ctx, quota.TakeRequest{Subject: subject, Meter: quota.DefaultMeter, Period: period,
			Cost: 42, Unlimited: true, ExpireAt: period.End.Add(quota.DefaultRetention)})
		ents.Update(ctx, subject, func(e *billing.Entitlement) error {
			// Without a customer, acct_secret_43's usage cannot be billed.
			e.Tier, e.Status, e.CustomerID, e.Period = "pro", billing.StatusActive, customer, period
			return nil
		})
	}
	r, err := usage.NewReporter(usage.Config{
		Entitlements: ents, Counters: counters, Plans: plans, Stripe: fake.client(tm),
		Rate: 1000, Burst: 10, RateLimitPause: time.Millisecond,
		Observer: tm.Usage(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}

	// A pass whose report fails: one subject pending, one unbillable.
	r.ReportAll(ctx)
	wantGauges := func(pending, unbillable int64) {
		t.Helper()
		if got := tm.gauges(t, "billkit.usage.pending_subjects"); got[""] != pending || len(got) != 1 {
			t.Errorf("pending_subjects %v, want %d", got, pending)
		}
		if got := tm.gauges(t, "billkit.usage.unbillable_subjects"); got[""] != unbillable || len(got) != 1 {
			t.Errorf("unbillable_subjects %v, want %d", got, unbillable)
		}
	}
	wantGauges(1, 1)

	// Rate limited: sent three times (two retried, the third given up as
	// failed), then left for later.
	answer.Store(429)
	if err := r.Flush(ctx, subject); err == nil {
		t.Error("Flush against a rate-limiting Stripe succeeded")
	}
	// Accepted.
	answer.Store(200)
	if err := r.Flush(ctx, subject); err != nil {
		t.Fatal(err)
	}
	r.ReportAll(ctx)
	wantGauges(0, 1)

	checkSums(t, tm, "billkit.usage.reports", map[string]int64{
		"billkit.meter=requests,billkit.outcome=failed,billkit.plan=pro,billkit.sink=meter_events":       2,
		"billkit.meter=requests,billkit.outcome=rate_limited,billkit.plan=pro,billkit.sink=meter_events": 2,
		"billkit.meter=requests,billkit.outcome=reported,billkit.plan=pro,billkit.sink=meter_events":     1,
	})
	checkSums(t, tm, "billkit.usage.reported_units", map[string]int64{
		"billkit.meter=requests,billkit.plan=pro,billkit.sink=meter_events": 42,
	})
	// Two failed attempts (the first pass's, the third 429) carried the
	// same 42 units.
	checkSums(t, tm, "billkit.usage.failed_units", map[string]int64{
		"billkit.meter=requests,billkit.plan=pro,billkit.sink=meter_events": 84,
	})
	checkCounts(t, tm, "billkit.usage.report.duration", map[string]uint64{
		"billkit.outcome=failed,billkit.sink=meter_events":       2,
		"billkit.outcome=rate_limited,billkit.sink=meter_events": 2,
		"billkit.outcome=reported,billkit.sink=meter_events":     1,
	})
	checkSums(t, tm, "billkit.stripe.requests", map[string]int64{
		"error.type=400,http.request.method=POST,http.response.status_code=400,url.template=/v1/billing/meter_events": 1,
		"error.type=429,http.request.method=POST,http.response.status_code=429,url.template=/v1/billing/meter_events": 3,
		"http.request.method=POST,http.response.status_code=200,url.template=/v1/billing/meter_events":                1,
	})
	tm.assertNowhere(t, true, "acct_secret", "cus_secret")
}
