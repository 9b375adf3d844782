package billing_test

import (
	"context"
	"github.com/billkit/billkit/internal/fakeclock"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

const testSecret = "whsec_lifecycle_test"

// t0 is the start of the test subscription's first period.
var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// clock is a fake clock, safe for concurrent use.
type clock = fakeclock.Clock

func newClock(t time.Time) *clock { return fakeclock.New(t) }

func testPlans(t testing.TB) *billing.Plans {
	t.Helper()
	p, err := billing.NewPlans(
		billing.Plan{Tier: "starter", PriceID: "price_starter", Included: 1000},
		billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 10000, Hard: 20000, Overage: true,
			MeteredPriceID: "price_pro_metered", MeterEventName: "api_requests"},
	)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// harness is a lifecycle behind a real webhook handler.
type harness struct {
	t      testing.TB
	store  billing.EntitlementStore
	plans  *billing.Plans
	lc     *billing.Lifecycle
	h      *webhook.Handler
	limits *billing.Limits
	clock  *clock
}

func newHarness(t testing.TB, store billing.EntitlementStore, mod func(*billing.Config)) *harness {
	t.Helper()
	plans := testPlans(t)
	clk := newClock(t0)
	cfg := billing.Config{Store: store, Plans: plans, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	lc, err := billing.NewLifecycle(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.New(webhook.Config{Secrets: []string{testSecret}, Store: webhook.NewMemoryStore(nil)})
	if err != nil {
		t.Fatal(err)
	}
	lc.Register(h)
	limits, err := billing.NewLimits(billing.LimitsConfig{Store: store, Plans: plans, Now: clk.Now, TTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, store: store, plans: plans, lc: lc, h: h, limits: limits, clock: clk}
}

// deliver posts each event, signed, and requires a 200 for each.
func (h *harness) deliver(events ...[]byte) {
	h.t.Helper()
	for i, st := range webhooktest.Deliver(h.t, h.h, testSecret, events...) {
		if st != http.StatusOK {
			h.t.Fatalf("delivery %d (%s) answered %d, want 200", i, webhooktest.EventID(events[i]), st)
		}
	}
}

func (h *harness) get(subject string) billing.Entitlement {
	h.t.Helper()
	e, err := h.store.Get(context.Background(), subject)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", subject, err)
	}
	return e
}

// event builds a signed-ready event payload created at t with a fixed ID.
func event(id string, typ stripe.EventType, obj any, at time.Time) []byte {
	return webhooktest.NewEvent(typ, obj, webhooktest.WithID(id), webhooktest.WithCreated(at))
}

// sub is a subscription object as Stripe sends it.
type sub struct {
	ID, Customer, Subject string
	Status                string
	Price                 string // licensed price; default price_pro
	Metered               bool   // add the metered item
	Start, End            time.Time
	NoMetadata            bool
}

func (s sub) object() map[string]any {
	if s.ID == "" {
		s.ID = "sub_1"
	}
	if s.Customer == "" {
		s.Customer = "cus_1"
	}
	if s.Subject == "" {
		s.Subject = "alice"
	}
	if s.Price == "" {
		s.Price = "price_pro"
	}
	if s.Start.IsZero() {
		s.Start, s.End = t0, t0.AddDate(0, 1, 0)
	}
	items := []map[string]any{{"id": "si_licensed", "object": "subscription_item",
		"price": map[string]any{"id": s.Price, "object": "price"}}}
	if s.Metered {
		items = append(items, map[string]any{"id": "si_metered", "object": "subscription_item",
			"price": map[string]any{"id": "price_pro_metered", "object": "price"}})
	}
	meta := map[string]string{"billkit_subject": s.Subject, "billkit_tier": "pro"}
	if s.NoMetadata {
		meta = map[string]string{}
	}
	return map[string]any{
		"id": s.ID, "object": "subscription", "customer": s.Customer, "status": s.Status,
		"current_period_start": s.Start.Unix(), "current_period_end": s.End.Unix(),
		"metadata": meta,
		"items":    map[string]any{"object": "list", "data": items},
	}
}

// inv is an invoice object.
type inv struct {
	ID, Sub, Customer, Subject string
	FinalizedAt                time.Time
	NoMetadata                 bool
}

func (i inv) object() map[string]any {
	if i.ID == "" {
		i.ID = "in_1"
	}
	if i.Sub == "" {
		i.Sub = "sub_1"
	}
	if i.Customer == "" {
		i.Customer = "cus_1"
	}
	if i.Subject == "" {
		i.Subject = "alice"
	}
	meta := map[string]string{"billkit_subject": i.Subject}
	if i.NoMetadata {
		meta = map[string]string{}
	}
	o := map[string]any{
		"id": i.ID, "object": "invoice", "subscription": i.Sub, "customer": i.Customer,
		"subscription_details": map[string]any{"metadata": meta},
		"lines": map[string]any{"object": "list", "data": []map[string]any{{
			"id": "il_1", "object": "line_item", "price": map[string]any{"id": "price_pro", "object": "price"},
			"period": map[string]any{"start": t0.Unix(), "end": t0.AddDate(0, 1, 0).Unix()},
		}}},
	}
	if !i.FinalizedAt.IsZero() {
		o["status_transitions"] = map[string]any{"finalized_at": i.FinalizedAt.Unix()}
	}
	return o
}

// session is a completed Checkout Session object.
func session(subject, customer, subID string) map[string]any {
	return map[string]any{
		"id": "cs_" + subject, "object": "checkout.session", "mode": "subscription",
		"client_reference_id": subject, "customer": customer, "subscription": subID,
		"metadata": map[string]string{"billkit_subject": subject, "billkit_tier": "pro"},
	}
}
