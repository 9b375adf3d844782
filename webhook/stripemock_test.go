package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// TestStripeShapedEvents feeds events whose objects are what stripe-mock
// v0.162.0 returns for a subscription, an invoice and a checkout session
// through the Handler, and decodes event.Data.Raw into stripe-go's types.
func TestStripeShapedEvents(t *testing.T) {
	t.Parallel()
	mock := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	sub := testserver.Get(t, mock.URL, "/v1/subscriptions/sub_123")
	inv := testserver.Get(t, mock.URL, "/v1/invoices/in_123")
	cs := testserver.Get(t, mock.URL, "/v1/checkout/sessions/cs_123")

	var gotSub stripe.Subscription
	var gotInv stripe.Invoice
	var gotCS stripe.CheckoutSession
	var anyTypes []stripe.EventType
	h := newHandler(t, webhook.Config{})
	h.On(stripe.EventTypeCustomerSubscriptionUpdated, func(_ context.Context, ev *stripe.Event) error {
		if ev.Data.PreviousAttributes["status"] != "trialing" {
			t.Errorf("previous_attributes = %v", ev.Data.PreviousAttributes)
		}
		return json.Unmarshal(ev.Data.Raw, &gotSub)
	})
	h.On(stripe.EventTypeInvoicePaid, func(_ context.Context, ev *stripe.Event) error {
		return json.Unmarshal(ev.Data.Raw, &gotInv)
	})
	h.On(stripe.EventTypeCheckoutSessionCompleted, func(_ context.Context, ev *stripe.Event) error {
		return json.Unmarshal(ev.Data.Raw, &gotCS)
	})
	h.OnAny(func(_ context.Context, ev *stripe.Event) error {
		anyTypes = append(anyTypes, ev.Type)
		if ev.Data.Object["id"] == nil {
			t.Errorf("%s: data.object has no id", ev.Type)
		}
		return nil
	})

	statuses := webhooktest.Deliver(t, h, secret,
		webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionUpdated, sub,
			webhooktest.WithPreviousAttributes(map[string]any{"status": "trialing"})),
		webhooktest.NewEvent(stripe.EventTypeInvoicePaid, inv),
		webhooktest.NewEvent(stripe.EventTypeCheckoutSessionCompleted, cs),
	)
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("delivery %d: status %d, want 200", i, s)
		}
	}
	if gotSub.ID != "sub_123" || gotSub.Object != "subscription" || gotSub.Items == nil {
		t.Errorf("subscription decoded as %+v", gotSub)
	}
	if gotInv.ID != "in_123" || gotInv.Object != "invoice" || gotInv.AmountDue == 0 || gotInv.Lines == nil {
		t.Errorf("invoice decoded as id=%q object=%q amount_due=%d", gotInv.ID, gotInv.Object, gotInv.AmountDue)
	}
	if gotCS.ID != "cs_123" || gotCS.Object != "checkout.session" || gotCS.Mode == "" {
		t.Errorf("checkout session decoded as id=%q object=%q mode=%q", gotCS.ID, gotCS.Object, gotCS.Mode)
	}
	if len(anyTypes) != 3 {
		t.Errorf("catch-all saw %v", anyTypes)
	}
}
