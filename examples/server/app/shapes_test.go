package app

import (
	"encoding/json"
	"fmt"
	"github.com/billkit/billkit/internal/testserver"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/examples/server/internal/demo"
)

// Stripe API versions of the shapes.
const (
	// apiV76 is stripe-go v76's version, in which stripe-mock v0.162.0's
	// fixtures are rendered: top-level periods, invoice.subscription.
	apiV76 = "2023-10-16"
	// apiDahlia is stripe-mock v0.203.0's version: basil's item periods,
	// invoice parents and line pricing, and what came after.
	apiDahlia = "2026-08-26.dahlia"
)

// A shape renders the Stripe objects of a subscription's lifecycle as one
// API version does. Its objects are stripe-mock's own fixtures of that
// version (GET /v1/subscriptions/sub_123, /v1/invoices/in_123 and
// /v1/checkout/sessions/cs_123), in which the test sets only the values it
// needs, and only where the fixture has the field: a fixture with top-level
// current_period_* gets the period there, one whose items carry it gets it
// on the items; an invoice with a parent names its subscription under
// parent.subscription_details and its lines' prices under
// pricing.price_details, one without under subscription and price. No
// field is added that the fixture's version does not have (but for the
// basil line's pricing.price_details, which stripe-mock's fixture leaves
// out). billing/shapes_test.go does the same for the billing package.
type shape struct {
	// APIVersion is the api_version of the shape's events.
	APIVersion string

	fixSub, fixInv, fixCS map[string]any // the fixtures; never modified
}

// loadShape reads the fixtures of the stripe-mock at baseURL, whose
// objects are rendered in apiVersion.
func loadShape(t *testing.T, baseURL, apiVersion string) shape {
	t.Helper()
	sh := shape{
		APIVersion: apiVersion,
		fixSub:     testserver.Object(t, baseURL, "/v1/subscriptions/sub_123"),
		fixInv:     testserver.Object(t, baseURL, "/v1/invoices/in_123"),
		fixCS:      testserver.Object(t, baseURL, "/v1/checkout/sessions/cs_123"),
	}
	// The fields every shape carries, which the rendering below sets
	// unconditionally.
	for _, f := range []struct {
		name string
		obj  map[string]any
		keys []string
	}{
		{"subscription", sh.fixSub, []string{"id", "customer", "status", "metadata", "items"}},
		{"invoice", sh.fixInv, []string{"id", "customer", "status", "lines"}},
		{"checkout session", sh.fixCS, []string{"id", "mode", "status", "customer", "subscription", "client_reference_id", "metadata"}},
	} {
		for _, k := range f.keys {
			if !has(f.obj, k) {
				t.Fatalf("stripe-mock's %s fixture has no %q", f.name, k)
			}
		}
	}
	if !has(sh.fixInv, "parent") && !has(sh.fixInv, "subscription") {
		t.Fatal("stripe-mock's invoice fixture names its subscription neither under parent nor under subscription")
	}
	return sh
}

// event returns the Stripe event type and the data.object of an event of
// kind (one of [demo.Kinds]) about s at time now, in the shape: the
// counterpart of [demo.Event], whose objects it mirrors.
func (sh shape) event(kind string, s demo.Subscription, now time.Time) (stripe.EventType, map[string]any, error) {
	if s.Subject == "" {
		return "", nil, fmt.Errorf("shape: no subject")
	}
	s = s.WithDefaults(now)
	switch kind {
	case demo.CheckoutCompleted:
		return stripe.EventTypeCheckoutSessionCompleted, sh.session(s, now), nil
	case demo.SubscriptionCreated:
		return stripe.EventTypeCustomerSubscriptionCreated, sh.subscription(s, now), nil
	case demo.SubscriptionUpdated:
		return stripe.EventTypeCustomerSubscriptionUpdated, sh.subscription(s, now), nil
	case demo.SubscriptionDeleted:
		s.Status = stripe.SubscriptionStatusCanceled
		return stripe.EventTypeCustomerSubscriptionDeleted, sh.subscription(s, now), nil
	case demo.InvoiceCreated:
		return stripe.EventTypeInvoiceCreated, sh.invoice(s, now, "draft"), nil
	case demo.PaymentFailed:
		return stripe.EventTypeInvoicePaymentFailed, sh.invoice(s, now, "open"), nil
	case demo.InvoicePaid:
		return stripe.EventTypeInvoicePaid, sh.invoice(s, now, "paid"), nil
	}
	return "", nil, fmt.Errorf("shape: unknown event %q", kind)
}

func metadata(s demo.Subscription) map[string]any {
	m := map[string]any{demo.MetadataSubject: s.Subject}
	if s.Tier != "" {
		m[demo.MetadataTier] = s.Tier
	}
	return m
}

// session renders s's completed Checkout Session.
func (sh shape) session(s demo.Subscription, now time.Time) map[string]any {
	o := clone(sh.fixCS)
	o["id"], o["mode"], o["status"] = fmt.Sprintf("cs_test_%s_%d", s.ID, now.Unix()), "subscription", "complete"
	o["client_reference_id"], o["customer"], o["subscription"] = s.Subject, s.Customer, s.ID
	o["metadata"] = metadata(s)
	patch(o, map[string]any{"payment_status": "paid", "created": now.Unix(), "livemode": false})
	return o
}

