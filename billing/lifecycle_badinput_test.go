package billing_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// TestBadInput: events whose object is missing, of the wrong type or
// malformed are acknowledged (Stripe would retry them forever otherwise),
// change nothing and never panic.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		typ  stripe.EventType
		obj  any
	}{
		{"subscription event with an invoice", evUpdated, inv{}.object()},
		{"invoice event with a subscription", evPaid, sub{Status: "active"}.object()},
		{"checkout event with a subscription", evCheckout, sub{Status: "active"}.object()},
		{"object without type", evUpdated, map[string]any{"id": "sub_1"}},
		{"object without id", evUpdated, map[string]any{"object": "subscription", "status": "active"}},
		{"mistyped fields", evUpdated, map[string]any{"id": "sub_1", "object": "subscription", "items": "many", "metadata": map[string]string{"billkit_subject": "alice"}}},
		{"invoice without subscription", evPaid, map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_1"}},
		{"non-subscription checkout", evCheckout, map[string]any{"id": "cs_1", "object": "checkout.session", "mode": "payment", "client_reference_id": "alice"}},
		{"empty object", evDeleted, map[string]any{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, billing.NewMemoryStore(nil), nil)
			h.deliver(event("evt_bad", tc.typ, tc.obj, sec(1)))
			if _, err := h.store.Get(context.Background(), "alice"); err == nil {
				t.Fatalf("a bad %s event stored an entitlement", tc.typ)
			}
		})
	}

	t.Run("direct calls", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, billing.NewMemoryStore(nil), nil)
		for _, ev := range []*stripe.Event{
			nil,
			{ID: "evt_1", Type: evUpdated, Created: 1},
			{ID: "evt_2", Type: evUpdated, Created: 1, Data: &stripe.EventData{}},
			{ID: "evt_3", Type: evUpdated, Created: 1, Data: &stripe.EventData{Raw: []byte("not json")}},
			{ID: "evt_4", Type: evUpdated, Data: &stripe.EventData{Raw: []byte(`{"id":"sub_1","object":"subscription"}`)}}, // no created
			{ID: "evt_5", Type: "customer.created", Created: 1},
		} {
			if err := h.lc.HandleEvent(context.Background(), ev); err != nil {
				t.Errorf("HandleEvent(%+v) = %v, want nil", ev, err)
			}
		}
	})

	t.Run("bad signature is rejected by the handler", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, billing.NewMemoryStore(nil), nil)
		st := webhooktest.Deliver(t, h.h, "whsec_wrong", event("evt_x", evCreated, sub{Status: "active"}.object(), sec(1)))
		if st[0] != http.StatusBadRequest {
			t.Fatalf("mis-signed delivery answered %d, want 400", st[0])
		}
		if _, err := h.store.Get(context.Background(), "alice"); err == nil {
			t.Fatal("a mis-signed event reached the lifecycle")
		}
	})
}
