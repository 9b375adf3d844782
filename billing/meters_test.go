package billing_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// meteredPlans is a catalog with a plan of two meters (requests and
// tokens) and features, and a one-meter plan.
func meteredPlans(t testing.TB) *billing.Plans {
	t.Helper()
	p, err := billing.NewPlans(
		billing.Plan{Tier: "basic", PriceID: "price_basic", Included: 100, Features: []string{"export"}},
		billing.Plan{Tier: "pro", PriceID: "price_pro", Features: []string{"export", "sso"}, Meters: []billing.Meter{
			{Name: "requests", Included: 1000, Hard: 2000, Overage: true, MeteredPriceID: "price_pro_metered"},
			{Name: "tokens", Included: 50, Hard: 80, Overage: true, MeteredPriceID: "price_tokens", MeterEventName: "api_tokens"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLimitsPerMeter: each meter of the plan an entitlement grants has its
// own limits, past_due included (the grace tier's meters); the provisional
// allowance is of requests only; a meter the plan lacks allows nothing;
// no plan is no plan for every meter.
func TestLimitsPerMeter(t *testing.T) {
	t.Parallel()
	lc, err := billing.NewLifecycle(billing.Config{Store: billing.NewMemoryStore(billing.MemoryOptions{}),
		Plans: meteredPlans(t), Now: newClock(t0).Now})
	if err != nil {
		t.Fatal(err)
	}
	l := lc.Limits()
	period := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	grace := t0.Add(time.Hour)
	active := billing.Entitlement{Status: billing.StatusActive, Tier: "pro", Period: period}
	for _, tc := range []struct {
		name  string
		e     billing.Entitlement
		meter string
		plan  string // "" for ErrNoPlan
		limit int64  // Limit(); -1 for unlimited
	}{
		{"active requests", active, "requests", "pro", 2000},
		{"active default meter", active, "", "pro", 2000},
		{"active tokens", active, "tokens", "pro", 80},
		{"active meter not in plan", active, "bytes", "pro", 0},
		{"pending requests", billing.Entitlement{Status: billing.StatusPending, Tier: "pro"}, "requests", "provisional", 100},
		{"pending tokens", billing.Entitlement{Status: billing.StatusPending, Tier: "pro"}, "tokens", "provisional", 0},
		{"grace keeps tokens", billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceUntil: grace, Period: period}, "tokens", "pro", 80},
		{"grace tier's requests", billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceTier: "basic", GraceUntil: grace}, "requests", "basic", 100},
		{"grace tier has no tokens", billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceTier: "basic", GraceUntil: grace}, "tokens", "basic", 0},
		{"grace over", billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceUntil: t0}, "tokens", "", 0},
		{"canceled", billing.Entitlement{Status: billing.StatusCanceled, Tier: "pro"}, "tokens", "", 0},
		{"one-meter plan's tokens", billing.Entitlement{Status: billing.StatusActive, Tier: "basic"}, "tokens", "basic", 0},
	} {
		got, err := l.ForMeter(tc.e, t0, tc.meter)
		limit := got.Limit()
		if got.Unlimited() {
			limit = -1
		}
		switch {
		case tc.plan == "" && !errors.Is(err, quota.ErrNoPlan):
			t.Errorf("%s: %+v, %v; want ErrNoPlan", tc.name, got, err)
		case tc.plan != "" && (err != nil || got.Plan != tc.plan || limit != tc.limit):
			t.Errorf("%s: %+v, %v; want plan %s with limit %d", tc.name, got, err, tc.plan, tc.limit)
		}
	}
	if got, _ := l.ForMeter(active, t0, "tokens"); got.Period != period || got.Included != 50 {
		t.Errorf("tokens limits = %+v; want the subscription's period and 50 included", got)
	}
}

// TestQuotaMetersTokens: the quota middleware metering "tokens" from the
// lifecycle's limits cache enforces the tokens meter's hard limit, and a
// subject whose plan lacks the meter gets nothing of it.
func TestQuotaMetersTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	clk := newClock(t0.Add(time.Hour))
	lc, err := billing.NewLifecycle(billing.Config{Store: store, Plans: meteredPlans(t), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	period := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	for subject, tier := range map[string]string{"alice": "pro", "bob": "basic"} {
		if _, _, err := store.Update(ctx, subject, func(e *billing.Entitlement) error {
			e.Status, e.Tier, e.Period = billing.StatusActive, tier, period
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	mw, err := quota.New(quota.Config{
		Subject: func(r *http.Request) (string, error) { return r.Header.Get("X-Subject"), nil },
		Limits:  lc.Limits(), Store: quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now}),
		Meter: "tokens", Cost: func(*http.Request) (int64, error) { return 30, nil }, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	call := func(subject string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/complete", nil)
		req.Header.Set("X-Subject", subject)
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	// Hard limit 80: two requests of 30 tokens fit, the third does not.
	for i, want := range []int{200, 200, 402} {
		if got := call("alice"); got != want {
			t.Fatalf("alice's request %d: %d, want %d", i, got, want)
		}
	}
	if got := call("bob"); got != http.StatusPaymentRequired {
		t.Fatalf("bob's plan has no tokens meter: %d, want 402", got)
	}
}

// TestSnapshotMeteredItems: the entitlement keeps the subscription item of
// every meter's metered price, and MeteredItemID is the plan's first one.
func TestSnapshotMeteredItems(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) { c.Plans = meteredPlans(t) })
		h.deliver(sh.event("evt_1", evUpdated, sh.sub(sub{Status: "active", Metered: true, MoreMetered: []string{"price_tokens"}}), sec(1)))
		e := h.get("alice")
		want := map[string]string{"price_pro_metered": "si_metered", "price_tokens": "si_price_tokens"}
		if e.Tier != "pro" || e.MeteredItemID != "si_metered" || !reflect.DeepEqual(e.MeteredItems, want) {
			t.Fatalf("entitlement %s, item %q, items %v; want pro, si_metered, %v", e.Tier, e.MeteredItemID, e.MeteredItems, want)
		}
		// The tokens item alone: MeteredItemID is still the requests
		// meter's (none), the map has tokens.
		h.deliver(sh.event("evt_2", evUpdated, sh.sub(sub{Status: "active", MoreMetered: []string{"price_tokens"}}), sec(2)))
		e = h.get("alice")
		if e.MeteredItemID != "" || !reflect.DeepEqual(e.MeteredItems, map[string]string{"price_tokens": "si_price_tokens"}) {
			t.Fatalf("without the requests item: item %q, items %v", e.MeteredItemID, e.MeteredItems)
		}
	})
}
