package usage

import (
	"context"
	"errors"
	"github.com/billkit/billkit/billing"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// TestReporterAgainstStripeMock reports through each sink to the
// stripe-mock version that has its endpoint: stripe-mock validates every
// parameter against Stripe's OpenAPI spec, so a passing report is a
// request Stripe's API accepts. stripe-mock keeps no state (it neither
// overwrites nor deduplicates); the semantics are covered by the fake.
func TestReporterAgainstStripeMock(t *testing.T) {
	t.Parallel()
	cases := []struct {
		mode    reportMode
		version string
	}{
		{reportTotals, testserver.StripeMockUsageRecords},
		{reportDeltas, testserver.StripeMockMeterEvents},
	}
	for _, c := range cases {
		t.Run(c.mode.String(), func(t *testing.T) {
			t.Parallel()
			mock := testserver.StartStripeMock(t, c.version)
			ctx := context.Background()
			clock := newTestClock(time.Now().UTC())
			p := quota.CalendarPeriod(quota.Month, clock.Now())
			counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
			e := billing.Entitlement{Subject: "alice", Tier: "pro", Status: billing.StatusActive,
				CustomerID: "cus_123", MeteredItemID: "si_123", Period: p}
			take(t, counters, "alice", p, 42)
			r, err := NewReporter(withSink(Config{
				Entitlements: newReportEnts(e), Counters: counters,
				watermarks: newMemoryWatermarks(clock.Now), leases: newMemoryLeases(clock.Now),
				meter: testMeterFunc, Logger: quietLogger(), Now: clock.Now,
			}, newSink(t, c.mode, mock.URL)))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(ctx, "alice"); err != nil {
				t.Fatalf("Flush against stripe-mock %s: %v", c.version, err)
			}
			take(t, counters, "alice", p, 8)
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			if st := r.Stats(); st.Reported != 1 || st.Failed != 0 || st.Reports != 2 {
				t.Fatalf("stats = %+v; want 2 reports acknowledged, none failed", st)
			}
		})
	}
}

// TestSinksRejectedByStripeMock checks that a request stripe-mock rejects
// surfaces as an error (it is never mistaken for an acknowledgement).
func TestSinksRejectedByStripeMock(t *testing.T) {
	t.Parallel()
	mock := testserver.StartStripeMock(t, testserver.StripeMockMeterEvents)
	ctx := context.Background()
	p := quota.CalendarPeriod(quota.Month, time.Now())
	// v0.203.0 has no usage records endpoint: the answer is a 404.
	err := newSink(t, reportTotals, mock.URL).Report(ctx, usageReport{
		SubscriptionItemID: "si_123", Period: p, To: 3, Identifier: "k1", Timestamp: p.Start})
	if err == nil || isDuplicateMeterEvent(err) {
		t.Fatalf("usage record on a server without the endpoint = %v; want an error", err)
	}
	// Missing fields never reach Stripe.
	err = newSink(t, reportDeltas, mock.URL).Report(ctx, usageReport{
		CustomerID: "cus_1", Period: p, From: 0, To: 3, Identifier: "k2", Timestamp: p.Start})
	if !errors.Is(err, errReportInvalid) {
		t.Fatalf("meter event without event name = %v; want errReportInvalid", err)
	}
}
