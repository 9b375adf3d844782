package usage

import (
	"context"
	"github.com/billkit/billkit/billing"
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

// TestReportOverageOnly (Q7): a plan billing overage only reports
// max(0, counted − Included) in both modes; a tier change within the
// period that raises Included never takes back what was reported, one that
// lowers it reports the difference; the previous period is billed with
// the Included of the tier it ended on.
func TestReportOverageOnly(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			env := newReportEnv(t, "alice")
			included := map[string]int64{"basic": 10, "pro": 20, "mini": 5, "big": 1000}
			meter := func(e billing.Entitlement) []meterSpec {
				return []meterSpec{{Name: testMeter, EventName: map[reportMode]string{reportDeltas: "api_requests"}[mode],
					ItemID: e.MeteredItemID, Included: included[e.Tier]}}
			}
			r := env.reporter(t, mode, func(c *Config) { c.meter = meter })
			setTier := func(tier string) {
				if _, _, err := env.ents.Update(ctx, "alice", func(e *billing.Entitlement) error { e.Tier = tier; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			e, _ := env.ents.Get(ctx, "alice")
			step := func(name string, add, want int64) {
				t.Helper()
				take(t, env.counters, "alice", env.period, add)
				env.clock.Add(time.Minute)
				if err := r.ReportAll(ctx); err != nil {
					t.Fatal(err)
				}
				if st := r.Stats(); st.Failed != 0 {
					t.Fatalf("%s: %+v", name, st)
				}
				if got := held(env.fake, mode, e); got != want {
					t.Fatalf("%s: Stripe holds %d, want %d", name, got, want)
				}
			}
			setTier("basic")
			step("within the included units", 4, 0)
			if n := env.fake.Calls(""); n != 0 {
				t.Fatalf("%d Stripe calls for usage within the included units", n)
			}
			step("above them", 10, 4)  // 14 counted, 10 included
			step("more overage", 3, 7) // 17
			setTier("pro")             // 20 included: 0 billable
			step("included raised", 0, 7)
			step("still below the reported", 8, 7) // 25: 5 billable
			step("past it again", 4, 9)            // 29: 9 billable
			setTier("mini")                        // 5 included: 24 billable
			step("included lowered", 0, 24)

			// The period ends on "mini"; the subscription renews on "big".
			// The closed period's late units are billed with mini's 5.
			next := quota.Period{Start: env.period.End, End: env.period.End.AddDate(0, 1, 0)}
			env.clock.Set(env.period.End.Add(time.Second))
			if _, _, err := env.ents.Update(ctx, "alice", func(e *billing.Entitlement) error {
				e.PreviousPeriod, e.PreviousTier, e.Period, e.Tier = e.Period, e.Tier, next, "big"
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			step("late units of the closed period", 6, 30)
			take(t, env.counters, "alice", next, 1001)
			step("new period on the new tier", 0, 31)
		})
	}
}
