package billkitotel_test

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

var quiet = slog.New(slog.DiscardHandler)

// at is the time of the billing tests' events.
var at = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func testPlans(t *testing.T) *billing.Plans {
	t.Helper()
	plans, err := billing.PlansFromEnv([]string{"PRICE_PRO=price_pro", "PLAN_PRO_INCLUDED=10000"})
	if err != nil {
		t.Fatal(err)
	}
	return plans
}

// subscription is a subscription to price, as API version
// 2025-03-31.basil and later render it. An empty subject leaves out
// billkit's metadata; withPeriod false leaves out the period.
func subscription(id, customer, subject, price, status string, withPeriod bool) map[string]any {
	item := map[string]any{"id": "si_" + id, "object": "subscription_item", "price": map[string]any{"id": price}}
	if withPeriod {
		item["current_period_start"] = at.Unix()
		item["current_period_end"] = at.AddDate(0, 1, 0).Unix()
	}
	sub := map[string]any{
		"id": id, "object": "subscription", "customer": customer, "status": status,
		"items": map[string]any{"object": "list", "data": []any{item}},
	}
	if subject != "" {
		sub["metadata"] = map[string]string{checkout.MetadataSubject: subject}
	}
	return sub
}

func TestBillingEvents(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	lc, err := billing.NewLifecycle(billing.Config{Store: store, Plans: testPlans(t), Observer: tm.Billing(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.New(webhook.Config{
		Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{}),
		Observer: tm.Webhook(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	lc.Register(h)

	deliver := func(typ stripe.EventType, obj any, sec int, want int) {
		t.Helper()
		got := webhooktest.Deliver(t, h, secret, webhooktest.NewEvent(typ, obj,
			webhooktest.WithCreated(at.Add(time.Duration(sec)*time.Second))))
		if got[0] != want {
			t.Errorf("%s: status %d, want %d", typ, got[0], want)
		}
	}
	deliver(stripe.EventTypeCheckoutSessionCompleted, map[string]any{
		"id": "cs_1", "object": "checkout.session", "mode": "subscription",
		"client_reference_id": subject, "customer": "cus_secret_1",
	}, 0, 200) // applied: none → pending
	deliver(stripe.EventTypeCustomerSubscriptionCreated,
		subscription("sub_secret_1", "cus_secret_1", subject, "price_pro", "active", true), 1, 200) // applied: pending → active
	deliver(stripe.EventTypeCustomerSubscriptionUpdated,
		subscription("sub_secret_1", "cus_secret_1", subject, "price_pro", "active", true), 0, 200) // older: unchanged
	deliver(stripe.EventTypeCustomerSubscriptionUpdated,
		subscription("sub_other", "cus_other", "", "price_other", "active", true), 3, 200) // another product's: ignored
	deliver(stripe.EventTypeCustomerSubscriptionUpdated,
		subscription("sub_unlinked", "cus_unlinked", "", "price_pro", "active", true), 3, 200) // no subject yet: parked
	deliver(stripe.EventTypeCustomerSubscriptionUpdated,
		subscription("sub_secret_2", "cus_secret_2", "acct_secret_43", "price_pro", "active", false), 3, 500) // no period: refused
	deliver(stripe.EventTypeCustomerSubscriptionDeleted,
		subscription("sub_secret_1", "cus_secret_1", subject, "price_pro", "canceled", true), 2, 200) // applied: active → canceled

	checkSums(t, tm, "billkit.billing.events", map[string]int64{
		"billkit.outcome=applied,stripe.event.type=checkout.session.completed":      1,
		"billkit.outcome=applied,stripe.event.type=customer.subscription.created":   1,
		"billkit.outcome=unchanged,stripe.event.type=customer.subscription.updated": 1,
		"billkit.outcome=ignored,stripe.event.type=customer.subscription.updated":   1,
		"billkit.outcome=parked,stripe.event.type=customer.subscription.updated":    1,
		"billkit.outcome=refused,stripe.event.type=customer.subscription.updated":   1,
		"billkit.outcome=applied,stripe.event.type=customer.subscription.deleted":   1,
	})
	checkSums(t, tm, "billkit.billing.entitlement.changes", map[string]int64{
		"billkit.entitlement.previous_status=none,billkit.entitlement.status=pending":                     1,
		"billkit.entitlement.previous_status=pending,billkit.entitlement.status=active,billkit.plan=pro":  1,
		"billkit.entitlement.previous_status=active,billkit.entitlement.status=canceled,billkit.plan=pro": 1,
	})

	// Each delivery's span holds the lifecycle's outcome as an event.
	var outcomes []string
	for _, s := range tm.spans.Ended() {
		for _, e := range s.Events() {
			if e.Name == "billkit.billing.event" {
				outcomes = append(outcomes, spanAttrs(e.Attributes)["billkit.outcome"])
			}
		}
	}
	wantOutcomes := []string{"applied", "applied", "unchanged", "ignored", "parked", "refused", "applied"}
	if !slices.Equal(outcomes, wantOutcomes) {
		t.Errorf("span events %v, want %v", outcomes, wantOutcomes)
	}
	tm.assertNowhere(t, false, "acct_secret", "cus_", "sub_", "evt_")
	tm.assertNowhere(t, true, "acct_secret", "cus_secret")
}

// TestBillingReconcile runs reconciliations against a Stripe that lists
// a drifted subscription and an unreadable one, then against one that
// fails.
func TestBillingReconcile(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	var failing atomic.Bool
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/subscriptions" {
			writeJSON(w, 404, stripeError("invalid_request_error", "Unrecognized request URL"))
			return
		}
		if failing.Load() {
			writeJSON(w, 500, stripeError("api_error", "injected failure"))
			return
		}
		writeJSON(w, 200, map[string]any{"object": "list", "url": "/v1/subscriptions", "has_more": false, "data": []any{
			subscription("sub_secret_1", "cus_secret_1", subject, "price_pro", "active", true),
			subscription("sub_secret_2", "cus_secret_2", "acct_secret_43", "price_pro", "active", false),
		}})
	})
	lc, err := billing.NewLifecycle(billing.Config{
		Store: billing.NewMemoryStore(billing.MemoryOptions{}), Plans: testPlans(t),
		Stripe: fake.client(tm), Observer: tm.Billing(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := lc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Repaired) != 1 || len(rep.Unreadable) != 1 {
		t.Fatalf("report %+v, want one repaired and one unreadable", rep)
	}
	failing.Store(true)
	if _, err := lc.Reconcile(ctx); err == nil {
		t.Fatal("Reconcile against a failing Stripe succeeded")
	}

	checkSums(t, tm, "billkit.billing.reconcile.runs", map[string]int64{"billkit.outcome=ok": 1, "billkit.outcome=failed": 1})
	checkCounts(t, tm, "billkit.billing.reconcile.duration", map[string]uint64{"billkit.outcome=ok": 1, "billkit.outcome=failed": 1})
	checkSums(t, tm, "billkit.billing.reconcile.repaired", map[string]int64{"": 1})
	checkSums(t, tm, "billkit.billing.reconcile.unreadable", map[string]int64{"": 1})
	checkSums(t, tm, "billkit.billing.entitlement.changes", map[string]int64{
		"billkit.entitlement.previous_status=none,billkit.entitlement.status=active,billkit.plan=pro": 1,
	})
	// The listing went through the wrapped backend.
	got := tm.sums(t, "billkit.stripe.requests")
	want := map[string]int64{
		"http.request.method=GET,http.response.status_code=200,url.template=/v1/subscriptions":                1,
		"error.type=500,http.request.method=GET,http.response.status_code=500,url.template=/v1/subscriptions": 1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("billkit.stripe.requests %v, want %v", got, want)
	}
	tm.assertNowhere(t, false, "acct_secret", "cus_", "sub_")
}
