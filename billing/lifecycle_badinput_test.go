package billing_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// TestBadInput: events whose object is missing or of another type than
// the event's are acknowledged (they are not about a subscription billkit
// can tell apart), and never panic; an object of the right type that
// cannot be read is refused (500, so Stripe retries) and reported (V2).
// Neither stores anything.
func TestBadInput(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) { testBadInput(t, sh) })
}

func testBadInput(t *testing.T, sh shape) {
	cases := []struct {
		name string
		typ  stripe.EventType
		obj  any
		want int
	}{
		{"subscription event with an invoice", evUpdated, sh.inv(inv{}), http.StatusOK},
		{"invoice event with a subscription", evPaid, sh.sub(sub{Status: "active"}), http.StatusOK},
		{"checkout event with a subscription", evCheckout, sh.sub(sub{Status: "active"}), http.StatusOK},
		{"object without type", evUpdated, map[string]any{"id": "sub_1"}, http.StatusOK},
		{"object without id", evUpdated, map[string]any{"object": "subscription", "status": "active"}, http.StatusInternalServerError},
		{"mistyped fields", evUpdated, map[string]any{"id": "sub_1", "object": "subscription", "items": "many", "metadata": map[string]string{"billkit_subject": "alice"}}, http.StatusInternalServerError},
		{"invoice without subscription", evPaid, map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_1"}, http.StatusOK},
		{"non-subscription checkout", evCheckout, map[string]any{"id": "cs_1", "object": "checkout.session", "mode": "payment", "client_reference_id": "alice"}, http.StatusOK},
		{"empty object", evDeleted, map[string]any{}, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var reported []*billing.EventError
			h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
				c.OnEventError = func(_ context.Context, err *billing.EventError) { reported = append(reported, err) }
			})
			st := webhooktest.Deliver(t, h.h, testSecret, sh.event("evt_bad", tc.typ, tc.obj, sec(1)))
			if st[0] != tc.want {
				t.Fatalf("delivery answered %d, want %d", st[0], tc.want)
			}
			if refused := tc.want != http.StatusOK; refused != (len(reported) == 1) {
				t.Fatalf("OnEventError got %d reports, want %d", len(reported), map[bool]int{true: 1}[refused])
			}
			if len(reported) == 1 && (!errors.Is(reported[0], billing.ErrUnreadable) || reported[0].EventID != "evt_bad") {
				t.Fatalf("report %v, want ErrUnreadable of evt_bad", reported[0])
			}
			if _, err := h.store.Get(context.Background(), "alice"); err == nil {
				t.Fatalf("a bad %s event stored an entitlement", tc.typ)
			}
		})
	}
}

func TestBadInputDirect(t *testing.T) {
	t.Parallel()
	t.Run("direct calls", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
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
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		st := webhooktest.Deliver(t, h.h, "whsec_wrong", newest(t).event("evt_x", evCreated, newest(t).sub(sub{Status: "active"}), sec(1)))
		if st[0] != http.StatusBadRequest {
			t.Fatalf("mis-signed delivery answered %d, want 400", st[0])
		}
		if _, err := h.store.Get(context.Background(), "alice"); err == nil {
			t.Fatal("a mis-signed event reached the lifecycle")
		}
	})
}
