package billing_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/internal/testserver"
)

// stripe-mock v0.162.0's fixture subscription.
const (
	fixtureSub      = "sub_1N0Qf5LKkAKty0Q8ocjnVxrK"
	fixtureCustomer = "cus_Nj5B57LZqvnaIg"
	fixturePrice    = "price_1Mxd0vLKkAKty0Q8JV1qLL0v"
	fixtureItem     = "si_NlycwoOKao8VBA"
)

func stripeMockClient(t testing.TB) *client.API {
	t.Helper()
	sm := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	return client.New("sk_test_billkit", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:               stripe.String(sm.URL),
			MaxNetworkRetries: stripe.Int64(0),
			LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
}

func fixturePlans(t testing.TB) *billing.Plans {
	t.Helper()
	p, err := billing.NewPlans(billing.Plan{Tier: "team", PriceID: fixturePrice, Included: 500})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReconcile: a subject whose subscription events were all missed (it is
// still pending after its checkout) is repaired from Stripe's listing, the
// change is reported, and a second run finds nothing to repair.
func TestReconcile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	api := stripeMockClient(t)
	store := billing.NewMemoryStore(nil)
	h := newHarness(t, store, func(c *billing.Config) {
		c.Plans = fixturePlans(t)
		c.Stripe = api
	})
	h.clock.Set(t0.Add(time.Hour)) // reconcile runs after the checkout event
	h.deliver(event("evt_co", evCheckout, session("acme", fixtureCustomer, ""), sec(0)))
	h.deliver(event("evt_co_other", evCheckout, session("ghost", "cus_ghost", "sub_gone"), sec(0)))
	if _, err := store.Update(ctx, "ghost", func(e *billing.Entitlement) error {
		e.Sources.Subscription = billing.SubscriptionFact{At: sec(1), ID: "sub_gone", Status: billing.StatusActive, Tier: "team"}
		e.Status, e.SubscriptionID = billing.StatusActive, "sub_gone"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if e := h.get("acme"); e.Status != billing.StatusPending {
		t.Fatalf("before reconcile acme is %s, want pending", e.Status)
	}

	rep, err := h.lc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Listed < 1 {
		t.Fatalf("Reconcile listed %d subscriptions, want the fixture", rep.Listed)
	}
	i := slices.IndexFunc(rep.Changes, func(c billing.Change) bool { return c.Subject == "acme" })
	if i < 0 {
		t.Fatalf("report %+v has no change for acme", rep)
	}
	c := rep.Changes[i]
	if c.SubscriptionID != fixtureSub || c.Before.Status != billing.StatusPending || c.After.Status != billing.StatusActive ||
		!slices.Contains(c.Fields, "status") || !slices.Contains(c.Fields, "tier") {
		t.Fatalf("change = %+v, want acme pending → active on %s with status and tier named", c, fixtureSub)
	}
	if e := h.get("acme"); e.Status != billing.StatusActive || e.Tier != "team" || e.SubscriptionID != fixtureSub {
		t.Fatalf("after reconcile acme = %s/%s on %s, want active/team on the fixture", e.Status, e.Tier, e.SubscriptionID)
	}
	if !slices.Contains(rep.Missing, "ghost") {
		t.Errorf("Missing = %v, want ghost (its live subscription is not listed)", rep.Missing)
	}

	rep2, err := h.lc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Changes) != 0 {
		t.Fatalf("a second reconcile changed %+v, want nothing", rep2.Changes)
	}
}

// TestReconcileNeedsStripe: without a client Reconcile fails clearly.
func TestReconcileNeedsStripe(t *testing.T) {
	t.Parallel()
	h := newHarness(t, billing.NewMemoryStore(nil), nil)
	if _, err := h.lc.Reconcile(context.Background()); !errors.Is(err, billing.ErrInvalidConfig) {
		t.Fatalf("err = %v, want ErrInvalidConfig", err)
	}
}

// TestRefetch: with Refetch, an event's payload is replaced by the
// subscription read from Stripe, so a stale or wrong payload cannot move
// the entitlement.
func TestRefetch(t *testing.T) {
	t.Parallel()
	api := stripeMockClient(t)
	h := newHarness(t, billing.NewMemoryStore(nil), func(c *billing.Config) {
		c.Plans = fixturePlans(t)
		c.Stripe = api
		c.Refetch = true
	})
	// The payload claims "canceled"; Stripe (the fixture) says active.
	payload := sub{ID: fixtureSub, Customer: fixtureCustomer, Subject: "acme", Status: "canceled", Price: fixturePrice}.object()
	h.deliver(event("evt_up", evUpdated, payload, sec(1)))
	h.deliver(event("evt_co", evCheckout, session("acme", fixtureCustomer, fixtureSub), sec(0)))
	e := h.get("acme")
	if e.Status != billing.StatusActive || e.Tier != "team" || e.SubscriptionID != fixtureSub {
		t.Fatalf("refetched entitlement = %s/%s on %s, want active/team", e.Status, e.Tier, e.SubscriptionID)
	}
	h.deliver(event("evt_paid", evPaid, inv{Sub: fixtureSub, Customer: fixtureCustomer, Subject: "acme"}.object(), sec(2)))
	if e := h.get("acme"); e.Status != billing.StatusActive {
		t.Fatalf("after invoice.paid with refetch: %s, want active", e.Status)
	}
}
