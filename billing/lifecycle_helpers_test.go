package billing_test

import (
	"context"
	"github.com/billkit/billkit/internal/fakeclock"
	"net/http"
	"testing"
	"time"

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
	limits *billing.LimitsCache
	clock  *clock
}

func newHarness(t testing.TB, store billing.EntitlementStore, mod func(*billing.Config)) *harness {
	t.Helper()
	plans := testPlans(t)
	clk := newClock(t0)
	cfg := billing.Config{Store: store, Plans: plans, Now: clk.Now, LimitsTTL: time.Nanosecond}
	if mod != nil {
		mod(&cfg)
	}
	lc, err := billing.NewLifecycle(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.New(webhook.Config{Secrets: []string{testSecret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	lc.Register(h)
	return &harness{t: t, store: store, plans: plans, lc: lc, h: h, limits: lc.Limits(), clock: clk}
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

// gracePeriod is the default grace policy's access after a failed payment.
const gracePeriod = 7 * 24 * time.Hour
