package billing_test

import (
	"errors"
	"reflect"
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
	if got, ok := plans.ByTier("pro"); !ok || !reflect.DeepEqual(got, want) {
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
		// Several meters.
		{"env meter not an integer", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=many"), "PLAN_PRO_TOKENS_INCLUDED"},
		{"env meter hard below included", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=10", "PLAN_PRO_TOKENS_HARD=5"), "PLAN_PRO_TOKENS_HARD"},
		{"env meter no units", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_SOFT=5"), "PLAN_PRO_TOKENS_INCLUDED"},
		{"env meter overage without billing", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_OVERAGE=true"), "PLAN_PRO_TOKENS_METERED_PRICE"},
		{"env meter bad bill", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_BILL=half"), "PLAN_PRO_TOKENS_BILL"},
		{"env meter empty price", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_METERED_PRICE= "), "PLAN_PRO_TOKENS_METERED_PRICE"},
		{"env meter interval", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=1", "PLAN_PRO_TOKENS_INTERVAL=day"), "PLAN_PRO_TOKENS_INTERVAL"},
		{"env requests meter by name", env("PRICE_PRO=price_1", "PLAN_PRO_REQUESTS_INCLUDED=1"), "PLAN_PRO_REQUESTS_INCLUDED"},
		{"env meter of two tiers", env("PRICE_PRO=price_1", "PRICE_PRO_TOKENS=price_2", "PLAN_PRO_TOKENS_INCLUDED=1"), "PLAN_PRO_TOKENS_INCLUDED"},
		{"env meter metered equals licensed", env("PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_METERED_PRICE=price_1"), "PLAN_PRO_TOKENS_METERED_PRICE"},
		{"env meter bad name", env("PRICE_PRO=price_1", "PLAN_PRO_9TOKENS_INCLUDED=1"), "PLAN_PRO_9TOKENS_*"},
		{"env bad feature", env("PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=1", "PLAN_PRO_FEATURES=sso,single sign-on"), "PLAN_PRO_FEATURES"},
		{"json meter negative", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"tokens","included":-1}]}]}`), "plans[0].meters[0].included"},
		{"json meter duplicate name", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"tokens","included":1},{"name":"tokens","included":2}]}]}`), "plans[0].meters[1].name"},
		{"json meter bad name", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"Tokens","included":1}]}]}`), "plans[0].meters[0].name"},
		{"json meter bad bill", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"tokens","included":1,"bill":"x"}]}]}`), "plans[0].meters[0].bill"},
		{"json meter unknown key", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"tokens","included":1,"interval":"day"}]}]}`), "interval"},
		{"json plain field with meters", js(`{"plans":[{"tier":"pro","price_id":"p","hard":3,"meters":[{"name":"tokens","included":1}]}]}`), "plans[0].hard"},
		{"json meters share an event", js(`{"plans":[{"tier":"pro","price_id":"p","meters":[{"name":"a","included":1,"meter_event_name":"e"},{"name":"b","included":1,"meter_event_name":"e"}]}]}`), "plans[0].meters[1].meter_event_name"},
		{"json bad feature", js(`{"plans":[{"tier":"pro","price_id":"p","included":1,"features":[""]}]}`), "plans[0].features"},
		{"code meter soft above hard", code(billing.Plan{Tier: "pro", PriceID: "a", Meters: []billing.Meter{{Name: "requests", Included: 1}, {Name: "tokens", Included: 10, Soft: 11}}}), "plans[0].Meters[1].Soft"},
		{"code meter price is a licensed price", code(billing.Plan{Tier: "a", PriceID: "pa", Included: 1}, billing.Plan{Tier: "b", PriceID: "pb", Meters: []billing.Meter{{Name: "tokens", Included: 1, MeteredPriceID: "pa"}}}), "plans[1].Meters[0].MeteredPriceID"},
		{"code plain field with meters", code(billing.Plan{Tier: "pro", PriceID: "a", MeterEventName: "e", Meters: []billing.Meter{{Name: "tokens", Included: 1}}}), "plans[0].MeterEventName"},
	} {
		err := tc.load()
		if !errors.Is(err, billing.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig naming %s", tc.name, err, tc.field)
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
	if got := p.Limits("", quota.Period{}); got.Limit() != 12000 || got.Included != 10000 || got.Plan != "pro" {
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
		lim := tc.plan.Limits(quota.DefaultMeter, quota.Period{})
		if allows := lim.Limit() > 0 || lim.Unlimited(); allows != tc.valid {
			t.Fatalf("%+v: quota allows units = %v, test expects %v", tc.plan, allows, tc.valid)
		}
		if (err == nil) != tc.valid {
			t.Errorf("%+v: err = %v, want valid %v", tc.plan, err, tc.valid)
		}
	}
}

// TestPlanErrorsEchoNoValue: an invalid value is named by its variable or
// field, never repeated in the error (it may be a secret pasted into the
// wrong variable).
func TestPlanErrorsEchoNoValue(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_SECRET"
	for _, environ := range [][]string{
		{"PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=" + secret},
		{"PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_OVERAGE=" + secret},
		{"PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_BILL=" + secret},
		{"PRICE_PRO=price_1", "PLAN_PRO_TOKENS_INCLUDED=1", "PLAN_PRO_TOKENS_METERED_PRICE=price_1 " + secret},
		{"PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=1", "PLAN_PRO_FEATURES=a," + secret + " x"},
		{"PRICE_PRO=price_1", "PLAN_PRO_INCLUDED=1", "PLAN_PRO_INTERVAL=" + secret},
	} {
		_, err := billing.PlansFromEnv(environ)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%v: err = %v; want an error without the value", environ, err)
		}
	}
}

// TestPlansWithMeters: the environment, JSON and code express the same
// plan of two meters and features, and each meter's limits are its own.
func TestPlansWithMeters(t *testing.T) {
	t.Parallel()
	want := billing.Plan{Tier: "pro", PriceID: "price_pro", Features: []string{"sso", "export"},
		Meters: []billing.Meter{
			{Name: "requests", Included: 1000, Hard: 2000, Overage: true, MeteredPriceID: "price_pro_m"},
			{Name: "tokens", Included: 50000, Soft: 40000, Overage: true, OverageOnly: true,
				MeterEventName: "api_tokens", MeteredPriceID: "price_tokens"},
		}}
	fromEnv, err := billing.PlansFromEnv([]string{
		"PRICE_PRO=price_pro", "PRICE_PRO_METERED=price_pro_m",
		"PLAN_PRO_INCLUDED=1000", "PLAN_PRO_HARD=2000", "PLAN_PRO_OVERAGE=true", "PLAN_PRO_FEATURES=sso, export,",
		"PLAN_PRO_TOKENS_INCLUDED=50000", "PLAN_PRO_TOKENS_SOFT=40000", "PLAN_PRO_TOKENS_OVERAGE=true",
		"PLAN_PRO_TOKENS_BILL=overage", "PLAN_PRO_TOKENS_METER_EVENT=api_tokens", "PLAN_PRO_TOKENS_METERED_PRICE=price_tokens",
	})
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := billing.PlansFromJSON([]byte(`{"plans":[{"tier":"pro","price_id":"price_pro","features":["sso","export"],"meters":[
		{"name":"requests","included":1000,"hard":2000,"overage":true,"metered_price_id":"price_pro_m"},
		{"name":"tokens","included":50000,"soft":40000,"overage":true,"bill":"overage","meter_event_name":"api_tokens","metered_price_id":"price_tokens"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	fromCode, err := billing.NewPlans(want)
	if err != nil {
		t.Fatal(err)
	}
	for name, plans := range map[string]*billing.Plans{"env": fromEnv, "json": fromJSON, "code": fromCode} {
		got, ok := plans.ByTier("pro")
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ByTier(pro) = %+v, want %+v", name, got, want)
		}
		if got := got.AllMeters(); !reflect.DeepEqual(got, want.Meters) {
			t.Errorf("%s: AllMeters = %+v", name, got)
		}
		if lim := got.Limits("tokens", quota.Period{}); lim.Plan != "pro" || lim.Included != 50000 || lim.Soft != 40000 || !lim.Unlimited() {
			t.Errorf("%s: tokens limits = %+v", name, lim)
		}
		if lim := got.Limits("requests", quota.Period{}); lim.Limit() != 2000 || lim != got.Limits("", quota.Period{}) {
			t.Errorf("%s: requests limits = %+v", name, lim)
		}
		if lim := got.Limits("bytes", quota.Period{}); lim != (quota.Limits{Plan: "pro"}) || lim.Limit() != 0 || lim.Unlimited() {
			t.Errorf("%s: a meter the plan lacks: %+v, want the zero limits", name, lim)
		}
		// Checkout sells the plan with its first metered price.
		if tier, _ := plans.Tier("pro"); tier.MeteredPriceID != "price_pro_m" {
			t.Errorf("%s: checkout tier = %+v", name, tier)
		}
	}

	// A plan of one meter lists it under its default name.
	one := billing.Plan{Tier: "starter", PriceID: "price_s", Included: 10, MeterEventName: "api_requests"}
	if got := one.AllMeters(); !reflect.DeepEqual(got, []billing.Meter{{Name: "requests", Included: 10, MeterEventName: "api_requests"}}) {
		t.Fatalf("AllMeters of a one-meter plan = %+v", got)
	}
	if lim := one.Limits("tokens", quota.Period{}); lim.Limit() != 0 || lim.Unlimited() {
		t.Fatalf("a one-meter plan's tokens = %+v; want nothing", lim)
	}

	// Env: a plan with only a tokens meter has no requests meter; the
	// meters come sorted after requests.
	plans, err := billing.PlansFromEnv([]string{"PRICE_AI=price_ai",
		"PLAN_AI_TOKENS_INCLUDED=5", "PLAN_AI_INPUT_BYTES_INCLUDED=7", "PLAN_AI_INTERVAL=day"})
	if err != nil {
		t.Fatal(err)
	}
	ai, _ := plans.ByTier("ai")
	if names := []string{ai.Meters[0].Name, ai.Meters[1].Name}; len(ai.Meters) != 2 || names[0] != "input_bytes" || names[1] != "tokens" {
		t.Fatalf("meters = %+v", ai.Meters)
	}
	if lim := ai.Limits("requests", quota.Period{}); lim.Limit() != 0 || ai.Interval != quota.Day {
		t.Fatalf("requests of a tokens-only plan = %+v", lim)
	}
}
