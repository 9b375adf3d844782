package billing_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
)

func TestPlansFromEnv(t *testing.T) {
	t.Parallel()
	plans, err := billing.PlansFromEnv([]string{
		"HOME=/root",
		"PRICE_PRO=price_pro", "PRICE_PRO_METERED=price_pro_m",
		"PLAN_PRO_INCLUDED=10000", "PLAN_PRO_SOFT=8000", "PLAN_PRO_HARD=20000", "PLAN_PRO_OVERAGE=true",
		"PLAN_PRO_METER_EVENT=api_requests", "PLAN_PRO_BILL=Overage",
		"PRICE_STARTER=price_starter", "PLAN_STARTER_INCLUDED=100", "PLAN_STARTER_INTERVAL=day",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(plans.Tiers(), ","); got != "pro,starter" {
		t.Fatalf("tiers = %s, want pro,starter", got)
	}
	want := billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 10000, Soft: 8000, Hard: 20000, Overage: true,
		MeteredPriceID: "price_pro_m", MeterEventName: "api_requests", OverageOnly: true}
	if got, ok := plans.ByTier("pro"); !ok || got != want {
		t.Fatalf("ByTier(pro) = %+v, want %+v", got, want)
	}
	if got, ok := plans.ByTier("starter"); !ok || got.PriceID != "price_starter" || got.Interval != quota.Day {
		t.Fatalf("ByTier(starter) = %+v", got)
	}
	// The same prices are checkout's catalog.
	if got, ok := plans.Tier("pro"); !ok || got != (checkout.Tier{Name: "pro", PriceID: "price_pro", MeteredPriceID: "price_pro_m"}) {
		t.Fatalf("Tier(pro) = %+v, %v", got, ok)
	}
	if _, ok := plans.Tier("gold"); ok {
		t.Fatal("Tier found an unknown tier")
	}
}

// TestPlanErrorsNameTheField: every invalid configuration is rejected with
// an error wrapping ErrInvalidPlan that names the offending field in the
// vocabulary of its source.
func TestPlanErrorsNameTheField(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func() error {
		return func() error { _, err := billing.PlansFromEnv(kv); return err }
	}
	js := func(doc string) func() error {
		return func() error { _, err := billing.PlansFromJSON([]byte(doc)); return err }
	}
	code := func(p ...billing.Plan) func() error {
		return func() error { _, err := billing.NewPlans(p...); return err }
	}
	for _, tc := range []struct {
		name  string
		load  func() error
		field string
	}{
		{"env not an integer", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=lots"), "PLAN_PRO_INCLUDED"},
		{"env bad bool", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=1", "PLAN_PRO_OVERAGE=maybe"), "PLAN_PRO_OVERAGE"},
		{"env no units", env("PRICE_PRO=price_1"), "PLAN_PRO_INCLUDED"},
		{"env hard below included", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_HARD=5"), "PLAN_PRO_HARD"},
		{"env overage without meter", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_OVERAGE=true"), "PRICE_PRO_METERED"},
		{"env typo", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_INCLUDE=10"), "PLAN_PRO_INCLUDE"},
		{"env bad interval", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_INTERVAL=week"), "PLAN_PRO_INTERVAL"},
		{"env metered without tier", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PRICE_GOLD_METERED=price_2"), "PRICE_GOLD_METERED"},
		{"env empty price", env("PRICE_PRO=", "PLAN_PRO_INCLUDED=10"), "PRICE_PRO"},
		{"env hard without included or overage", env("PRICE_PRO=price_1", "PLAN_PRO_HARD=100"), "PLAN_PRO_INCLUDED"},
		{"json hard without included or overage", js(`{"plans":[{"tier":"pro","price_id":"p","hard":100}]}`), "plans[0].included"},
		{"code hard without included or overage", code(billing.Plan{Tier: "pro", PriceID: "a", Hard: 100}), "plans[0].Included"},
		{"env bad bill", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_BILL=some"), "PLAN_PRO_BILL"},
		{"env overage bill without overage", env("PRICE_PRO=price_1", "PRICE_PRO_METERED=price_2", "PLAN_PRO_INCLUDED=10", "PLAN_PRO_BILL=overage"), "PLAN_PRO_BILL"},
		{"json bad bill", js(`{"plans":[{"tier":"pro","price_id":"p","included":1,"bill":"excess"}]}`), "plans[0].bill"},
		{"code overage only without overage", code(billing.Plan{Tier: "pro", PriceID: "a", Included: 1, OverageOnly: true}), "plans[0].OverageOnly"},
		{"json unknown key", js(`{"plans":[{"tier":"pro","price_id":"p","included":1,"hrad":3}]}`), "hrad"},
		{"json negative soft", js(`{"plans":[{"tier":"pro","price_id":"p","included":1,"soft":-1}]}`), "plans[0].soft"},
		{"json soft above hard", js(`{"plans":[{"tier":"pro","price_id":"p","included":10,"soft":11}]}`), "plans[0].soft"},
		{"json bad tier", js(`{"plans":[{"tier":"Pro Plan","price_id":"p","included":1}]}`), "plans[0].tier"},
		{"json duplicate price", js(`{"plans":[{"tier":"a","price_id":"p","included":1},{"tier":"b","price_id":"p","included":1}]}`), "plans[1].price_id"},
		{"json no plans", js(`{"plans":[]}`), "no plans"},
		{"code missing price", code(billing.Plan{Tier: "pro", Included: 1}), "plans[0].PriceID"},
		{"code duplicate tier", code(billing.Plan{Tier: "pro", PriceID: "a", Included: 1}, billing.Plan{Tier: "pro", PriceID: "b", Included: 1}), "plans[1].Tier"},
		{"code metered equals licensed", code(billing.Plan{Tier: "pro", PriceID: "a", Included: 1, MeteredPriceID: "a"}), "plans[0].MeteredPriceID"},
	} {
		err := tc.load()
		if !errors.Is(err, billing.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v, want ErrInvalidPlan naming %s", tc.name, err, tc.field)
		}
	}
}

func TestPlansFromJSON(t *testing.T) {
	t.Parallel()
	doc := `{"plans":[{"tier":"pro","price_id":"price_pro","included":10000,"hard":12000,"overage":true,"meter_event_name":"api_requests","interval":"month","bill":"overage"}]}`
	plans, err := billing.PlansFromJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := plans.ByTier("pro")
	if got := p.Limits(quota.Period{}); got.Limit() != 12000 || got.Included != 10000 || got.Plan != "pro" {
		t.Fatalf("limits = %+v", got)
	}
	if !p.OverageOnly {
		t.Fatal("bill: overage not read")
	}
	if p.MeterEventName != "api_requests" || p.Included != 10000 {
		t.Fatalf("plan = %+v; want api_requests with 10000 included", p)
	}
}

// TestPlanEffectiveLimit: a plan is valid when its effective limit allows
// some units (or it is uncapped), and rejected when it allows none.
func TestPlanEffectiveLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		plan  billing.Plan
		valid bool
	}{
		{billing.Plan{Included: 100}, true},
		{billing.Plan{Included: 100, Hard: 100}, true},
		{billing.Plan{Hard: 100, Overage: true, MeterEventName: "api_requests"}, true}, // all overage, capped
		{billing.Plan{Overage: true, MeterEventName: "api_requests"}, true},            // all overage, uncapped
		{billing.Plan{Hard: 100}, false},
		{billing.Plan{}, false},
	} {
		tc.plan.Tier, tc.plan.PriceID = "pro", "price_pro"
		_, err := billing.NewPlans(tc.plan)
		lim := tc.plan.Limits(quota.Period{})
		if allows := lim.Limit() > 0 || lim.Unlimited(); allows != tc.valid {
			t.Fatalf("%+v: quota allows units = %v, test expects %v", tc.plan, allows, tc.valid)
		}
		if (err == nil) != tc.valid {
			t.Errorf("%+v: err = %v, want valid %v", tc.plan, err, tc.valid)
		}
	}
}
