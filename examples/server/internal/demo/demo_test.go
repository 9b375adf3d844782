package demo

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// decode round-trips obj through JSON into a stripe-go type, as the
// lifecycle handlers decode event.Data.Raw.
func decode(t *testing.T, obj map[string]any, v any) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestEventShapes(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC)
	s := Subscription{Subject: "alice@example.com", Tier: "pro", PriceID: PricePro, MeteredPriceID: PriceProMetered}

	typ, obj, err := Event(CheckoutCompleted, s, now)
	if err != nil || typ != stripe.EventTypeCheckoutSessionCompleted {
		t.Fatalf("checkout: %v %v", typ, err)
	}
	var cs stripe.CheckoutSession
	decode(t, obj, &cs)
	if cs.ClientReferenceID != s.Subject || cs.Metadata[MetadataSubject] != s.Subject || cs.Metadata[MetadataTier] != "pro" ||
		cs.Customer.ID != "cus_demo_alice_example_com" || cs.Subscription.ID != "sub_demo_alice_example_com" || cs.Mode != stripe.CheckoutSessionModeSubscription {
		t.Errorf("checkout session: %+v", cs)
	}

	typ, obj, _ = Event(SubscriptionCreated, s, now)
	var sub stripe.Subscription
	decode(t, obj, &sub)
	if typ != stripe.EventTypeCustomerSubscriptionCreated || sub.Status != stripe.SubscriptionStatusActive || sub.Customer.ID != cs.Customer.ID ||
		sub.Metadata[MetadataSubject] != s.Subject || len(sub.Items.Data) != 2 ||
		sub.Items.Data[0].Price.ID != PricePro || sub.Items.Data[1].Price.ID != PriceProMetered || sub.Items.Data[1].ID != s.ItemID("metered") {
		t.Errorf("subscription: %v %+v", typ, sub)
	}
	if got, want := time.Unix(sub.CurrentPeriodStart, 0).UTC(), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("period start %v, want %v", got, want)
	}
	if got, want := time.Unix(sub.CurrentPeriodEnd, 0).UTC(), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("period end %v, want %v", got, want)
	}

	_, obj, _ = Event(SubscriptionDeleted, s, now)
	decode(t, obj, &sub)
	if sub.Status != stripe.SubscriptionStatusCanceled {
		t.Errorf("deleted subscription status %q", sub.Status)
	}

	for kind, want := range map[string]struct {
		typ  stripe.EventType
		paid bool
	}{PaymentFailed: {stripe.EventTypeInvoicePaymentFailed, false}, InvoicePaid: {stripe.EventTypeInvoicePaid, true}, InvoiceCreated: {stripe.EventTypeInvoiceCreated, false}} {
		typ, obj, _ := Event(kind, s, now)
		var inv stripe.Invoice
		decode(t, obj, &inv)
		if typ != want.typ || inv.Paid != want.paid || inv.Subscription.ID != sub.ID || inv.Customer.ID != cs.Customer.ID ||
			inv.SubscriptionDetails.Metadata[MetadataSubject] != s.Subject || len(inv.Lines.Data) != 2 ||
			inv.Lines.Data[0].Price.ID != PricePro || inv.Lines.Data[0].Period.End != sub.CurrentPeriodEnd {
			t.Errorf("%s: %v %+v", kind, typ, inv)
		}
	}

	if _, _, err := Event("nope", s, now); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, _, err := Event(InvoicePaid, Subscription{}, now); err == nil {
		t.Error("missing subject accepted")
	}
}
