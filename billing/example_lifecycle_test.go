package billing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// Example shows the lifecycle on a webhook endpoint: a checkout gives
// provisional access, the paid subscription its plan, and its deletion
// revokes it.
func Example() {
	ctx := context.Background()
	plans, _ := billing.PlansFromEnv([]string{
		"PRICE_PRO=price_pro", "PLAN_PRO_INCLUDED=10000", "PLAN_PRO_HARD=10000",
	})
	store := billing.NewMemoryStore(billing.MemoryOptions{}) // billing.NewRedisStore in production
	lc, _ := billing.NewLifecycle(billing.Config{Store: store, Plans: plans})
	limits := lc.Limits() // the quota middleware's LimitsSource
	h, _ := webhook.New(webhook.Config{Secrets: []string{"whsec_example"}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	lc.Register(h) // mount h at POST /billing/webhook

	show := func() {
		e, _ := store.Get(ctx, "acct_42")
		l, err := limits.Limits(ctx, "acct_42", "requests")
		if err != nil {
			fmt.Printf("%-8s %v\n", e.Status, err)
			return
		}
		fmt.Printf("%-8s %s: %d units\n", e.Status, l.Plan, l.Limit())
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	// A subscription as API version 2025-03-31.basil and later render it:
	// the billing period is on its items.
	subscription := func(status string) map[string]any {
		return map[string]any{
			"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
			"metadata": map[string]string{checkout.MetadataSubject: "acct_42"},
			"items": map[string]any{"object": "list", "data": []any{map[string]any{
				"id": "si_1", "object": "subscription_item", "price": map[string]any{"id": "price_pro"},
				"current_period_start": at.Unix(), "current_period_end": at.AddDate(0, 1, 0).Unix()}}},
		}
	}
	deliver := func(typ stripe.EventType, obj any, sec int) {
		webhooktest.Deliver(nil, h, "whsec_example",
			webhooktest.NewEvent(typ, obj, webhooktest.WithCreated(at.Add(time.Duration(sec)*time.Second))))
	}

	deliver(stripe.EventTypeCheckoutSessionCompleted, map[string]any{
		"id": "cs_1", "object": "checkout.session", "mode": "subscription",
		"client_reference_id": "acct_42", "customer": "cus_1",
	}, 0)
	show()
	deliver(stripe.EventTypeCustomerSubscriptionCreated, subscription("active"), 1)
	show()
	deliver(stripe.EventTypeCustomerSubscriptionUpdated, subscription("active"), 0) // late and older: ignored
	deliver(stripe.EventTypeCustomerSubscriptionDeleted, subscription("canceled"), 2)
	show()
	// Output:
	// pending  provisional: 100 units
	// active   pro: 10000 units
	// canceled quota: subject has no active plan
}

// ExamplePlansFromJSON loads plans from a JSON document: a one-meter
// plan, and a plan that meters requests and tokens and lists features.
func ExamplePlansFromJSON() {
	plans, err := billing.PlansFromJSON([]byte(`{"plans": [
		{"tier": "starter", "price_id": "price_starter", "included": 1000},
		{"tier": "pro", "price_id": "price_pro", "features": ["sso", "export"],
		 "meters": [
			{"name": "requests", "included": 10000, "hard": 20000, "overage": true, "meter_event_name": "api_requests"},
			{"name": "tokens", "included": 50000, "overage": true, "meter_event_name": "api_tokens", "bill": "overage"}
		 ]}
	]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, tier := range plans.Tiers() {
		p, _ := plans.ByTier(tier)
		for _, m := range p.AllMeters() {
			lim := p.Limits(m.Name, quota.Period{})
			fmt.Printf("%s %s: %d included, cap %d (unlimited %v), features %v\n", p.Tier, m.Name, m.Included, lim.Limit(), lim.Unlimited(), p.Features)
		}
	}
	_, err = billing.PlansFromJSON([]byte(`{"plans": [{"tier": "pro", "price_id": "price_pro", "meters": [{"name": "tokens", "included": -5}]}]}`))
	fmt.Println(err)
	// Output:
	// starter requests: 1000 included, cap 1000 (unlimited false), features []
	// pro requests: 10000 included, cap 20000 (unlimited false), features [sso export]
	// pro tokens: 50000 included, cap 0 (unlimited true), features [sso export]
	// billing: invalid config: plans[0].meters[0].included: must not be negative
}

// ExampleLifecycle_RequireFeature gates a route on a plan's feature.
func ExampleLifecycle_RequireFeature() {
	ctx := context.Background()
	plans, _ := billing.PlansFromEnv([]string{
		"PRICE_STARTER=price_starter", "PLAN_STARTER_INCLUDED=1000",
		"PRICE_PRO=price_pro", "PLAN_PRO_INCLUDED=10000", "PLAN_PRO_FEATURES=sso,export",
	})
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	lc, _ := billing.NewLifecycle(billing.Config{Store: store, Plans: plans})
	for subject, tier := range map[string]string{"acct_pro": "pro", "acct_starter": "starter"} {
		store.Update(ctx, subject, func(e *billing.Entitlement) error { // as the lifecycle handlers would
			e.Status, e.Tier = billing.StatusActive, tier
			return nil
		})
	}
	subject := func(r *http.Request) (string, error) { return r.Header.Get("X-Account"), nil } // your authentication
	sso := lc.RequireFeature(subject, "sso")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "welcome")
	}))
	for _, account := range []string{"acct_pro", "acct_starter", "acct_unknown", ""} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/sso", nil)
		req.Header.Set("X-Account", account)
		sso.ServeHTTP(rec, req)
		fmt.Printf("%-13q %d\n", account, rec.Code)
	}
	ok, _ := lc.HasFeature(ctx, "acct_pro", "export")
	fmt.Println("acct_pro has export:", ok)
	// Output:
	// "acct_pro"    200
	// "acct_starter" 403
	// "acct_unknown" 402
	// ""            401
	// acct_pro has export: true
}