// subscription renders s at now; canceled when its status is.
func (sh shape) subscription(s demo.Subscription, now time.Time) map[string]any {
	o := clone(sh.fixSub)
	o["id"], o["customer"], o["status"], o["metadata"] = s.ID, s.Customer, string(s.Status), metadata(s)
	start, end := s.PeriodStart.Unix(), s.PeriodEnd.Unix()
	patch(o, map[string]any{
		"current_period_start": start, "current_period_end": end, // until acacia
		"created": start, "start_date": start, "billing_cycle_anchor": start, "livemode": false,
		"cancel_at_period_end": false, "cancel_at": nil, "canceled_at": nil, "ended_at": nil,
		"trial_start": nil, "trial_end": nil, "pause_collection": nil, "latest_invoice": nil,
	})
	if s.Status == stripe.SubscriptionStatusCanceled {
		patch(o, map[string]any{"canceled_at": now.Unix(), "ended_at": now.Unix()})
	}
	base := firstOf(o, "items")
	item := func(kind, price, usage string) map[string]any {
		it := clone(base)
		it["id"], it["subscription"] = s.ItemID(kind), s.ID
		p, _ := it["price"].(map[string]any)
		if p == nil {
			p = map[string]any{"object": "price"}
		}
		p["id"] = price
		if r, ok := p["recurring"].(map[string]any); ok {
			r["usage_type"] = usage
		}
		it["price"] = p
		if pl, ok := it["plan"].(map[string]any); ok {
			pl["id"], pl["usage_type"] = price, usage
		}
		patch(it, map[string]any{"current_period_start": start, "current_period_end": end}) // basil on
		return it
	}
	items := []any{item("base", s.PriceID, "licensed")}
	if s.MeteredPriceID != "" {
		items = append(items, item("metered", s.MeteredPriceID, "metered"))
	}
	l := o["items"].(map[string]any)
	l["data"] = items
	patch(l, map[string]any{"has_more": false, "url": "/v1/subscription_items?subscription=" + s.ID})
	return o
}

// invoice renders the subscription's invoice of its current period, in
// status ("draft", "open" after a failed payment, or "paid").
func (sh shape) invoice(s demo.Subscription, now time.Time, status string) map[string]any {
	o := clone(sh.fixInv)
	id := "in_" + s.ID + "_" + s.PeriodStart.UTC().Format("20060102")
	o["id"], o["customer"], o["status"] = id, s.Customer, status
	patch(o, map[string]any{
		"billing_reason": "subscription_cycle", "created": now.Unix(), "livemode": false,
		"period_start": s.PeriodStart.Unix(), "period_end": s.PeriodEnd.Unix(),
		"paid": status == "paid", // until acacia
	})
	transitions, _ := o["status_transitions"].(map[string]any)
	if transitions != nil {
		transitions["finalized_at"], transitions["paid_at"] = nil, nil
		if status != "draft" {
			transitions["finalized_at"] = now.Unix()
		}
		if status == "paid" {
			transitions["paid_at"] = now.Unix()
		}
		o["status_transitions"] = transitions
	}
	basil := has(o, "parent")
	if basil {
		// basil on: the subscription under parent.
		o["parent"] = map[string]any{"type": "subscription_details", "quote_details": nil,
			"subscription_details": map[string]any{"subscription": s.ID, "metadata": metadata(s)}}
	} else {
		o["subscription"] = s.ID
		patch(o, map[string]any{"subscription_details": map[string]any{"metadata": metadata(s)}})
	}
	base := firstOf(o, "lines")
	line := func(kind, price, usage string) map[string]any {
		li := clone(base)
		li["id"] = "il_" + id[3:] + "_" + kind
		li["period"] = map[string]any{"start": s.PeriodStart.Unix(), "end": s.PeriodEnd.Unix()}
		patch(li, map[string]any{"invoice": id, "type": "subscription", "invoice_item": nil, "proration": false})
		if basil {
			// The line's price under pricing, its subscription item
			// under parent.
			li["pricing"] = map[string]any{"type": "price_details", "unit_amount_decimal": nil,
				"price_details": map[string]any{"price": price, "product": "prod_demo"}}
			if p, ok := li["parent"].(map[string]any); ok {
				d, _ := p["subscription_item_details"].(map[string]any)
				if d == nil {
					d = map[string]any{}
				}
				d["subscription"], d["subscription_item"], d["invoice_item"], d["proration"] = s.ID, s.ItemID(kind), nil, false
				p["type"], p["invoice_item_details"], p["subscription_item_details"] = "subscription_item_details", nil, d
			}
			return li
		}
		p, _ := li["price"].(map[string]any)
		if p == nil {
			p = map[string]any{"object": "price"}
		}
		p["id"], p["type"] = price, "recurring"
		if has(p, "recurring") {
			p["recurring"] = map[string]any{"interval": "month", "interval_count": 1, "usage_type": usage}
		}
		li["price"] = p
		patch(li, map[string]any{"subscription": s.ID, "subscription_item": s.ItemID(kind)})
		return li
	}
	lines := []any{line("base", s.PriceID, "licensed")}
	if s.MeteredPriceID != "" {
		lines = append(lines, line("metered", s.MeteredPriceID, "metered"))
	}
	l := o["lines"].(map[string]any)
	l["data"] = lines
	patch(l, map[string]any{"has_more": false, "url": "/v1/invoices/" + id + "/lines"})
	return o
}

// patch sets the keys of kv that o has; those it lacks stay absent.
func patch(o map[string]any, kv map[string]any) {
	for k, v := range kv {
		if has(o, k) {
			o[k] = v
		}
	}
}

func has(o map[string]any, key string) bool { _, ok := o[key]; return ok }

// firstOf returns a copy of the first element of the fixture list
// o[key].data.
func firstOf(o map[string]any, key string) map[string]any {
	l, _ := o[key].(map[string]any)
	d, _ := l["data"].([]any)
	if len(d) == 0 {
		panic("fixture has no " + key)
	}
	return clone(d[0].(map[string]any))
}

// clone deep-copies a JSON value.
func clone[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}
